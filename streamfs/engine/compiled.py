"""A FeatureView compiled into the flat tables the engine loops over, and its per-event checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from streamfs.aggregations import GroupAggregator, exact_scaled
from streamfs.definitions import NUMERIC_AGGREGATIONS, ORDERED_AGGREGATIONS, FeatureView
from streamfs.windows import WindowSpec


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature as the engine runs it."""

    index: int  # position in the view's feature list (and in offline rows)
    name: str
    function: str
    slot: int  # index into the event's input values; -1 means "count events"


@dataclass(frozen=True, slots=True)
class WindowGroup:
    """The features sharing one window; they share tiles."""

    window: WindowSpec
    tiled: tuple[Feature, ...]
    distinct: tuple[Feature, ...]
    aggregator: GroupAggregator | None  # the tiled features' fused partial; None if none
    running: bool  # keeps a running window (windows of 3+ tiles; see GroupState)
    hop: int  # window.hop, 0 for lifetime (tile(t) = t // hop, or 0)
    span: int  # window.tiles - 1: first_tile(t) = tile(t) - span


@dataclass(frozen=True, slots=True)
class CompiledView:
    """A FeatureView turned into the flat tables the engine loops over."""

    view: FeatureView
    key_fields: tuple[str, ...]
    input_fields: tuple[str, ...]
    groups: tuple[WindowGroup, ...]
    lateness: int
    numeric_slots: tuple[int, ...]
    ordered_slots: tuple[int, ...]
    hashed_slots: tuple[int, ...]
    typed_slots: tuple[tuple[int, tuple[type, ...]], ...] = ()
    """Inputs whose type is known and must be checked: (slot, the exact value types it takes).
    min/max inputs always; with a transform, every input (numeric ones are checked apart)."""
    time_slots: tuple[int, ...] = ()
    """Inputs that may hold datetimes (schema type datetime, or not in the schema)."""
    stat_slots: tuple[int, ...] = ()
    """Inputs some group sums exactly: made exact once per settled event (exact_scaled)."""
    order: Callable[[list[Any]], tuple[Any, ...]] = field(default=tuple)
    """Turns the groups' values laid end to end (tiled, then distinct, per group) into view order."""

    @classmethod
    def build(cls, view: FeatureView) -> CompiledView:
        inputs: list[str] = []
        for aggregate in view.features:
            if aggregate.field is not None and aggregate.field not in inputs:
                inputs.append(aggregate.field)
        windows: dict[WindowSpec, tuple[list[Feature], list[Feature]]] = {}
        numeric: set[int] = set()
        ordered: set[int] = set()
        hashed: set[int] = set()
        integers = {slot for slot, name in enumerate(inputs) if view.field_type(name) is int}
        for index, aggregate in enumerate(view.features):
            slot = -1 if aggregate.field is None else inputs.index(aggregate.field)
            spec = WindowSpec(aggregate.window, aggregate.hop)
            tiled, distinct = windows.setdefault(spec, ([], []))
            if aggregate.function == "count_distinct":
                distinct.append(Feature(index, aggregate.name, aggregate.function, slot))
                hashed.add(slot)
                continue
            tiled.append(Feature(index, aggregate.name, aggregate.function, slot))
            if aggregate.function in NUMERIC_AGGREGATIONS:
                numeric.add(slot)
            elif aggregate.function in ORDERED_AGGREGATIONS:
                ordered.add(slot)
        groups = tuple(
            WindowGroup(
                spec,
                tuple(tiled),
                tuple(distinct),
                GroupAggregator([(f.function, f.slot, f.slot in integers) for f in tiled]) if tiled else None,
                spec.tiles > 2,
                spec.hop or 0,
                spec.tiles - 1,
            )
            for spec, (tiled, distinct) in windows.items()
        )
        typed: list[tuple[int, tuple[type, ...]]] = []
        # Schema fields are validated by pydantic; what a transform returns is checked here, so a
        # value the sinks cannot hold (a numpy scalar, a UUID) rejects its event, not the batch.
        checked = range(len(inputs)) if view.transform is not None else sorted(ordered - numeric)
        for slot in checked:
            base = view.field_type(inputs[slot])
            if base is not None and slot not in numeric:
                typed.append((slot, _ACCEPTED.get(base, (base,))))
        times = [slot for slot, name in enumerate(inputs) if view.field_type(name) in (datetime, None)]
        return cls(
            order=_view_order(view, groups),
            view=view,
            key_fields=view.entity.join_keys,
            input_fields=tuple(inputs),
            groups=groups,
            lateness=view.source.allowed_lateness,
            numeric_slots=tuple(sorted(numeric)),
            ordered_slots=tuple(sorted(ordered - numeric)),
            hashed_slots=tuple(sorted(hashed)),
            typed_slots=tuple(typed),
            time_slots=tuple(times),
            stat_slots=tuple(
                sorted({slot for g in groups if g.aggregator for slot in g.aggregator.stat_slots})
            ),
        )

    def bad_value(self, values: tuple[Any, ...]) -> str | None:
        compiled = self
        for slot in compiled.numeric_slots:
            value = values[slot]
            if value is None:
                continue
            if type(value) is float:
                if not math.isfinite(value):
                    return f"field {compiled.input_fields[slot]!r} is {value}, not a finite number"
            elif type(value) is not int:
                return f"field {compiled.input_fields[slot]!r} must be a number, got {type(value).__name__}"
        for slot in compiled.time_slots:
            value = values[slot]
            if isinstance(value, datetime) and value.tzinfo is None:
                return f"field {compiled.input_fields[slot]!r} is a datetime without a time zone ({value})"
        for slot in compiled.ordered_slots:
            value = values[slot]
            if type(value) is float and math.isnan(value):
                return f"field {compiled.input_fields[slot]!r} is NaN, which has no order"
        for slot, types in compiled.typed_slots:
            value = values[slot]
            if value is not None and type(value) not in types:
                expected = " or ".join(t.__name__ for t in types)
                return f"field {compiled.input_fields[slot]!r} must be {expected}, got {type(value).__name__}"
        for slot in compiled.hashed_slots:
            value = values[slot]
            try:
                hash(value)
            except TypeError:
                kind = type(value).__name__
                return f"field {compiled.input_fields[slot]!r} value of type {kind} is not hashable"
            if type(value) is float and math.isnan(value):
                return f"field {compiled.input_fields[slot]!r} is NaN, which equals nothing"
        return None

    def exacts(self, values: tuple[Any, ...]) -> list[Any]:
        exacts: list[Any] = [None] * len(values)
        for slot in self.stat_slots:
            value = values[slot]
            if value is not None:
                exacts[slot] = exact_scaled(value)
        return exacts

    @property
    def group_features(self) -> list[list[str]]:
        """Feature names of each window group, in the order group values hold them."""
        return [[f.name for f in (*g.tiled, *g.distinct)] for g in self.groups]


_ACCEPTED: dict[type, tuple[type, ...]] = {float: (float, int), int: (int,), datetime: (datetime,)}
"""The exact value types a field of each type takes (an int is a fine float; a bool is no int)."""


def _view_order(view: FeatureView, groups: tuple[WindowGroup, ...]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """The function putting group values (group by group, tiled then distinct) in view order."""
    position: dict[int, int] = {}
    offset = 0
    for group in groups:
        for feature in (*group.tiled, *group.distinct):
            position[feature.index] = offset
            offset += 1
    flat = [position[index] for index in range(len(view.features))]
    if flat == list(range(len(flat))):
        return tuple
    if len(flat) == 1:
        return lambda values: (values[flat[0]],)
    return itemgetter(*flat)
