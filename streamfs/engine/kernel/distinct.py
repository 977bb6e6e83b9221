"""count_distinct state of every key of a view, compiled: value → latest time, per key and feature.

One open-addressing index maps (slot, feature j, value id) to an entry of a pool; each entry holds
the value's latest settled time and links to the next entry of the same (slot, j), so one key's
values can be listed (snapshots, serving) without scanning the table. Entries are never removed
one by one: freed keys mark theirs dead, expired ones are just old, and `prune` rebuilds the pool
and table from the live entries when the pool fills. The tile a value's latest time falls in
counts it (see batch.py); this module only finds, adds and lists entries.
"""

from __future__ import annotations

import numba
import numpy as np

EMPTY = -1
DEAD = -1


@numba.njit(cache=True, inline="always")
def packed(slot: int, j: int, features: int, vid: int) -> int:
    return ((slot * features + j) << 32) | vid


@numba.njit(cache=True, inline="always")
def _mix(key: int) -> int:
    x = np.uint64(key)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return int(x & np.uint64(0x7FFFFFFFFFFFFFFF))


@numba.njit(cache=True, inline="always")
def find(index: np.ndarray, ekey: np.ndarray, key: int) -> int:
    """The entry of `key`, or -1. The index is one (size, 2) array of (key, entry) so that a
    probe touches one cache line, not one in each of two arrays."""
    mask = len(index) - 1
    h = _mix(key) & mask
    while index[h, 0] != EMPTY:
        if index[h, 0] == key and ekey[index[h, 1]] == key:
            return int(index[h, 1])
        h = (h + 1) & mask
    return -1


@numba.njit(cache=True, inline="always")
def insert(
    index: np.ndarray,
    ekey: np.ndarray,
    etime: np.ndarray,
    enext: np.ndarray,
    heads: np.ndarray,
    meta: np.ndarray,
    slot: int,
    j: int,
    key: int,
    time: int,
) -> None:
    """Add a new entry (the caller checked it is absent and the pool has room)."""
    e = meta[0]
    meta[0] = e + 1
    ekey[e] = key
    etime[e] = time
    enext[e] = heads[slot, j]
    heads[slot, j] = e
    mask = len(index) - 1
    h = _mix(key) & mask
    while index[h, 0] != EMPTY:
        h = (h + 1) & mask
    index[h, 0] = key
    index[h, 1] = e


@numba.njit(cache=True)
def kill_slot(ekey: np.ndarray, enext: np.ndarray, heads: np.ndarray, slot: int) -> None:
    """Mark every entry of a freed key dead (they never match again; prune drops them)."""
    for j in range(heads.shape[1]):
        e = heads[slot, j]
        while e != -1:
            ekey[e] = DEAD
            e = enext[e]
        heads[slot, j] = -1


@numba.njit(cache=True)
def list_slot(ekey: np.ndarray, etime: np.ndarray, enext: np.ndarray, heads: np.ndarray, slot: int, j: int):  # type: ignore[no-untyped-def]
    """(value ids, latest times) of one key's feature j, newest insertion first."""
    count = 0
    e = heads[slot, j]
    while e != -1:
        count += 1
        e = enext[e]
    vids = np.empty(count, np.int64)
    times = np.empty(count, np.int64)
    e = heads[slot, j]
    i = 0
    while e != -1:
        vids[i] = ekey[e] & 0xFFFFFFFF
        times[i] = etime[e]
        i += 1
        e = enext[e]
    return vids, times


