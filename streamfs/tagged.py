"""Values JSON cannot carry exactly, written as ``{"~": type, "v": text}`` and read back.

Feature values and engine state hold datetimes, dates, bytes and Decimals when a view aggregates such
fields (min, max, first, last, count_distinct, or any feature's buffered input), and integers
beyond 64 bits or non-finite floats that some JSON encoders refuse. The Redis entries
(streamfs.online.layout) and the engine's snapshots in checkpoints and backfill state
(streamfs.engine.snapshot) both write them in this one tagged form.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

TAG = "~"


def freeze(value: Any) -> dict[str, str]:
    """`value` as {"~": type, "v": text}; TypeError naming the type if streamfs cannot store it."""
    if isinstance(value, int):
        return {TAG: "int", "v": str(value)}
    if isinstance(value, float):
        return {TAG: "float", "v": repr(value)}
    if isinstance(value, datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, bytes):
        return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    raise TypeError(
        f"streamfs cannot store a feature value of type {type(value).__name__} ({value!r}); "
        "use str, int, float, bool, bytes, datetime, date or Decimal fields"
    )


THAW: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "decimal": Decimal,
    "bytes": base64.b64decode,
}


def thaw(obj: dict[str, Any]) -> Any:
    """A json `object_hook`: tagged objects back to their values, every other object unchanged."""
    if len(obj) == 2 and TAG in obj and "v" in obj:
        return THAW[obj[TAG]](obj["v"])
    return obj
