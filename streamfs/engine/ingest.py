"""Accepting an event into a key's state: settle it into tiles (or buffer it), expire old tiles.

See the package docstring for why events at or before the watermark settle and later ones wait
in the buffer. `ingest_newest` is the fused fast path for lateness 0.
"""

from __future__ import annotations

from typing import Any

from streamfs.engine.compiled import CompiledView, WindowGroup
from streamfs.engine.running import advance, rebuild
from streamfs.engine.state import BufferedEvent, GroupState, KeyState


def accept(compiled: CompiledView, state: KeyState, time: int, values: tuple[Any, ...]) -> None:
    """Accept an event into the settled tiles or the buffer; settle and expire as the watermark moves.

    Settling is amortized: events the watermark has passed may wait in the buffer until it has
    doubled since the last pass (reads filter the buffer by time, so they count them either
    way), so a key with a lateness' worth of buffered events does not rescan them every event.
    """
    state.seq += 1
    item = (time, state.seq, values)
    moved = state.max_time is None or time > state.max_time
    if moved:
        state.max_time = time
    watermark = state.max_time - compiled.lateness  # type: ignore[operator]
    buffer = state.buffer
    if time <= watermark and not buffer:
        # Every later evaluation is at t ≥ watermark ≥ time: the tile is all it needs. (With
        # an empty buffer, settling now keeps each tile's events in arrival order.)
        settle(compiled, state, item)
    else:
        buffer.append(item)
    if not moved:
        return  # the watermark did not move: nothing else settles, nothing expires
    if buffer and len(buffer) >= state.settle_at:
        keep: list[BufferedEvent] = []
        for buffered in buffer:
            if buffered[0] <= watermark:
                settle(compiled, state, buffered)
            else:
                keep.append(buffered)
        state.buffer = keep
        state.settle_at = 2 * len(keep) + 1
    expire(compiled, state, watermark)


def settle(compiled: CompiledView, state: KeyState, item: BufferedEvent) -> None:
    time, seq, values = item
    exacts = compiled.exacts(values)
    for group, gs in zip(compiled.groups, state.groups, strict=True):
        settle_group(group, gs, time, seq, values, exacts)


def settle_group(
    group: WindowGroup, gs: GroupState, time: int, seq: int, values: tuple[Any, ...], exacts: list[Any]
) -> None:
    """Add one event to its tile (and to the running window) of one group."""
    hop = group.hop
    index = time // hop if hop else 0
    running = gs.front is not None
    aggregator = group.aggregator
    if aggregator is not None:
        tile = gs.tiles.get(index)
        if tile is None:
            tile = gs.tiles[index] = aggregator.empty()
        aggregator.add(tile, values, exacts, time, seq)
        if running:
            if index >= gs.split and index >= gs.top:
                back = gs.back
                if back is None:
                    back = gs.back = aggregator.empty()
                aggregator.add(back, values, exacts, time, seq)
                gs.top = index
            elif index >= gs.lo:
                gs.front = None  # an older tile of the running window changed: rebuild
                running = False
    for position, (feature, distinct) in enumerate(zip(group.distinct, gs.distinct, strict=True)):
        value = values[feature.slot]
        if value is None:
            continue
        moved = distinct.settle(value, time, hop)
        if moved is not None and running:
            old, new = moved
            lo = gs.lo
            gs.dcounts[position] += (new >= lo) - (old is not None and old >= lo)


def expire(compiled: CompiledView, state: KeyState, watermark: int) -> None:
    for group, gs in zip(compiled.groups, state.groups, strict=True):
        hop = group.hop
        if not hop:
            continue
        first = watermark // hop - group.span
        if gs.floor is None or first > gs.floor:
            expire_group(group, gs, first)


def expire_group(group: WindowGroup, gs: GroupState, first: int) -> None:
    """Drop the tiles (and distinct values) below `first`, the oldest tile still readable."""
    gs.floor = first
    if gs.front is not None and gs.lo < first:
        advance(group, gs, first)  # before the distinct counts it needs are dropped
    tiles = gs.tiles
    if tiles and min(tiles) < first:
        for index in [i for i in tiles if i < first]:
            del tiles[index]
    for distinct in gs.distinct:
        distinct.expire(first, group.hop)


def ingest_newest(
    compiled: CompiledView, state: KeyState, time: int, values: tuple[Any, ...]
) -> tuple[Any, ...]:
    """accept then the row, fused, for lateness 0 and an event at or after the key's newest.

    Then the watermark is `time` itself: the event settles at once, each group expires below
    first_tile(time), and the row reads every tile left (none is newer than the event's).
    """
    state.max_time = time
    state.seq += 1
    return newest_row(compiled, state.groups, time, state.seq, values)


