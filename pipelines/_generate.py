"""The mechanics the example pipelines share to make realistic, reproducible event streams.

Real streams are not uniform: a few keys are very popular (Zipf), activity comes in bursts
(one card tried at many merchants in a minute, one user clicking through a catalogue), and some
events arrive out of order. Each pipeline module describes *what* its events look like; this
module supplies *when* and *for whom*, all driven by one seeded ``random.Random`` so the same
seed always yields the same stream.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from streamfs.durations import datetime_to_ms, ms_to_datetime


class ZipfKeys:
    """Draws key indexes 0..n-1 with probability proportional to 1 / (rank + 1) ** exponent."""

    def __init__(self, n: int, *, exponent: float = 1.1) -> None:
        if n < 1:
            raise ValueError(f"need at least one key, got {n}")
        weights = [1.0 / (rank + 1) ** exponent for rank in range(n)]
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]

    @property
    def size(self) -> int:
        return len(self._cumulative)

    def draw(self, rng: random.Random) -> int:
        index = bisect.bisect_left(self._cumulative, rng.random() * self._total)
        return min(index, len(self._cumulative) - 1)


@dataclass(frozen=True, slots=True)
class Tick:
    """One event to generate: its event time (epoch ms), whose it is, and whether it is in a burst."""

    time_ms: int
    key: int
    in_burst: bool


def ticks(
    n: int,
    *,
    keys: int,
    start: datetime,
    rng: random.Random,
    events_per_second: float = 50.0,
    key_exponent: float = 1.0,
    burst_probability: float = 0.01,
    burst_length: tuple[int, int] = (5, 20),
    burst_gap_ms: tuple[int, int] = (200, 5_000),
) -> Iterator[Tick]:
    """Event times and keys: Poisson arrivals over Zipf-popular keys, with bursts of one key.

    Key popularity follows :class:`ZipfKeys` with ``key_exponent`` (0 is uniform).
    With ``burst_probability`` an event starts a burst: the same key fires ``burst_length``
    times, ``burst_gap_ms`` apart, while the background stream keeps its pace.
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if events_per_second <= 0:
        raise ValueError(f"events_per_second must be positive, got {events_per_second}")
    now = datetime_to_ms(start)  # raises on a naive start: generated times are UTC
    popularity = ZipfKeys(keys, exponent=key_exponent)
    burst_key, burst_left, burst_next = 0, 0, 0
    background = now + _gap(rng, events_per_second)
    for _ in range(n):
        if burst_left and burst_next <= background:
            now, burst_left = burst_next, burst_left - 1
            burst_next += rng.randint(*burst_gap_ms)
            yield Tick(now, burst_key, True)
            continue
        now = background
        background += _gap(rng, events_per_second)
        key = popularity.draw(rng)
        if not burst_left and rng.random() < burst_probability:
            burst_key, burst_left, burst_next = (
                key,
                rng.randint(*burst_length),
                now + rng.randint(*burst_gap_ms),
            )
        yield Tick(now, key, False)


def _gap(rng: random.Random, events_per_second: float) -> int:
    return max(1, round(rng.expovariate(events_per_second) * 1000))


def displace_late(
    stream: Iterable[Tick], *, rng: random.Random, late_fraction: float, max_lateness_ms: int
) -> Iterator[Tick]:
    """Move ``late_fraction`` of events back in time by up to ``max_lateness_ms`` (out of order).

    An event moved back by d lags every earlier event of its key by at most d, so with
    d < ``max_lateness_ms`` the stream stays within the source's allowed lateness.
    """
    if not 0.0 <= late_fraction <= 1.0:
        raise ValueError(f"late_fraction must be between 0 and 1, got {late_fraction}")
    if late_fraction and max_lateness_ms < 2:
        raise ValueError("late events need a source allowed_lateness of at least 2 ms")
    for tick in stream:
        if late_fraction and rng.random() < late_fraction:
            tick = Tick(tick.time_ms - rng.randint(1, max_lateness_ms - 1), tick.key, tick.in_burst)
        yield tick


def iso(ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with milliseconds: '2024-05-01T12:00:00.000+00:00'."""
    return ms_to_datetime(ms).isoformat(timespec="milliseconds")


def to_bytes(events: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """JSON-encode generated events the way a producer would put them on Kafka."""
    for event in events:
        yield orjson.dumps(event)