@numba.njit(cache=True, inline="always")
def _live(key: int, time: int, features: int, maxt: np.ndarray, feature_hop: np.ndarray,
          feature_span: np.ndarray, feature_lateness: np.ndarray) -> bool:  # fmt: skip
    """Whether an entry is kept: not dead and, for windows with a hop, its latest time in a tile
    the window at its key's watermark still reaches (feature_lateness[j]: the complete tiles'
    entries follow the newest time, lateness 0). Slot and feature come from the packed key."""
    if key == DEAD:
        return False
    pair = key >> 32
    slot = pair // features
    j = pair - slot * features
    hop = feature_hop[j]
    if hop == 0:
        return True
    return bool(time // hop >= (maxt[slot] - feature_lateness[j]) // hop - feature_span[j])


@numba.njit(cache=True)
def count_live(
    ekey: np.ndarray,
    etime: np.ndarray,
    used: int,
    features: int,
    maxt: np.ndarray,
    feature_hop: np.ndarray,
    feature_span: np.ndarray,
    feature_lateness: np.ndarray,
) -> int:
    """How many of the first `used` pool entries `prune` would keep: one sequential pass, no
    rebuild, so deciding between compacting and growing costs a few ms, not a prune."""
    live = 0
    for e in range(used):
        if _live(ekey[e], etime[e], features, maxt, feature_hop, feature_span, feature_lateness):
            live += 1
    return live


@numba.njit(cache=True)
def prune(  # type: ignore[no-untyped-def]
    ekey: np.ndarray,
    etime: np.ndarray,
    used: int,
    heads: np.ndarray,
    maxt: np.ndarray,
    feature_hop: np.ndarray,
    feature_span: np.ndarray,
    feature_lateness: np.ndarray,
    capacity: int,
):
    """A new pool and table holding only the live entries (see `_live`). The pool is read in
    order, not chain by chain: every entry is reached without chasing links across memory, and
    each (slot, j) still lists its entries newest insertion first."""
    new_ekey = np.empty(capacity, np.int64)
    new_etime = np.empty(capacity, np.int64)
    new_enext = np.empty(capacity, np.int64)
    size = 1024
    while size < 2 * capacity:
        size *= 2
    index = np.full((size, 2), EMPTY, np.int64)
    meta = np.zeros(1, np.int64)
    features = heads.shape[1]
    heads[:, :] = -1
    for e in range(used):
        key = ekey[e]
        if _live(key, etime[e], features, maxt, feature_hop, feature_span, feature_lateness):
            pair = key >> 32
            slot = pair // features
            insert(
                index,
                new_ekey,
                new_etime,
                new_enext,
                heads,
                meta,
                slot,
                pair - slot * features,
                key,
                etime[e],
            )
    return new_ekey, new_etime, new_enext, index, meta


@numba.njit(cache=True)
def live_entries(  # type: ignore[no-untyped-def]
    ekey: np.ndarray,
    etime: np.ndarray,
    enext: np.ndarray,
    heads: np.ndarray,
    maxt: np.ndarray,
    slots: np.ndarray,
    features: int,
    feature_hop: np.ndarray,
    feature_span: np.ndarray,
    feature_lateness: np.ndarray,
):
    """(row in `slots`, j, value id, latest time) of the entries of features j < `features` that
    `prune` would keep, each (slot, j)'s newest insertion first (for snapshots)."""
    rows = np.empty(16, np.int64)
    js = np.empty(16, np.int64)
    vids = np.empty(16, np.int64)
    times = np.empty(16, np.int64)
    n = 0
    for r in range(len(slots)):
        slot = slots[r]
        for j in range(features):
            hop = feature_hop[j]
            first = 0
            if hop > 0:
                first = (maxt[slot] - feature_lateness[j]) // hop - feature_span[j]
            e = heads[slot, j]
            while e != -1:
                if ekey[e] != DEAD and (hop == 0 or etime[e] // hop >= first):
                    if n == len(rows):
                        rows = np.concatenate((rows, np.empty(n, np.int64)))
                        js = np.concatenate((js, np.empty(n, np.int64)))
                        vids = np.concatenate((vids, np.empty(n, np.int64)))
                        times = np.concatenate((times, np.empty(n, np.int64)))
                    rows[n] = r
                    js[n] = j
                    vids[n] = ekey[e] & 0xFFFFFFFF
                    times[n] = etime[e]
                    n += 1
                e = enext[e]
    return rows[:n].copy(), js[:n].copy(), vids[:n].copy(), times[:n].copy()


@numba.njit(cache=True)
def insert_entries(
    index: np.ndarray,
    ekey: np.ndarray,
    etime: np.ndarray,
    enext: np.ndarray,
    heads: np.ndarray,
    meta: np.ndarray,
    slots: np.ndarray,
    js: np.ndarray,
    vids: np.ndarray,
    times: np.ndarray,
    features: int,
) -> None:
    """Insert entries listed as live_entries lists them (into keys that hold none; the caller
    reserved room), last first, so each (slot, j) lists them in the same order again."""
    for i in range(len(slots) - 1, -1, -1):
        key = packed(slots[i], js[i], features, vids[i])
        insert(index, ekey, etime, enext, heads, meta, slots[i], js[i], key, times[i])
