"""The running window of a key and window group: a two-stack queue over its tiles.

The offline row of every event reads the window ending at that event. Re-merging every tile
of a 24-tile window per event is the obvious cost; the running window (GroupState.front/back)
keeps the merge of the tiles from `lo` on, so moving `lo` forward costs O(1) merges amortized.
"""

from __future__ import annotations

from typing import Any

from streamfs.engine.compiled import WindowGroup
from streamfs.engine.state import GroupState


def rebuild(group: WindowGroup, gs: GroupState, lo: int) -> None:
    """Build the running window of the tiles ≥ lo from the tiles themselves."""
    restack(group, gs, lo)
    gs.dcounts = [sum(n for tile, n in d.per_tile.items() if tile >= lo) for d in gs.distinct]
    gs.lo = lo


def restack(group: WindowGroup, gs: GroupState, lo: int) -> None:
    """Rebuild front and back from the tiles ≥ lo (the distinct counts are kept apart)."""
    aggregator = group.aggregator
    front: list[tuple[int, list[Any]]] = []
    gs.back = None
    gs.split = gs.top = lo
    if aggregator is not None:
        tiles = gs.tiles
        indices = sorted(i for i in tiles if i >= lo)
        if indices:
            newest = indices.pop()
            gs.back = list(tiles[newest])
            gs.split = gs.top = newest
            suffix: list[Any] | None = None
            for index in reversed(indices):
                merged = list(tiles[index])
                if suffix is not None:
                    aggregator.merge_into(merged, suffix)
                suffix = merged
                front.append((index, merged))
    gs.front = front


def advance(group: WindowGroup, gs: GroupState, lo: int) -> None:
    """Move the running window's lower tile forward to lo."""
    front = gs.front
    assert front is not None
    while front and front[-1][0] < lo:
        front.pop()
    if gs.split < lo:
        if gs.back is not None and gs.top >= lo:
            restack(group, gs, lo)
        else:
            gs.back = None  # the whole back is older than lo: the window restarts empty
            gs.split = gs.top = lo
    old = gs.lo
    dcounts = gs.dcounts
    for position, distinct in enumerate(gs.distinct):
        leaving = 0
        for tile, n in distinct.per_tile.items():
            if old <= tile < lo:
                leaving += n
        dcounts[position] -= leaving
    gs.lo = lo
