"""Durations as users write them ("10m", "1h", "7d", timedelta) turned into whole milliseconds.

Everything inside streamfs measures time in integer milliseconds since the Unix epoch (UTC),
so window arithmetic is exact integer arithmetic.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")

Duration = str | timedelta | int
"""A duration: "30s", "10m", "1h", "7d", "2w", a timedelta, or an int of milliseconds."""


def to_ms(value: Duration) -> int:
    """Parse a duration into whole milliseconds; raise ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"duration must be like '10m', '1h', '7d' or a timedelta, got {value!r}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, timedelta):
        ms = value // timedelta(milliseconds=1)
        if timedelta(milliseconds=ms) != value:
            raise ValueError(f"duration {value!r} is not a whole number of milliseconds")
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(
                f"duration {value!r} is not understood; use a number and a unit "
                "(ms, s, m, h, d, w) such as '10m', '1h', '7d', or a timedelta"
            )
        ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    else:
        raise ValueError(f"duration must be like '10m', '1h', '7d' or a timedelta, got {value!r}")
    if ms < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return ms


def label(ms: int) -> str:
    """The shortest exact label for a duration: 3_600_000 -> '1h', 90_000 -> '90s'."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def datetime_to_ms(value: datetime) -> int:
    """An aware datetime to epoch milliseconds (truncating sub-millisecond parts); naive is an error."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} has no time zone; streamfs needs aware UTC times"
        )
    delta = value - _EPOCH
    return delta // timedelta(milliseconds=1)


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def us_to_datetime(us: int) -> datetime:
    """Epoch microseconds to an aware UTC datetime (how the offline store keeps datetime fields)."""
    return _EPOCH + timedelta(microseconds=us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
