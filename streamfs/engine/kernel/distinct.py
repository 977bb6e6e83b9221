"""count_distinct state of every key of a view, compiled: value → latest time, per key and field.

One open-addressing table maps (slot, field f, value id) to a row of four int64s: the key, the
value's latest *settled* time, its latest time in the key's *complete* tiles (with allowed
lateness, see batch.py), and the next row of the same (slot, f), so that one key's values can be
listed (snapshots, key states, complete tiles) without scanning the table. A field is a column
of the kernel's ids matrix (layout.id_columns).

Every count_distinct feature over the same field shares the row: features differ only in the
tile the time falls in, and a time a window no longer reaches counts for it as no time at all
(the value counts anew when seen again), so one probe and one cache line serve them all. (The
row's time is the latest over every settled event, also those too old for a shorter window's
ring; such a time is older than that ring too, so it reads as none there as well.)

Rows are never removed one by one: a freed key's rows become DEAD (probes pass them, new rows
take their place), expired ones are just old, and `rebuild` copies the live rows into a new
table before it gets more than half full. The tile a value's latest time falls in counts it
(see batch.py); this module only finds, adds and lists rows.
"""

from __future__ import annotations

import numba
import numpy as np

KEY, SETTLED, COMPLETE, NEXT = range(4)
WIDTH = 4
EMPTY = -1
"""KEY of a row never used: a probe stops there."""
DEAD = -2
"""KEY of a freed key's row: a probe goes on past it; a new row may take its place."""
NO_TIME = np.iinfo(np.int64).min
"""SETTLED or COMPLETE of a value not seen there (batch.UNSEEN)."""


@numba.njit(cache=True, inline="always")
def packed(slot: int, field: int, fields: int, vid: int) -> int:
    return ((slot * fields + field) << 32) | vid


@numba.njit(cache=True, inline="always")
def _mix(key: int) -> int:
    x = np.uint64(key)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return int(x & np.uint64(0x7FFFFFFFFFFFFFFF))


@numba.njit(cache=True, inline="always")
def first_probe(table: np.ndarray, key: int) -> int:
    """The row a probe for `key` starts at (find and find_or_add look there first)."""
    return _mix(key) & (len(table) - 1)


@numba.njit(cache=True, inline="always")
def find(table: np.ndarray, key: int) -> int:
    """The row of `key`, or -1."""
    mask = len(table) - 1
    h = first_probe(table, key)
    while table[h, KEY] != EMPTY:
        if table[h, KEY] == key:
            return h
        h = (h + 1) & mask
    return -1


@numba.njit(cache=True, inline="always")
def find_or_add(
    table: np.ndarray, heads: np.ndarray, meta: np.ndarray, slot: int, field: int, key: int
) -> int:
    """The row of `key`, added (with no times) if absent; the caller reserved room."""
    mask = len(table) - 1
    h = first_probe(table, key)
    free = -1
    while table[h, KEY] != EMPTY:
        if table[h, KEY] == key:
            return h
        if free < 0 and table[h, KEY] == DEAD:
            free = h
        h = (h + 1) & mask
    if free < 0:
        free = h
        meta[0] += 1  # rows ever used (DEAD ones included): what `reserve` bounds
    table[free, KEY] = key
    table[free, SETTLED] = NO_TIME
    table[free, COMPLETE] = NO_TIME
    table[free, NEXT] = heads[slot, field]
    heads[slot, field] = free
    return free


@numba.njit(cache=True)
def kill_slot(table: np.ndarray, heads: np.ndarray, slot: int) -> None:
    """Mark every row of a freed key DEAD (it never matches again; a rebuild drops it)."""
    for field in range(heads.shape[1]):
        h = heads[slot, field]
        while h != -1:
            table[h, KEY] = DEAD
            h = table[h, NEXT]
        heads[slot, field] = -1


@numba.njit(cache=True)
def list_field(table: np.ndarray, heads: np.ndarray, slot: int, field: int):  # type: ignore[no-untyped-def]
    """(value ids, latest settled times) of one key's settled values of a field."""
    count = 0
    h = heads[slot, field]
    while h != -1:
        if table[h, SETTLED] != NO_TIME:
            count += 1
        h = table[h, NEXT]
    vids = np.empty(count, np.int64)
    times = np.empty(count, np.int64)
    h = heads[slot, field]
    i = 0
    while h != -1:
        if table[h, SETTLED] != NO_TIME:
            vids[i] = table[h, KEY] & 0xFFFFFFFF
            times[i] = table[h, SETTLED]
            i += 1
        h = table[h, NEXT]
    return vids, times


