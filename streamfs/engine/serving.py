"""What the online store holds per key: each window group's values as a step function of time.

Values decay as time passes with no new event, so the online store cannot hold one value per
feature. It holds, per window group, the values from the key's newest event on and the hop
boundaries at which they change; a reader picks the step for its read time (exact, no merge).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from streamfs.aggregations import GroupAggregator
from streamfs.engine.compiled import CompiledView, WindowGroup
from streamfs.engine.reads import extra_distinct, group_values
from streamfs.engine.state import BufferedEvent, GroupState, Key, KeyState


class GroupSteps(NamedTuple):
    """The values of one window group from the key's newest event onwards, as a step function.

    For starts[i] ≤ t < starts[i+1] the group's features read values[i]; from the last start
    on they read `empty` (the window has moved past every event).
    """

    starts: tuple[int, ...]
    values: tuple[tuple[Any, ...], ...]


class ServingState(NamedTuple):
    """Everything the online store needs to answer reads at any t ≥ max_time exactly.

    (This and GroupSteps are named tuples, not frozen dataclasses: the worker builds one per
    changed key per write, and a frozen dataclass's __init__ costs ~1 µs more.)"""

    key: Key
    max_time: int
    events: int
    groups: tuple[GroupSteps, ...]


def group_steps(
    compiled: CompiledView, state: KeyState, group_index: int, exacts: list[list[Any]] | None = None
) -> GroupSteps:
    """One group's values from max_time on, from the settled tiles and the buffer (the definition).

    `exacts[i]` is `compiled.exacts` of the i-th buffered event's values, if already computed.
    """
    max_time = state.max_time
    assert max_time is not None
    if not compiled.groups[group_index].hop:
        return GroupSteps((max_time,), (tuple(group_values(compiled, state, group_index, max_time)),))
    return _steps(compiled, group_index, state.groups[group_index], max_time, state.buffer, exacts)


def _complete_steps(compiled: CompiledView, group_index: int, gs: GroupState, max_time: int) -> GroupSteps:
    """One group's values from max_time on, from the key's complete tiles (every accepted event
    settled, see KeyState.complete): the same values as group_steps without re-adding the buffer."""
    group = compiled.groups[group_index]
    if group.hop:
        return _steps(compiled, group_index, gs, max_time, [], None)
    aggregator = group.aggregator
    out: list[Any] = []
    if aggregator is not None:
        tile = gs.tiles.get(0)
        out = aggregator.results(aggregator.empty() if tile is None else tile)
    for distinct in gs.distinct:
        out.append(sum(distinct.per_tile.values()))
    return GroupSteps((max_time,), (tuple(out),))


def _steps(
    compiled: CompiledView,
    group_index: int,
    gs: GroupState,
    max_time: int,
    buffer: list[BufferedEvent],
    exacts: list[list[Any]] | None,
) -> GroupSteps:
    """A hopping or tumbling group's step function over tiles `gs` plus buffered events, in one
    backward sweep.

    For t ≥ max_time every tile and buffered event is at or before t, so the window at the
    k-th hop boundary after max_time, b_k = (tile(max_time) + k)·H, holds exactly the tiles
    (and buffered events) from tile(max_time) + k + 1 - L/H on: a suffix. Sweeping k from L/H
    (empty window) down to 0 (the window at max_time itself: all buffered events are ≤ it)
    adds one tile per step, O(L/H) merges in all. Exact partials make the merge order
    irrelevant, so this equals group_values at max_time and at each boundary.

    Values change only at the boundaries where something enters the window (a tile, a
    count_distinct tile, a buffered event's tile), so only those are evaluated: a sparse key
    costs a few evaluations instead of L/H + 1.
    """
    group = compiled.groups[group_index]
    hop = group.hop
    tiles_per_window = group.window.tiles
    base = max_time // hop
    lowest = base + 1 - tiles_per_window  # the oldest tile the window at max_time (k = 0) reads
    aggregator = group.aggregator
    # Buffered events by the tile they enter the window with (the window at boundary k holds
    # the events at or after its start, i.e. of tiles ≥ its first tile).
    arriving: dict[int, list[BufferedEvent]] = {}
    combined: dict[int, list[Any]] = {}
    if aggregator is not None:
        combined = {index: tile for index, tile in gs.tiles.items() if index >= lowest}
    copied: set[int] = set()
    for position, item in enumerate(buffer):
        time = item[0]
        index = time // hop
        if index < lowest:
            continue
        found = arriving.get(index)
        if found is None:
            arriving[index] = [item]
        else:
            found.append(item)
        if aggregator is not None:  # buffered events join their tile (on a copy)
            if index not in copied:
                tile = combined.get(index)
                combined[index] = aggregator.empty() if tile is None else list(tile)
                copied.add(index)
            values = item[2]
            exact = compiled.exacts(values) if exacts is None else exacts[position]
            aggregator.add(combined[index], values, exact, time, item[1])
    entering_at: set[int] = set(combined)
    entering_at.update(arriving)
    for distinct in gs.distinct:
        entering_at.update(index for index, count in distinct.per_tile.items() if count and index >= lowest)
    suffix: list[Any] = aggregator.empty() if aggregator is not None else []
    counts = [0] * len(gs.distinct)
    recent: list[BufferedEvent] = []
    # The window at boundary k reads tiles from lo(k) = base + k + 1 - L/H on. Walking the
    # entering tiles newest first, the value after tile e holds for the boundaries whose lo is
    # in (the next entering tile, e]; before any (lo > every entering tile) the window is empty.
    value = _window_value(aggregator, group, gs, suffix, counts, recent, (base + 1) * hop)
    segments = [(base + 1 - lowest, value)]  # (first boundary k, value), k descending
    for lo in sorted(entering_at, reverse=True):
        entered = arriving.get(lo)
        if entered is not None:
            recent.extend(entered)
        if aggregator is not None:
            tile = combined.get(lo)
            if tile is not None:
                older = list(tile)
                aggregator.merge_into(older, suffix)
                suffix = older
        for position, distinct in enumerate(gs.distinct):
            counts[position] += distinct.per_tile.get(lo, 0)
        value = _window_value(aggregator, group, gs, suffix, counts, recent, lo * hop)
        segments[-1] = (lo - lowest + 1, segments[-1][1])  # the newer value starts after lo's last boundary
        segments.append((0, value))
    starts = [max_time]
    steps = [segments[-1][1]]
    for k, value in reversed(segments[:-1]):
        if value != steps[-1]:
            starts.append((base + k) * hop)
            steps.append(value)
    return GroupSteps(tuple(starts), tuple(steps))


def _window_value(
    aggregator: GroupAggregator | None,
    group: WindowGroup,
    gs: GroupState,
    suffix: list[Any],
    counts: list[int],
    recent: list[BufferedEvent],
    start: int,
) -> tuple[Any, ...]:
    """The group's values for a window starting at `start` holding partial `suffix`, the
    count_distinct `counts` of its tiles and the buffered events `recent`."""
    out: list[Any] = aggregator.results(suffix) if aggregator is not None else []
    for feature, distinct, count in zip(group.distinct, gs.distinct, counts, strict=True):
        out.append(count + extra_distinct(distinct, feature.slot, recent, start))
    return tuple(out)


def serving_state(compiled: CompiledView, key: Key, state: KeyState) -> ServingState:
    """The step functions that let a reader evaluate `key` exactly at any t ≥ max_time.

    With allowed lateness the key's complete tiles (KeyState.complete, kept for its offline
    rows) already hold the buffered events, so they are read instead of adding the buffer to
    copies of the settled tiles; without them (lateness 0, or right after a restore or a
    state-only replay) the settled tiles and the buffer are read, the definition.
    """
    max_time = state.max_time
    assert max_time is not None
    complete = state.complete
    count = len(compiled.groups)
    if complete is not None and state.buffer:
        groups = tuple(_complete_steps(compiled, index, complete[index], max_time) for index in range(count))
    else:
        exacts = [compiled.exacts(item[2]) for item in state.buffer] if state.buffer else None
        groups = tuple(group_steps(compiled, state, index, exacts) for index in range(count))
    return ServingState(key, max_time, state.seq, groups)


class StepArrays(NamedTuple):
    """The kernel's step rows as arrays (kernel/serving.py): what an encoder packs without
    turning every value into a Python object.

    Group g's rows begin at row region[g], key after key; key i has steps[i, g] of them.
    Row r holds its group's values from starts[r] on, in columns[g] of ints (int64) or
    floats (float64), as kinds says, one letter per group column, group after group:
    ``i`` an int64, ``f`` a float (NaN: None), ``n`` an int held in a float (NaN: None).
    """

    starts: np.ndarray
    ints: np.ndarray
    floats: np.ndarray
    region: np.ndarray
    steps: np.ndarray
    columns: tuple[tuple[int, ...], ...]
    kinds: bytes


class ServingColumns:
    """The serving states of many keys as columns: what the online writer encodes without
    building a ServingState (and a GroupSteps per group) for every changed key.

    Key i's group g has counts[i][g] steps: from row group_first[i][g] on of group_starts[g] and
    group_rows[g] (each group's steps key after key). Keys in `states` are not in the columns:
    their ServingState (None: no accepted event, or no such key) was built the slow way (the
    Python engine, or a value the kernel cannot give exactly). `plain[i]`: every value of key
    i's steps `is_plain`, so the writer can dump them as they are.

    `arrays`: the same steps as arrays, when every column is a number (an encoder packs them
    as they are); group_starts and group_rows are then built from them on first use only.
    """

    __slots__ = (
        "_group_rows",
        "_group_starts",
        "_rows_of_arrays",
        "arrays",
        "counts",
        "events",
        "group_first",
        "keys",
        "max_times",
        "plain",
        "states",
    )  # fmt: skip

    def __init__(
        self,
        keys: list[Key],
        *,
        max_times: list[int],
        events: list[int],
        counts: list[list[int]],
        group_first: list[list[int]],
        group_starts: list[tuple[int, ...]] | None,
        group_rows: list[tuple[tuple[Any, ...], ...]] | None,
        plain: list[bool],
        states: dict[int, ServingState | None],
        arrays: StepArrays | None = None,
        rows_of_arrays: Callable[[], tuple[list[tuple[int, ...]], list[tuple[tuple[Any, ...], ...]]]]
        | None = None,
    ) -> None:
        self.keys = keys
        self.max_times = max_times
        self.events = events
        self.counts = counts
        self.group_first = group_first
        self._group_starts = group_starts
        self._group_rows = group_rows
        self.plain = plain
        self.states = states
        self.arrays = arrays
        self._rows_of_arrays = rows_of_arrays

    @classmethod
    def of_states(cls, keys: list[Key], states: list[ServingState | None]) -> ServingColumns:
        """Columns that hold no key: every state given as it is (the Python engine's path)."""
        return cls(keys, max_times=[], events=[], counts=[], group_first=[], group_starts=[],
                   group_rows=[], plain=[], states=dict(enumerate(states)))  # fmt: skip

    def _python_rows(self) -> None:
        if self._group_starts is None or self._group_rows is None:
            assert self._rows_of_arrays is not None
            self._group_starts, self._group_rows = self._rows_of_arrays()

    @property
    def group_starts(self) -> list[tuple[int, ...]]:
        self._python_rows()
        assert self._group_starts is not None
        return self._group_starts

    @property
    def group_rows(self) -> list[tuple[tuple[Any, ...], ...]]:
        self._python_rows()
        assert self._group_rows is not None
        return self._group_rows

    def groups(self, index: int) -> list[tuple[tuple[int, ...], tuple[tuple[Any, ...], ...]]]:
        """(starts, values) of each group of columnar key `index`."""
        firsts = self.group_first[index]
        starts, rows = self.group_starts, self.group_rows
        out = []
        for g, n in enumerate(self.counts[index]):
            first = firsts[g]
            out.append((starts[g][first : first + n], rows[g][first : first + n]))
        return out

    def state(self, index: int) -> ServingState | None:
        """Key `index`'s ServingState."""
        if index in self.states:
            return self.states[index]
        groups = tuple(GroupSteps(starts, values) for starts, values in self.groups(index))
        return ServingState(self.keys[index], self.max_times[index], self.events[index], groups)


INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1  # (orjson writes ints in [INT64_MIN, UINT64_MAX])


def is_plain(value: Any) -> bool:
    """Whether JSON carries `value` exactly (orjson writes NaN as null and rejects ints beyond
    64 bits): the online store writes such values as they are, others tagged (online/layout.py)."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        return bool(INT64_MIN <= value <= UINT64_MAX)
    return False