def ingest_buffered(
    compiled: CompiledView, state: KeyState, time: int, values: tuple[Any, ...]
) -> tuple[Any, ...]:
    """accept and the row for lateness > 0 and an event at or after the key's newest.

    The settled tiles and the buffer take the event as usual; the row comes from the complete
    tiles (every accepted event), where this event is the newest, as in ingest_newest.
    """
    if state.complete is None:
        state.complete = _complete_from_settled(compiled, state)
    accept(compiled, state, time, values)
    return newest_row(compiled, state.complete, time, state.seq, values)


def add_to_complete(compiled: CompiledView, state: KeyState, time: int, values: tuple[Any, ...]) -> None:
    """Add an out-of-order event (older than the key's newest) to the complete tiles.

    Groups whose readable tiles (floor: the window at the newest event) start after the event's
    tile skip it: no later row of a newest event can reach it.
    """
    if state.complete is None:
        return  # built from the settled tiles and the buffer (which hold this event) when needed
    exacts = compiled.exacts(values)
    for group, gs in zip(compiled.groups, state.complete, strict=True):
        hop = group.hop
        if hop and gs.floor is not None and time // hop < gs.floor:
            continue
        settle_group(group, gs, time, state.seq, values, exacts)


def _complete_from_settled(compiled: CompiledView, state: KeyState) -> list[GroupState]:
    """The complete tiles of a key: its settled tiles plus its buffered events (after a restore
    or a state-only replay, which do not keep them), from the window at the newest event on.

    Only tiles the newest event's window reaches are taken: the settled tiles may still hold
    older ones (expiry follows the watermark, and late settling can refill an expired tile),
    and newest_row reads every tile it has for windows of one or two tiles.
    """
    assert state.max_time is not None
    complete = []
    for group, settled in zip(compiled.groups, state.groups, strict=True):
        gs = GroupState(group)
        hop = group.hop
        first = state.max_time // hop - group.span if hop else 0
        gs.tiles = {index: list(tile) for index, tile in settled.tiles.items() if index >= first}
        gs.floor = first if hop else None
        for copy, original in zip(gs.distinct, settled.distinct, strict=True):
            copy.latest = dict(original.latest)
            copy.per_tile = {tile: n for tile, n in original.per_tile.items() if tile >= first}
            if hop:
                copy.floor = first
                copy.stale = sum(1 for time in copy.latest.values() if time // hop < first)
        complete.append(gs)
    for time, seq, values in sorted(state.buffer, key=lambda item: item[1]):
        exacts = compiled.exacts(values)
        for group, gs in zip(compiled.groups, complete, strict=True):
            hop = group.hop
            if hop and gs.floor is not None and time // hop < gs.floor:
                continue
            settle_group(group, gs, time, seq, values, exacts)
    return complete


def newest_row(
    compiled: CompiledView, group_states: list[GroupState], time: int, seq: int, values: tuple[Any, ...]
) -> tuple[Any, ...]:
    """Settle an event at or after all others of its key into `group_states`, expire the tiles the
    window at `time` no longer reaches, and read that window: the event's offline row."""
    exacts = compiled.exacts(values)
    out: list[Any] = []
    for group, gs in zip(compiled.groups, group_states, strict=True):
        hop = group.hop
        first = time // hop - group.span if hop else 0
        settle_group(group, gs, time, seq, values, exacts)
        if hop and (gs.floor is None or first > gs.floor):
            expire_group(group, gs, first)
        aggregator = group.aggregator
        if group.running:
            if gs.front is None or gs.lo > first:
                rebuild(group, gs, first)
            elif gs.lo < first:
                advance(group, gs, first)
            front = gs.front
            assert front is not None
            if aggregator is not None:
                back = gs.back
                if front:
                    partial = list(front[-1][1])
                    if back is not None:
                        aggregator.merge_into(partial, back)
                    out += aggregator.results(partial)
                else:
                    out += aggregator.results(aggregator.empty() if back is None else back)
            out += gs.dcounts
        else:
            tiles = gs.tiles
            if aggregator is not None:
                if len(tiles) == 1:
                    [tile] = tiles.values()
                    out += aggregator.results(tile)
                else:
                    partial = aggregator.empty()
                    for index in sorted(tiles):
                        aggregator.merge_into(partial, tiles[index])
                    out += aggregator.results(partial)
            for distinct in gs.distinct:
                out.append(sum(distinct.per_tile.values()))
    return compiled.order(out)
