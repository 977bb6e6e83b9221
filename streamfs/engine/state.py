"""Per-key state: tiles, the running window of each window group, count_distinct maps, buffer.

Plain mutable objects with slots; the functions in ingest.py and running.py change them, the
ones in reads.py and serving.py read them, snapshot.py turns them into plain values and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamfs.engine.compiled import WindowGroup

Key = tuple[Any, ...]
BufferedEvent = tuple[int, int, tuple[Any, ...]]
"""(event time, per-key arrival sequence, the view's input values)."""


class DistinctWindow:
    """Exact count_distinct for one key and window: each value's latest settled time.

    A value lies in the window at t (t ≥ watermark) iff its latest settled time ≥ start(t), so
    the count is the number of values whose latest time falls in the window's tiles, plus the
    buffered values not already counted. `per_tile` counts values by the tile of their latest time.
    Expired values leave `per_tile` at once but `latest` lazily (they are *stale*: their tile is
    below `floor`), so expiry does not rebuild `latest` every time the window moves.
    """

    __slots__ = ("floor", "latest", "per_tile", "stale")

    def __init__(self) -> None:
        self.latest: dict[Any, int] = {}
        self.per_tile: dict[int, int] = {}
        self.floor: int | None = None
        self.stale = 0

    def settle(self, value: Any, time: int, hop: int) -> tuple[int | None, int] | None:
        """Record a settled value; return its (old tile or None if new, new tile) if it moved.

        `hop` is the window's hop (0 for lifetime: one tile, 0)."""
        previous = self.latest.get(value)
        if previous is not None and previous >= time:
            return None
        self.latest[value] = time
        new_tile = time // hop if hop else 0
        self.per_tile[new_tile] = self.per_tile.get(new_tile, 0) + 1
        if previous is None:
            return (None, new_tile)
        old_tile = previous // hop if hop else 0
        if self.floor is not None and old_tile < self.floor:
            self.stale -= 1  # an expired value is back: it counts as new
            return (None, new_tile)
        remaining = self.per_tile[old_tile] - 1
        if remaining:
            self.per_tile[old_tile] = remaining
        else:
            del self.per_tile[old_tile]
        return (old_tile, new_tile)

    def expire(self, first_tile: int, hop: int) -> None:
        self.floor = first_tile
        per_tile = self.per_tile
        old = [tile for tile in per_tile if tile < first_tile]
        if not old:
            return
        for tile in old:
            self.stale += per_tile.pop(tile)
        if self.stale > 4 and 4 * self.stale > len(self.latest):
            first_time = first_tile * hop
            self.latest = {v: t for v, t in self.latest.items() if t >= first_time}
            self.stale = 0

    def live(self, hop: int) -> list[tuple[Any, int]]:
        """The (value, latest time) pairs that have not expired."""
        if self.floor is None or not hop:
            return list(self.latest.items())
        first_time = self.floor * hop
        return [(v, t) for v, t in self.latest.items() if t >= first_time]


class GroupState:
    """Tiles of one key for one window group, and its running window.

    The running window holds the merged partial of every settled tile ≥ `lo` (and, per
    count_distinct feature, how many values have their latest time in those tiles), as a
    two-stack queue so that moving `lo` forward costs O(1) merges amortized: `front` is a
    stack of (tile, merge of tiles tile..split-1), oldest on top; `back` is the merge of
    tiles ≥ split (all of them up to the newest, `top`). `front is None` means not built.
    """

    __slots__ = ("back", "dcounts", "distinct", "floor", "front", "lo", "split", "tiles", "top")

    def __init__(self, group: WindowGroup) -> None:
        self.tiles: dict[int, list[Any]] = {}
        self.distinct = [DistinctWindow() for _ in group.distinct]
        self.front: list[tuple[int, list[Any]]] | None = None
        self.back: list[Any] | None = None
        self.lo = self.split = self.top = 0
        self.dcounts: list[int] = []
        self.floor: int | None = None  # tiles below this are expired


class KeyState:
    """One entity key's state in one view.

    `groups` hold the *settled* events (at or before the watermark) and `buffer` the rest: the
    definition every read uses. With allowed lateness > 0, `complete` holds every accepted
    event settled at once (like lateness 0), so the row of an event that is the key's newest
    reads a running window instead of re-adding the whole buffer (which holds a lateness' worth
    of the key's events). It is derived state: snapshots leave it out, restore rebuilds it.
    `settle_at` is the buffer length at which the next settling pass runs (amortizing it).
    """

    __slots__ = ("buffer", "complete", "groups", "max_time", "seq", "settle_at")

    def __init__(self, groups: Sequence[WindowGroup], complete: bool = False) -> None:
        self.max_time: int | None = None
        self.seq = 0
        self.buffer: list[BufferedEvent] = []
        self.groups = [GroupState(group) for group in groups]
        self.complete = [GroupState(group) for group in groups] if complete else None
        self.settle_at = 0