@numba.njit(cache=True)
def reach(  # type: ignore[no-untyped-def]
    maxt: np.ndarray,
    fields: int,
    lateness: int,
    feature_field: np.ndarray,
    feature_hop: np.ndarray,
    feature_span: np.ndarray,
):
    """The earliest time some count_distinct feature over each (slot, field) still reaches:
    column 0 at the key's watermark (newest - lateness: settled times), column 1 at its newest
    time (complete times). A time at or after it is reached (its tile is in that feature's window
    ring); a key never seen reaches nothing. One pass over the keys, so that deciding which of
    millions of rows are live is a comparison each, not a division per feature."""
    never = np.iinfo(np.int64).max
    out = np.full((len(maxt), fields, 2), never, np.int64)
    for slot in range(len(maxt)):
        newest = maxt[slot]
        if newest == NO_TIME:
            continue
        for j in range(len(feature_field)):
            field, hop = feature_field[j], feature_hop[j]
            for column in range(2):
                if hop == 0:
                    earliest = NO_TIME + 1  # a lifetime window reaches every time
                else:
                    watermark = newest - lateness if column == 0 else newest
                    earliest = (watermark // hop - feature_span[j]) * hop
                if earliest < out[slot, field, column]:
                    out[slot, field, column] = earliest
    return out


@numba.njit(cache=True, inline="always")
def split_pair(pair: int, fields: int) -> tuple[int, int]:
    """(slot, field) of a row's pair number slot * fields + field; no division for the usual
    single field. (Measured alone it changed nothing in count_live: its cost was the branch
    misses, see _live.)"""
    if fields == 1:
        return pair, 0
    slot = pair // fields
    return slot, pair - slot * fields


@numba.njit(cache=True, inline="always")
def _live(table: np.ndarray, h: int, fields: int, reached: np.ndarray) -> bool:
    """Whether a row is kept by a rebuild: a live key's, with its settled or its complete time
    still reached by a feature of its field (`reached`: see `reach`, at least one key's row).

    Without a branch: whether a row of a table ~60 % full is used, and still reached, is a coin
    toss for the branch predictor, and its misses were most of a pass (count_live over 2 M rows:
    30 ms with branches, 8 ms without). An unused row reads key 0's reach and is dropped."""
    key = table[h, KEY]
    used = key >= 0
    slot, field = split_pair((key if used else 0) >> 32, fields)
    settled, complete = table[h, SETTLED], table[h, COMPLETE]
    kept = (settled != NO_TIME) & (settled >= reached[slot, field, 0])
    kept |= (complete != NO_TIME) & (complete >= reached[slot, field, 1])
    return bool(used & kept)


@numba.njit(cache=True)
def count_live(table: np.ndarray, fields: int, reached: np.ndarray) -> int:
    """How many rows `rebuild` would keep: one sequential pass, so deciding between cleaning up
    and growing costs a few ms, not a rebuild."""
    if reached.shape[0] == 0:  # (no key yet: _live reads key 0's reach)
        return 0
    live = 0
    for h in range(len(table)):
        live += _live(table, h, fields, reached)
    return live


def empty_table(size: int) -> np.ndarray:
    """A table of `size` rows (a power of two), every row EMPTY.

    Allocated by numpy, not in compiled code: numpy asks the kernel for transparent huge pages
    on large arrays (madvise), so filling 64 MB takes ~550 page faults and 9 ms here, against
    ~16,400 faults and 35 ms for numba's own allocation, when that memory was used before; on
    a VM, memory the process never touched takes ~145 ms more (kernel/prepared.py)."""
    return np.full((size, WIDTH), EMPTY, np.int64)


def rebuild(
    table: np.ndarray, heads: np.ndarray, reached: np.ndarray, size: int, fresh: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A new table of `size` rows holding the live rows (see `_live`); returns it and its meta.
    `fresh`: the empty_table(size) to fill, made ahead (the store prepares the next one)."""
    if fresh is None:
        fresh = empty_table(size)
    meta = np.zeros(1, np.int64)
    _copy_live(table, heads, reached, fresh, meta)
    return fresh, meta


@numba.njit(cache=True)
def _copy_live(  # type: ignore[no-untyped-def]
    table: np.ndarray, heads: np.ndarray, reached: np.ndarray, fresh: np.ndarray, meta: np.ndarray
):
    """Add the live rows of `table` to the empty `fresh`, read in table order (sequentially,
    not chain by chain). Each key is new there and no row is DEAD, so a row goes to the first
    empty one of its probe, as find_or_add would put it, without find_or_add's comparisons
    (half of a rebuild's time: 24 against 45-54 ms for 0.8 M rows)."""
    fields = heads.shape[1]
    heads[:, :] = -1
    if reached.shape[0] == 0:  # (no key yet: _live reads key 0's reach)
        return
    mask = len(fresh) - 1
    used = 0
    for h in range(len(table)):
        if _live(table, h, fields, reached):
            key = table[h, KEY]
            slot, field = split_pair(key >> 32, fields)
            row = first_probe(fresh, key)
            while fresh[row, KEY] != EMPTY:
                row = (row + 1) & mask
            fresh[row, KEY] = key
            fresh[row, SETTLED] = table[h, SETTLED]
            fresh[row, COMPLETE] = table[h, COMPLETE]
            fresh[row, NEXT] = heads[slot, field]
            heads[slot, field] = row
            used += 1
    meta[0] = used


@numba.njit(cache=True)
def live_entries(  # type: ignore[no-untyped-def]
    table: np.ndarray,
    heads: np.ndarray,
    slots: np.ndarray,
    reached: np.ndarray,
):
    """(row in `slots`, field, value id, latest settled time) of the settled values some feature
    still reaches (for snapshots), in the order of `slots`, then field, then value id, so that
    equal states give equal snapshots whatever the table's history."""
    count = 0
    for r in range(len(slots)):
        slot = slots[r]
        for field in range(heads.shape[1]):
            h = heads[slot, field]
            while h != -1:
                settled = table[h, SETTLED]
                if settled != NO_TIME and settled >= reached[slot, field, 0]:
                    count += 1
                h = table[h, NEXT]
    rows = np.empty(count, np.int64)
    fs = np.empty(count, np.int64)
    vids = np.empty(count, np.int64)
    times = np.empty(count, np.int64)
    n = 0
    for r in range(len(slots)):
        slot = slots[r]
        for field in range(heads.shape[1]):
            start = n
            h = heads[slot, field]
            while h != -1:
                settled = table[h, SETTLED]
                if settled != NO_TIME and settled >= reached[slot, field, 0]:
                    rows[n] = r
                    fs[n] = field
                    vids[n] = table[h, KEY] & 0xFFFFFFFF
                    times[n] = table[h, SETTLED]
                    n += 1
                h = table[h, NEXT]
            order = np.argsort(vids[start:n])
            vids[start:n] = vids[start:n][order]
            times[start:n] = times[start:n][order]
    return rows, fs, vids, times


@numba.njit(cache=True)
def scan_live_entries(  # type: ignore[no-untyped-def]
    table: np.ndarray,
    heads: np.ndarray,
    slots: np.ndarray,
    reached: np.ndarray,
):
    """live_entries by one sequential pass over the whole table instead of walking each key's
    rows: the walk misses the cache at nearly every row (~145 ns per row of a 2 M-row table),
    the pass reads memory in order, so it wins when `slots` hold a fair share of the table's
    keys (snapshot.take chooses). Same output, in the same order: the rows are placed per key
    (a counting sort by position in `slots`), then each key's sorted by (field, value id)."""
    fields = heads.shape[1]
    position = np.full(len(heads), -1, np.int64)
    for r in range(len(slots)):
        position[slots[r]] = r
    starts = np.zeros(len(slots) + 1, np.int64)
    for h in range(len(table)):
        key = table[h, KEY]
        if key < 0:
            continue
        slot, field = split_pair(key >> 32, fields)
        settled = table[h, SETTLED]
        if position[slot] >= 0 and settled != NO_TIME and settled >= reached[slot, field, 0]:
            starts[position[slot] + 1] += 1
    for r in range(len(slots)):
        starts[r + 1] += starts[r]
    count = starts[len(slots)]
    order_keys = np.empty(count, np.int64)  # (field << 32) | value id, per key
    times = np.empty(count, np.int64)
    fill = starts[:-1].copy()
    for h in range(len(table)):
        key = table[h, KEY]
        if key < 0:
            continue
        slot, field = split_pair(key >> 32, fields)
        settled = table[h, SETTLED]
        if position[slot] >= 0 and settled != NO_TIME and settled >= reached[slot, field, 0]:
            at = fill[position[slot]]
            fill[position[slot]] += 1
            order_keys[at] = (field << 32) | (key & 0xFFFFFFFF)
            times[at] = settled
    rows = np.empty(count, np.int64)
    for r in range(len(slots)):
        start, end = starts[r], starts[r + 1]
        rows[start:end] = r
        if end - start > 1:
            order = np.argsort(order_keys[start:end])
            order_keys[start:end] = order_keys[start:end][order]
            times[start:end] = times[start:end][order]
    return rows, order_keys >> 32, order_keys & 0xFFFFFFFF, times


@numba.njit(cache=True)
def insert_entries(
    table: np.ndarray,
    heads: np.ndarray,
    meta: np.ndarray,
    slots: np.ndarray,
    fs: np.ndarray,
    vids: np.ndarray,
    times: np.ndarray,
    fields: int,
) -> None:
    """Put values with their latest settled times (as live_entries lists them) into keys; the
    caller reserved room. A value listed twice keeps its latest time."""
    for i in range(len(slots)):
        row = find_or_add(table, heads, meta, slots[i], fs[i], packed(slots[i], fs[i], fields, vids[i]))
        if times[i] > table[row, SETTLED]:
            table[row, SETTLED] = times[i]
