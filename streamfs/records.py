"""The values that travel along the data path.

Positions travel *with* records (no hidden context), so every sink and every rejection knows
exactly which Kafka offset it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record came from: topic, partition and offset."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class SourceEvent:
    """An event that decoded and validated against its source schema.

    `fields` holds the validated values (timestamps as aware datetimes or ints, as the schema
    says); `event_time` and `arrival_time` are epoch milliseconds (UTC).
    """

    fields: dict[str, Any]
    event_time: int
    arrival_time: int
    position: Position | None = None
    raw: bytes | None = None


# Reasons an event is rejected; each has its own counter and dead-letter header value.
UNDECODABLE = "undecodable"
SCHEMA_VIOLATION = "schema_violation"
MISSING_KEY = "missing_key"
MISSING_TIMESTAMP = "missing_timestamp"
NAIVE_TIMESTAMP = "naive_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
OVERSIZED = "oversized"
TRANSFORM_FAILED = "transform_failed"
BAD_VALUE = "bad_value"
TOO_LATE = "too_late"
REJECTION_REASONS = (
    UNDECODABLE,
    SCHEMA_VIOLATION,
    MISSING_KEY,
    MISSING_TIMESTAMP,
    NAIVE_TIMESTAMP,
    FUTURE_TIMESTAMP,
    OVERSIZED,
    TRANSFORM_FAILED,
    BAD_VALUE,
    TOO_LATE,
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that could not be used, with why. Rejections are data: they go to the dead-letter sink."""

    reason: str
    detail: str
    position: Position | None = None
    raw: bytes | None = None
    view: str | None = None
    """The feature view that rejected it (None when it failed before reaching any view)."""
    arrival_time: int | None = None


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One offline row: a view's feature values for `key` right after the event at `event_time`."""

    view: str
    key: tuple[Any, ...]
    event_time: int
    arrival_time: int
    position: Position | None
    values: tuple[Any, ...]
