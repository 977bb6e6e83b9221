"""Reading window values from a key's state: the definition (group_values) and the offline-row
path over the running window (row_values), which must agree bit for bit."""

from __future__ import annotations

from typing import Any

from streamfs.engine.compiled import CompiledView
from streamfs.engine.running import advance, rebuild
from streamfs.engine.state import BufferedEvent, DistinctWindow, KeyState


def group_values(compiled: CompiledView, state: KeyState, group_index: int, t: int) -> list[Any]:
    """The values of one group's features (tiled first, then distinct) for the window at t.

    The definition: merge the tiles in [first_tile(t), tile(t)] oldest first, add the
    buffered events in [start(t), t] in arrival order, read the results.
    """
    group = compiled.groups[group_index]
    gs = state.groups[group_index]
    window = group.window
    hi = window.tile(t)
    lo = window.first_tile(t)
    start = window.start(t)
    recent = [item for item in state.buffer if item[0] <= t and (start is None or item[0] >= start)]
    aggregator = group.aggregator
    out: list[Any] = []
    if aggregator is not None:
        partial = aggregator.empty()
        for index in sorted(i for i in gs.tiles if lo <= i <= hi):
            aggregator.merge_into(partial, gs.tiles[index])
        for time, seq, values in recent:
            aggregator.add(partial, values, compiled.exacts(values), time, seq)
        out = aggregator.results(partial)
    for feature, distinct in zip(group.distinct, gs.distinct, strict=True):
        count = sum(n for tile, n in distinct.per_tile.items() if lo <= tile <= hi)
        out.append(count + extra_distinct(distinct, feature.slot, recent, start))
    return out


def row_values(compiled: CompiledView, state: KeyState, group_index: int, t: int) -> list[Any]:
    """_group_values(state, group_index, t) for t ≥ the watermark, from the running window."""
    group = compiled.groups[group_index]
    if not group.running:
        return group_values(compiled, state, group_index, t)
    gs = state.groups[group_index]
    window = group.window
    lo = t // group.hop - group.span
    if gs.front is None:
        rebuild(group, gs, lo)
    elif lo != gs.lo:
        if lo < gs.lo:
            return group_values(compiled, state, group_index, t)  # behind the running window
        advance(group, gs, lo)
    front = gs.front
    assert front is not None
    buffer = state.buffer
    recent: list[BufferedEvent] = []
    start = 0
    if buffer:
        start = window.start(t)  # type: ignore[assignment]
        recent = [item for item in buffer if start <= item[0] <= t]
    aggregator = group.aggregator
    out: list[Any] = []
    if aggregator is not None:
        back = gs.back
        if front:
            partial = list(front[-1][1])
            if back is not None:
                aggregator.merge_into(partial, back)
        elif back is None:
            partial = aggregator.empty()
        else:
            partial = list(back) if recent else back
        for time, seq, values in recent:
            aggregator.add(partial, values, compiled.exacts(values), time, seq)
        out = aggregator.results(partial)
    for feature, distinct, count in zip(group.distinct, gs.distinct, gs.dcounts, strict=True):
        out.append(count + extra_distinct(distinct, feature.slot, recent, start))
    return out


def row(compiled: CompiledView, state: KeyState, t: int) -> tuple[Any, ...]:
    """The offline row at t ≥ the key's watermark."""
    values: list[Any] = []
    for group_index in range(len(compiled.groups)):
        values += row_values(compiled, state, group_index, t)
    return compiled.order(values)


def evaluate_all(compiled: CompiledView, state: KeyState, t: int) -> tuple[Any, ...]:
    values: list[Any] = []
    for group_index in range(len(compiled.groups)):
        values += group_values(compiled, state, group_index, t)
    return compiled.order(values)


def extra_distinct(
    distinct: DistinctWindow, slot: int, recent: list[BufferedEvent], start: int | None
) -> int:
    """How many buffered values in the window are not already counted from the tiles."""
    if not recent:
        return 0
    extra: set[Any] = set()
    for _time, _seq, values in recent:
        value = values[slot]
        if value is None or value in extra:
            continue
        latest = distinct.latest.get(value)
        if latest is None or (start is not None and latest < start):
            extra.add(value)
    return len(extra)
