"""Arrow columns as the Python values the engine sees (archive tables back to event fields)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pyarrow as pa

from streamfs.durations import ms_to_datetime, us_to_datetime


def python_values(column: pa.ChunkedArray) -> list[Any]:
    """Column values as Python objects; timestamps as aware UTC datetimes (datetime.UTC): ms for
    event and arrival times, µs for datetime fields."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        ticks = column.cast(pa.int64()).to_pylist()
        if kind.unit == "ms":
            return [None if ms is None else ms_to_datetime(ms) for ms in ticks]
        if kind.unit == "us":
            return [None if us is None else us_to_datetime(us) for us in ticks]
        return [None if value is None else value.astimezone(UTC) for value in column.to_pylist()]
    return list(column.to_pylist())
