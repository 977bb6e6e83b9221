"""The aggregation engine: validated events in, per-key window state and offline rows out. No I/O.

Per entity key the engine keeps, for each distinct window of a view, H-aligned *tiles* of
partial aggregates, and a small *buffer* of raw events that may still be needed exactly:

* The key's watermark is w = (greatest accepted event time) - allowed lateness. Any event that
  arrives later and is accepted has event time ≥ w, so every future evaluation is at some t ≥ w.
* Events older than w are *settled* into their tile: every window evaluated at t ≥ w contains
  either the whole tile or none of it, so tile partials are all that is needed.
* Events at or after w stay in the buffer (with lateness 0, just the events sharing the newest
  timestamp) so the window ending at an out-of-order event's own time can exclude the events
  that came after it in event time.
* Tiles older than the oldest tile any window at w can reach are dropped.

Evaluating a window at t merges the tiles in [start(t), t] with the buffered events in that
range. Partials are exact (see aggregations.py), so the result does not depend on the order of
merges, on micro-batch boundaries, on snapshots or on restarts: only on the events of the key
and their arrival order. The engine's state is grouped by source partition so the worker can
snapshot, restore or drop the state of one partition when Kafka moves it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streamfs.aggregations import Monoid, empty_result, monoid_for
from streamfs.definitions import NUMERIC_AGGREGATIONS, ORDERED_AGGREGATIONS, FeatureView
from streamfs.errors import StateError
from streamfs.records import (
    BAD_VALUE,
    MISSING_KEY,
    TOO_LATE,
    TRANSFORM_FAILED,
    FeatureRow,
    Rejected,
    SourceEvent,
)
from streamfs.windows import WindowSpec

SNAPSHOT_FORMAT = 1
Key = tuple[Any, ...]
BufferedEvent = tuple[int, int, tuple[Any, ...]]
"""(event time, per-key arrival sequence, the view's input values)."""


# --------------------------------------------------------------------------- compiled view


@dataclass(frozen=True, slots=True)
class _Feature:
    """One feature as the engine runs it."""

    index: int  # position in the view's feature list (and in offline rows)
    name: str
    function: str
    slot: int  # index into the event's input values; -1 means "count events"
    monoid: Monoid | None  # None for count_distinct


@dataclass(frozen=True, slots=True)
class _Group:
    """The features sharing one window; they share tiles."""

    window: WindowSpec
    tiled: tuple[_Feature, ...]
    distinct: tuple[_Feature, ...]


@dataclass(frozen=True, slots=True)
class CompiledView:
    """A FeatureView turned into the flat tables the engine loops over."""

    view: FeatureView
    key_fields: tuple[str, ...]
    input_fields: tuple[str, ...]
    groups: tuple[_Group, ...]
    lateness: int
    numeric_slots: tuple[int, ...]
    ordered_slots: tuple[int, ...]
    hashed_slots: tuple[int, ...]
    typed_slots: tuple[tuple[int, tuple[type, ...]], ...] = ()
    """min/max inputs whose schema type is known: (slot, the types that compare with it)."""
    time_slots: tuple[int, ...] = ()
    """Inputs that may hold datetimes (schema type datetime, or not in the schema)."""

    @classmethod
    def build(cls, view: FeatureView) -> CompiledView:
        inputs: list[str] = []
        for aggregate in view.features:
            if aggregate.field is not None and aggregate.field not in inputs:
                inputs.append(aggregate.field)
        windows: dict[WindowSpec, tuple[list[_Feature], list[_Feature]]] = {}
        numeric: set[int] = set()
        ordered: set[int] = set()
        hashed: set[int] = set()
        for index, aggregate in enumerate(view.features):
            slot = -1 if aggregate.field is None else inputs.index(aggregate.field)
            spec = WindowSpec(aggregate.window, aggregate.hop)
            tiled, distinct = windows.setdefault(spec, ([], []))
            if aggregate.function == "count_distinct":
                distinct.append(_Feature(index, aggregate.name, aggregate.function, slot, None))
                hashed.add(slot)
                continue
            integer = aggregate.field is not None and view.source.field_type(aggregate.field) is int
            monoid = monoid_for(aggregate.function, integer=integer)
            tiled.append(_Feature(index, aggregate.name, aggregate.function, slot, monoid))
            if aggregate.function in NUMERIC_AGGREGATIONS:
                numeric.add(slot)
            elif aggregate.function in ORDERED_AGGREGATIONS:
                ordered.add(slot)
        groups = tuple(
            _Group(spec, tuple(tiled), tuple(distinct)) for spec, (tiled, distinct) in windows.items()
        )
        typed: list[tuple[int, tuple[type, ...]]] = []
        for slot in sorted(ordered - numeric):
            base = view.source.field_type(inputs[slot])
            if base is not None:
                typed.append((slot, (int, float) if base in (int, float) else (base,)))
        times = [
            slot for slot, name in enumerate(inputs) if view.source.field_type(name) in (datetime, None)
        ]
        return cls(
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
        )


# --------------------------------------------------------------------------- per-key state


class _DistinctWindow:
    """Exact count_distinct for one key and window: each value's latest settled time.

    A value lies in the window at t (t ≥ watermark) iff its latest settled time ≥ start(t), so
    the count is the number of values whose latest time falls in the window's tiles, plus the
    buffered values not already counted. `per_tile` counts values by the tile of their latest time.
    """

    __slots__ = ("latest", "per_tile")

    def __init__(self) -> None:
        self.latest: dict[Any, int] = {}
        self.per_tile: dict[int, int] = {}

    def settle(self, value: Any, time: int, window: WindowSpec) -> tuple[int, int] | None:
        """Record a settled value; return the (old, new) tiles whose counts changed, if any."""
        previous = self.latest.get(value)
        if previous is not None and previous >= time:
            return None
        self.latest[value] = time
        new_tile = window.tile(time)
        self.per_tile[new_tile] = self.per_tile.get(new_tile, 0) + 1
        if previous is None:
            return (new_tile, new_tile)
        old_tile = window.tile(previous)
        remaining = self.per_tile[old_tile] - 1
        if remaining:
            self.per_tile[old_tile] = remaining
        else:
            del self.per_tile[old_tile]
        return (old_tile, new_tile)

    def expire(self, first_tile: int, window: WindowSpec) -> None:
        if not self.per_tile or min(self.per_tile) >= first_tile:
            return
        self.per_tile = {tile: n for tile, n in self.per_tile.items() if tile >= first_tile}
        self.latest = {v: t for v, t in self.latest.items() if window.tile(t) >= first_tile}


class _GroupState:
    """Tiles and caches of one key for one window group."""

    __slots__ = ("cache", "cache_hi", "cache_lo", "distinct", "tiles")

    def __init__(self, group: _Group) -> None:
        self.tiles: dict[int, list[Any]] = {}
        self.distinct = [_DistinctWindow() for _ in group.distinct]
        # Merged partials (and distinct counts) of the *closed* tiles [cache_lo, cache_hi).
        self.cache: tuple[list[Any], list[int]] | None = None
        self.cache_lo = 0
        self.cache_hi = 0


class _KeyState:
    __slots__ = ("buffer", "groups", "max_time", "seq")

    def __init__(self, groups: Sequence[_Group]) -> None:
        self.max_time: int | None = None
        self.seq = 0
        self.buffer: list[BufferedEvent] = []
        self.groups = [_GroupState(group) for group in groups]


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class ProcessResult:
    """What one micro-batch produced for one view."""

    rows: list[FeatureRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    filtered: int = 0


@dataclass(frozen=True, slots=True)
class GroupSteps:
    """The values of one window group from the key's newest event onwards, as a step function.

    For starts[i] ≤ t < starts[i+1] the group's features read values[i]; from the last start
    on they read `empty` (the window has moved past every event).
    """

    starts: tuple[int, ...]
    values: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True, slots=True)
class ServingState:
    """Everything the online store needs to answer reads at any t ≥ max_time exactly."""

    key: Key
    max_time: int
    events: int
    groups: tuple[GroupSteps, ...]


# --------------------------------------------------------------------------- the engine


class ViewEngine:
    """Runs one FeatureView: per-key tiles, offline rows, exact evaluation, snapshots."""

    def __init__(self, view: FeatureView) -> None:
        self.compiled = CompiledView.build(view)
        self.view = view
        self.name = view.name
        self.ttl = view.ttl
        # partition -> key -> state; keys never move between partitions on their own.
        self._partitions: dict[int, dict[Key, _KeyState]] = {}
        self._dirty: dict[int, set[Key]] = {}
        self._feature_order = [
            (group_index, position, is_distinct)
            for group_index, position, is_distinct in self._layout()
        ]

    def _layout(self) -> list[tuple[int, int, bool]]:
        """For each feature in view order: (group index, position in group row, is count_distinct)."""
        layout: dict[int, tuple[int, int, bool]] = {}
        for group_index, group in enumerate(self.compiled.groups):
            for position, feature in enumerate(group.tiled):
                layout[feature.index] = (group_index, position, False)
            for position, feature in enumerate(group.distinct):
                layout[feature.index] = (group_index, len(group.tiled) + position, True)
        return [layout[index] for index in range(len(self.view.features))]

    @property
    def feature_names(self) -> list[str]:
        return self.view.feature_names

    @property
    def group_features(self) -> list[list[str]]:
        """Feature names of each window group, in the order GroupSteps.values holds them."""
        return [[f.name for f in (*g.tiled, *g.distinct)] for g in self.compiled.groups]

    # ---------------------------------------------------------------- ingest

    def process(self, events: Iterable[SourceEvent]) -> ProcessResult:
        """Aggregate a micro-batch in order; one offline row per accepted event."""
        result = ProcessResult()
        compiled = self.compiled
        transform = self.view.transform
        key_fields = compiled.key_fields
        inputs = compiled.input_fields
        lateness = compiled.lateness
        groups = compiled.groups
        for event in events:
            fields = event.fields
            if transform is not None:
                try:
                    transformed = transform(dict(fields))
                except Exception as exc:
                    detail = f"{type(exc).__name__}: {exc}"
                    result.rejected.append(self._reject(event, TRANSFORM_FAILED, detail))
                    continue
                if transformed is None:
                    result.filtered += 1
                    continue
                fields = transformed
            key = tuple([fields.get(name) for name in key_fields])
            if None in key:
                missing = [name for name, value in zip(key_fields, key, strict=True) if value is None]
                detail = f"entity key field(s) {missing} missing"
                result.rejected.append(self._reject(event, MISSING_KEY, detail))
                continue
            values = tuple([fields.get(name) for name in inputs])
            problem = self._bad_value(values)
            if problem is not None:
                result.rejected.append(self._reject(event, BAD_VALUE, problem))
                continue
            partition = event.position.partition if event.position is not None else 0
            states = self._partitions.get(partition)
            if states is None:
                states = self._partitions[partition] = {}
                self._dirty[partition] = set()
            state = states.get(key)
            if state is None:
                state = states[key] = _KeyState(groups)
            time = event.event_time
            if state.max_time is not None and time < state.max_time - lateness:
                result.rejected.append(
                    self._reject(
                        event,
                        TOO_LATE,
                        f"event time {time} is more than the allowed lateness {lateness} ms behind "
                        f"the newest accepted event {state.max_time} of key {key!r}",
                    )
                )
                continue
            self._accept(state, time, values)
            self._dirty[partition].add(key)
            result.rows.append(
                FeatureRow(
                    self.name, key, time, event.arrival_time, event.position, self._evaluate(state, time)
                )
            )
        return result

    def _reject(self, event: SourceEvent, reason: str, detail: str) -> Rejected:
        return Rejected(reason, detail, event.position, event.raw, self.name, event.arrival_time)

    def _bad_value(self, values: tuple[Any, ...]) -> str | None:
        compiled = self.compiled
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
            if value is not None and not isinstance(value, types):
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

    def _accept(self, state: _KeyState, time: int, values: tuple[Any, ...]) -> None:
        state.seq += 1
        state.buffer.append((time, state.seq, values))
        if state.max_time is not None and time <= state.max_time:
            return  # the watermark did not move: nothing settles, nothing expires
        state.max_time = time
        watermark = time - self.compiled.lateness
        if state.buffer[0][0] >= watermark:
            return
        keep: list[BufferedEvent] = []
        for item in state.buffer:
            if item[0] < watermark:
                self._settle(state, item)
            else:
                keep.append(item)
        state.buffer = keep
        self._expire(state, watermark)

    def _settle(self, state: _KeyState, item: BufferedEvent) -> None:
        time, seq, values = item
        for group, group_state in zip(self.compiled.groups, state.groups, strict=True):
            window = group.window
            tile_index = window.tile(time)
            tiled = group.tiled
            if tiled:
                tile = group_state.tiles.get(tile_index)
                if tile is None:
                    tile = group_state.tiles[tile_index] = [f.monoid.empty() for f in tiled]  # type: ignore[union-attr]
                for position, feature in enumerate(tiled):
                    value = True if feature.slot < 0 else values[feature.slot]
                    if value is not None:
                        tile[position] = feature.monoid.add(tile[position], value, time, seq)  # type: ignore[union-attr]
            changed_low = changed_high = tile_index
            for feature, distinct in zip(group.distinct, group_state.distinct, strict=True):
                value = values[feature.slot]
                if value is None:
                    continue
                moved = distinct.settle(value, time, window)
                if moved is not None:
                    changed_low = min(changed_low, moved[0])
            if group_state.cache is not None and (
                changed_low < group_state.cache_hi and changed_high >= group_state.cache_lo
            ):
                group_state.cache = None

    def _expire(self, state: _KeyState, watermark: int) -> None:
        for group, group_state in zip(self.compiled.groups, state.groups, strict=True):
            window = group.window
            if window.is_lifetime:
                continue
            first = window.first_tile(watermark)
            tiles = group_state.tiles
            if tiles and min(tiles) < first:
                for index in [i for i in tiles if i < first]:
                    del tiles[index]
            for distinct in group_state.distinct:
                distinct.expire(first, window)

    # ---------------------------------------------------------------- evaluate

    def _group_values(self, state: _KeyState, group_index: int, t: int) -> list[Any]:
        """The values of one group's features (tiled first, then distinct) for the window at t."""
        group = self.compiled.groups[group_index]
        group_state = state.groups[group_index]
        window = group.window
        hi = window.tile(t)
        lo = window.first_tile(t)
        if group_state.cache is None or group_state.cache_lo != lo or group_state.cache_hi != hi:
            merged = [f.monoid.empty() for f in group.tiled]  # type: ignore[union-attr]
            for index in sorted(i for i in group_state.tiles if lo <= i < hi):
                tile = group_state.tiles[index]
                for position, feature in enumerate(group.tiled):
                    merged[position] = feature.monoid.merge(merged[position], tile[position])  # type: ignore[union-attr]
            counts = [
                sum(n for tile, n in distinct.per_tile.items() if lo <= tile < hi)
                for distinct in group_state.distinct
            ]
            group_state.cache = (merged, counts)
            group_state.cache_lo = lo
            group_state.cache_hi = hi
        merged, counts = group_state.cache
        partials = list(merged)
        head = group_state.tiles.get(hi)
        if head is not None:
            for position, feature in enumerate(group.tiled):
                partials[position] = feature.monoid.merge(partials[position], head[position])  # type: ignore[union-attr]
        start = window.start(t)
        recent = [
            item for item in state.buffer if item[0] <= t and (start is None or item[0] >= start)
        ]
        for time, seq, values in recent:
            for position, feature in enumerate(group.tiled):
                value = True if feature.slot < 0 else values[feature.slot]
                if value is not None:
                    partials[position] = feature.monoid.add(partials[position], value, time, seq)  # type: ignore[union-attr]
        out = [feature.monoid.result(p) for feature, p in zip(group.tiled, partials, strict=True)]  # type: ignore[union-attr]
        for feature, distinct, count in zip(group.distinct, group_state.distinct, counts, strict=True):
            total = count + distinct.per_tile.get(hi, 0)
            extra: set[Any] = set()
            for _time, _seq, values in recent:
                value = values[feature.slot]
                if value is None or value in extra:
                    continue
                latest = distinct.latest.get(value)
                if latest is None or (start is not None and latest < start):
                    extra.add(value)
            out.append(total + len(extra))
        return out

    def _evaluate(self, state: _KeyState, t: int) -> tuple[Any, ...]:
        per_group = [self._group_values(state, i, t) for i in range(len(self.compiled.groups))]
        return tuple([per_group[g][p] for g, p, _ in self._feature_order])

    def _find(self, key: Key) -> _KeyState | None:
        for states in self._partitions.values():
            state = states.get(key)
            if state is not None:
                return state
        return None

    def watermark(self, key: Key) -> int | None:
        """The key's watermark (newest accepted event time - allowed lateness), None if unseen."""
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        return state.max_time - self.compiled.lateness

    def evaluate(self, key: Key, t: int) -> dict[str, Any] | None:
        """Feature values of `key` for windows ending at t, over the events processed so far.

        Exact for t ≥ the key's watermark; earlier t is evaluated at the watermark (the engine
        no longer holds finer history there). None if the key is unknown or its TTL has passed.
        """
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        if self.ttl is not None and t - state.max_time > self.ttl:
            return None
        t = max(t, state.max_time - self.compiled.lateness)
        return dict(zip(self.feature_names, self._evaluate(state, t), strict=True))

    def serve(self, key: Key, t: int) -> dict[str, Any] | None:
        """What the online store answers for a read at t: evaluation at max(t, newest event time)."""
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        if self.ttl is not None and t - state.max_time > self.ttl:
            return None
        return self.evaluate(key, max(t, state.max_time))

    def empty_values(self) -> dict[str, Any]:
        """What every feature reads as over an empty window."""
        return {feature.name: empty_result(feature.function) for feature in self.view.features}

    # ---------------------------------------------------------------- serving

    def serving_state(self, key: Key) -> ServingState | None:
        """The step functions that let a reader evaluate `key` exactly at any t ≥ max_time."""
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        max_time = state.max_time
        groups = []
        for group_index, group in enumerate(self.compiled.groups):
            window = group.window
            first_value = tuple(self._group_values(state, group_index, max_time))
            if window.is_lifetime or window.hop is None:
                groups.append(GroupSteps((max_time,), (first_value,)))
                continue
            starts = [max_time]
            values = [first_value]
            base = max_time // window.hop
            for k in range(1, window.tiles + 1):
                boundary = (base + k) * window.hop
                value = tuple(self._group_values(state, group_index, boundary))
                if value != values[-1]:
                    starts.append(boundary)
                    values.append(value)
            groups.append(GroupSteps(tuple(starts), tuple(values)))
        return ServingState(key, max_time, state.seq, tuple(groups))

    def take_dirty(self, partitions: Iterable[int] | None = None) -> list[Key]:
        """Keys changed since the last call (for the given partitions, or all), then forget them."""
        chosen = list(self._dirty) if partitions is None else list(partitions)
        keys: list[Key] = []
        for partition in chosen:
            dirty = self._dirty.get(partition)
            if dirty:
                keys.extend(dirty)
                dirty.clear()
        return keys

    # ---------------------------------------------------------------- state moves

    @property
    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def key_count(self) -> int:
        return sum(len(states) for states in self._partitions.values())

    def keys(self, partition: int | None = None) -> list[Key]:
        if partition is not None:
            return list(self._partitions.get(partition, {}))
        return [key for states in self._partitions.values() for key in states]

    def drop(self, partition: int) -> None:
        """Forget a partition's state (it was revoked; its new owner restores it)."""
        self._partitions.pop(partition, None)
        self._dirty.pop(partition, None)

    def snapshot(self, partition: int) -> dict[str, Any]:
        """A plain-value copy of one partition's state (lists, tuples, ints, floats, strings)."""
        states = self._partitions.get(partition, {})
        keys = []
        for key, state in states.items():
            groups = []
            for group_state in state.groups:
                groups.append(
                    [
                        sorted(group_state.tiles.items()),
                        [sorted(d.latest.items(), key=_value_order) for d in group_state.distinct],
                    ]
                )
            keys.append([list(key), state.max_time, state.seq, [list(item) for item in state.buffer], groups])
        return {
            "format": SNAPSHOT_FORMAT,
            "view": self.name,
            "fingerprint": self.fingerprint(),
            "partition": partition,
            "keys": keys,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace one partition's state with a snapshot taken by `snapshot`."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise StateError(f"snapshot format {snapshot.get('format')!r} is not {SNAPSHOT_FORMAT}")
        if snapshot.get("view") != self.name or snapshot.get("fingerprint") != self.fingerprint():
            raise StateError(
                f"snapshot is of view {snapshot.get('view')!r} with a different definition; "
                f"rebuild the state of {self.name!r} from the archive (streamfs backfill)"
            )
        partition = int(snapshot["partition"])
        groups = self.compiled.groups
        states: dict[Key, _KeyState] = {}
        for key_list, max_time, seq, buffer, group_snaps in snapshot["keys"]:
            state = _KeyState(groups)
            state.max_time = max_time
            state.seq = seq
            state.buffer = [(int(t), int(s), tuple(values)) for t, s, values in buffer]
            for group, group_state, (tiles, distincts) in zip(groups, state.groups, group_snaps, strict=True):
                group_state.tiles = {
                    int(index): [_thaw(p) for p in partials] for index, partials in tiles
                }
                for distinct, latest in zip(group_state.distinct, distincts, strict=True):
                    distinct.latest = {_thaw(v): int(t) for v, t in latest}
                    for time in distinct.latest.values():
                        tile = group.window.tile(time)
                        distinct.per_tile[tile] = distinct.per_tile.get(tile, 0) + 1
            states[tuple(_thaw(part) for part in key_list)] = state
        self._partitions[partition] = states
        self._dirty[partition] = set()

    def fingerprint(self) -> str:
        """Identifies the parts of the definition that shape state: features, keys, lateness."""
        parts = [
            self.name,
            ",".join(self.compiled.key_fields),
            str(self.compiled.lateness),
            *(f"{f.field}:{f.function}:{f.window}:{f.hop}:{f.name}" for f in self.view.features),
        ]
        return "|".join(parts)


def _thaw(value: Any) -> Any:
    """Lists that went through JSON come back as lists; partials are tuples."""
    if isinstance(value, list):
        return tuple(_thaw(v) for v in value)
    return value


def _value_order(item: tuple[Any, int]) -> tuple[str, str]:
    return (type(item[0]).__name__, repr(item[0]))


class Engine:
    """All views of a pipeline, fanned out by source topic."""

    def __init__(self, views: Sequence[FeatureView]) -> None:
        self.views = {view.name: ViewEngine(view) for view in views}
        self._by_topic: dict[str, list[ViewEngine]] = {}
        for engine in self.views.values():
            self._by_topic.setdefault(engine.view.source.topic, []).append(engine)

    def for_topic(self, topic: str) -> list[ViewEngine]:
        return self._by_topic.get(topic, [])

    def process(self, topic: str, events: Sequence[SourceEvent]) -> dict[str, ProcessResult]:
        """Run a micro-batch of one topic through every view reading that topic."""
        return {engine.name: engine.process(events) for engine in self.for_topic(topic)}
