"""What the online store holds per key: each window group's values as a step function of time.

Values decay as time passes with no new event, so the online store cannot hold one value per
feature. It holds, per window group, the values from the key's newest event on and the hop
boundaries at which they change; a reader picks the step for its read time (exact, no merge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamfs.engine.compiled import CompiledView
from streamfs.engine.reads import extra_distinct, group_values
from streamfs.engine.state import Key, KeyState


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


def group_steps(compiled: CompiledView, state: KeyState, group_index: int) -> GroupSteps:
    """One group's values from max_time on, in one backward sweep over its tiles.

    For t ≥ max_time every tile and buffered event is at or before t, so the window at the
    k-th hop boundary after max_time, b_k = (tile(max_time) + k)·H, holds exactly the tiles
    (and buffered events) from tile(max_time) + k + 1 - L/H on: a suffix. Sweeping k from L/H
    (empty window) down to 0 (the window at max_time itself: all buffered events are ≤ it)
    adds one tile per step, O(L/H) merges in all. Exact partials make the merge order
    irrelevant, so this equals group_values at max_time and at each boundary.
    """
    max_time = state.max_time
    assert max_time is not None
    group = compiled.groups[group_index]
    gs = state.groups[group_index]
    hop = group.hop
    if not hop:
        return GroupSteps((max_time,), (tuple(group_values(compiled, state, group_index, max_time)),))
    tiles_per_window = group.window.tiles
    base = max_time // hop
    lowest = base + 1 - tiles_per_window  # the oldest tile the window at max_time (k = 0) reads
    aggregator = group.aggregator
    combined: dict[int, list[Any]] = {}
    if aggregator is not None:
        combined = {index: tile for index, tile in gs.tiles.items() if index >= lowest}
        copied: set[int] = set()
        for time, seq, values in state.buffer:  # buffered events join their tile (on a copy)
            index = time // hop
            if index < lowest:
                continue
            if index not in copied:
                tile = combined.get(index)
                combined[index] = aggregator.empty() if tile is None else list(tile)
                copied.add(index)
            aggregator.add(combined[index], values, compiled.exacts(values), time, seq)
    suffix: list[Any] = aggregator.empty() if aggregator is not None else []
    counts = [0] * len(gs.distinct)
    at_boundary: list[tuple[Any, ...]] = []
    previous: tuple[Any, ...] | None = None
    seen_recent = -1
    for k in range(tiles_per_window, -1, -1):  # k = 0 is the window at max_time itself
        lo = base + k + 1 - tiles_per_window
        start = lo * hop
        recent = [item for item in state.buffer if item[0] >= start]
        tile = combined.get(lo)
        entering = [d.per_tile.get(lo, 0) for d in gs.distinct]
        if previous is not None and tile is None and not any(entering) and len(recent) == seen_recent:
            at_boundary.append(previous)  # nothing entered the window at this boundary
            continue
        seen_recent = len(recent)
        out: list[Any] = []
        if aggregator is not None:
            if tile is not None:
                older = list(tile)
                aggregator.merge_into(older, suffix)
                suffix = older
            out = aggregator.results(suffix)
        for position, (feature, distinct) in enumerate(zip(group.distinct, gs.distinct, strict=True)):
            counts[position] += entering[position]
            out.append(counts[position] + extra_distinct(distinct, feature.slot, recent, start))
        previous = tuple(out)
        at_boundary.append(previous)
    at_boundary.reverse()
    starts = [max_time]
    steps = [at_boundary[0]]
    for k, value in enumerate(at_boundary[1:], start=1):
        if value != steps[-1]:
            starts.append((base + k) * hop)
            steps.append(value)
    return GroupSteps(tuple(starts), tuple(steps))


def serving_state(compiled: CompiledView, key: Key, state: KeyState) -> ServingState:
    """The step functions that let a reader evaluate `key` exactly at any t ≥ max_time."""
    assert state.max_time is not None
    groups = tuple(group_steps(compiled, state, index) for index in range(len(compiled.groups)))
    return ServingState(key, state.max_time, state.seq, groups)
