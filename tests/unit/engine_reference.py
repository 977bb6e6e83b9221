"""A brute-force reference for docs/semantics.md: it keeps every accepted event and recomputes
each feature from the raw list every time it is asked. Slow on purpose; obviously right."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from pydantic import BaseModel

from streamfs.definitions import Aggregate, FeatureView
from streamfs.records import SourceEvent


class Ev(BaseModel):
    """The schema of the random test streams (engine, kernel and training property tests)."""

    k: str
    x: float | None = None
    n: int | None = None
    s: str | None = None
    ts: int


@dataclass
class _Accepted:
    time: int
    seq: int
    fields: dict[str, Any]


@dataclass
class _Key:
    events: list[_Accepted] = field(default_factory=list)
    max_time: int | None = None


def window_start(t: int, length: int, hop: int) -> int:
    return (t // hop) * hop + hop - length


def aggregate(feature: Aggregate, events: list[_Accepted], t: int) -> Any:
    if feature.window is None:
        chosen = [e for e in events if e.time <= t]
    else:
        assert feature.hop is not None
        start = window_start(t, feature.window, feature.hop)
        chosen = [e for e in events if start <= e.time <= t]
    if feature.field is None:
        return len(chosen)
    with_value = [e for e in chosen if e.fields.get(feature.field) is not None]
    values = [e.fields[feature.field] for e in with_value]
    function = feature.function
    if function == "count":
        return len(values)
    if function == "count_distinct":
        return len(set(values))
    if function == "sum":
        if all(type(v) is int for v in values):
            return sum(values)
        return float(sum((Fraction(v) for v in values), Fraction(0)))
    if not values:
        return None
    if function == "mean":
        return float(sum((Fraction(v) for v in values), Fraction(0)) / len(values))
    if function == "min":
        return min(values)
    if function == "max":
        return max(values)
    if function == "last":
        return max(with_value, key=lambda e: (e.time, e.seq)).fields[feature.field]
    if function == "first":
        return min(with_value, key=lambda e: (e.time, e.seq)).fields[feature.field]
    if function in ("variance", "stddev", "variance_pop", "stddev_pop"):
        n = len(values)
        sample = not function.endswith("_pop")
        if n - (1 if sample else 0) <= 0:
            return None
        exact = [Fraction(v) for v in values]
        mean = sum(exact, Fraction(0)) / n
        squares = sum(((x - mean) ** 2 for x in exact), Fraction(0))
        variance = float(squares / (n - 1 if sample else n))
        return math.sqrt(variance) if function.startswith("stddev") else variance
    raise AssertionError(function)


class ReferenceView:
    """Section 2 of docs/semantics.md, literally."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self.lateness = view.source.allowed_lateness
        self.keys: dict[tuple[Any, ...], _Key] = {}

    def process(self, events: list[SourceEvent]) -> tuple[list[tuple[Any, ...]], list[str]]:
        rows: list[tuple[Any, ...]] = []
        rejected: list[str] = []
        for event in events:
            fields = event.fields
            if self.view.transform is not None:
                try:
                    out = self.view.transform(dict(fields))
                except Exception:
                    rejected.append("transform_failed")
                    continue
                if out is None:
                    continue
                fields = out
            key = tuple(fields.get(k) for k in self.view.entity.join_keys)
            if None in key:
                rejected.append("missing_key")
                continue
            state = self.keys.setdefault(key, _Key())
            if state.max_time is not None and event.event_time < state.max_time - self.lateness:
                rejected.append("too_late")
                continue
            state.events.append(_Accepted(event.event_time, len(state.events) + 1, fields))
            state.max_time = (
                event.event_time if state.max_time is None else max(state.max_time, event.event_time)
            )
            rows.append((key, event.event_time, self.evaluate_tuple(key, event.event_time)))
        return rows, rejected

    def evaluate_tuple(self, key: tuple[Any, ...], t: int) -> tuple[Any, ...]:
        events = self.keys[key].events
        return tuple(aggregate(feature, events, t) for feature in self.view.features)

    def evaluate(self, key: tuple[Any, ...], t: int) -> dict[str, Any] | None:
        state = self.keys.get(key)
        if state is None or state.max_time is None:
            return None
        if self.view.ttl is not None and t - state.max_time > self.view.ttl:
            return None
        return dict(zip(self.view.feature_names, self.evaluate_tuple(key, t), strict=True))

    def evaluate_tuple_dict(self, key: tuple[Any, ...], t: int) -> dict[str, Any]:
        """Evaluation without TTL (what the serving steps hold; TTL is applied by the reader)."""
        return dict(zip(self.view.feature_names, self.evaluate_tuple(key, t), strict=True))
