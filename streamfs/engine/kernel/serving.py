"""Serving states (engine/serving.py's step functions) read straight off the kernel's arrays.

The online store holds, per key and window group, the group's values from the key's newest
event on and the hop boundaries where they change. engine/serving.py computes them from a
KeyState; building a KeyState per changed key per Redis write cost more than all the rest of
the worker's work. Here the kernel reads the windows itself: for a group of hop H and L/H
tiles, the window at boundary b_k = (max_time // H + k)·H differs from the one at b_(k-1)
only if the tile leaving between them (max_time // H + k - L/H) holds something, so it reads
the window at max_time and at those boundaries, and keeps a step where the values change:
the same starts and values as the backward sweep of engine/serving.py, which is the definition
(tests/unit/test_engine_kernel.py compares the two). The result is columns (ServingColumns):
the online writer encodes them without a ServingState per key.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from streamfs.engine.kernel import batch
from streamfs.engine.kernel import distinct as table
from streamfs.engine.kernel.run import rows_of_columns
from streamfs.engine.kernel.store import KernelStore
from streamfs.engine.kernel.unmanaged import unmanaged
from streamfs.engine.serving import ServingColumns, ServingState, StepArrays, is_plain, serving_state
from streamfs.engine.state import Key

StepScratch = tuple[
    np.ndarray, np.ndarray, tuple[np.ndarray, ...], np.ndarray, np.ndarray,
    np.ndarray, np.ndarray, np.ndarray, np.ndarray,
]  # fmt: skip


def step_scratch(store: KernelStore) -> StepScratch:
    """step_rows' scratch (its arguments after settle_ops but next_row): batch.loop_scratch's
    arrays, one key's tiles folded (from the window at its newest event on, its buffer settled
    in), and each reader's suffix bests (min/max/last/first of the windows from tile lo + d on)."""
    groups, readers = store.layout.groups, store.layout.readers
    scratch, window, places, found = batch.loop_scratch(groups, store.tot.shape[1], store.fields)
    folded = (
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.empty((1, store.tids.shape[1]), np.int64),
        np.empty((1, store.icell.shape[1]), np.int64),
        np.empty((1, store.kcell.shape[1]), np.int64),
        np.empty((1, store.fcell.shape[1]), np.float64),
        np.zeros((1, store.tot.shape[1]), np.int64),
    )
    bests = (readers.shape[0], int(groups[:, 1].max()) + 1 if groups.shape[0] else 1)
    best_value = np.empty(bests, np.float64)
    best_time, best_seq, best_id = (np.empty(bests, np.int64) for _ in range(3))
    return (scratch, window, folded, places, found, best_value, best_time, best_seq, best_id)


@unmanaged
def step_rows(
    slots: np.ndarray,
    lateness: int,
    state: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
    readers: np.ndarray,
    fields: int,
    out_int: np.ndarray,
    out_float: np.ndarray,
    starts: np.ndarray,
    steps: np.ndarray,
    exact: np.ndarray,
    region: np.ndarray,
    complete: tuple,  # type: ignore[type-arg]
    cvalid: np.ndarray,
    settle_ops: np.ndarray,
    scratch: np.ndarray,
    window: np.ndarray,
    folded: tuple,  # type: ignore[type-arg]
    places: np.ndarray,
    found: np.ndarray,
    best_value: np.ndarray,
    best_time: np.ndarray,
    best_seq: np.ndarray,
    best_id: np.ndarray,
    next_row: np.ndarray,
) -> None:
    """Each slot's step rows, slot by slot, each group's rows in its own region: group g's rows
    are written from row region[g] on, key after key, so they are contiguous. Row r holds the
    group's values from starts[r] on (its other columns are unused); steps[s, g] how many rows
    slot s's group g has. A slot < 0 (no such key) or without an accepted event has none.
    exact[s] is 0 where a value cannot be given exactly (the caller uses the Python engine for
    that key). `settle_ops`: the ops without count_distinct's (see _fold). The rest is scratch
    (`step_scratch`: compiled without reference counting, this allocates nothing, unmanaged.py);
    next_row starts as a copy of region.

    With allowed lateness a key's complete tiles (every accepted event settled, valid where
    cvalid) are read instead of its settled tiles plus its buffer: a hot key's buffer holds a
    lateness' worth of events, and every read walked it (count_distinct twice over)."""
    maxt = state[0]
    windowed = False
    for g in range(groups.shape[0]):
        windowed = windowed or groups[g, 0] != 0
    for s in range(slots.shape[0]):
        slot = slots[s]
        if slot < 0:
            continue
        newest = maxt[slot]
        if newest == batch.UNSEEN:
            continue  # no accepted event: no serving state (its steps stay 0)
        exact[s] = 1
        use_buffer = lateness == 0 or cvalid[slot] == 0
        tiles = state if use_buffer else complete
        watermark = newest - lateness if use_buffer else newest  # (what the tiles settled up to)
        if windowed:
            _fold(slot, newest, use_buffer, tiles, buffer, distinct, groups, ops, settle_ops,
                  fields, folded, places, found)  # fmt: skip
        for g in range(groups.shape[0]):
            r = next_row[g]
            if groups[g, 0] == 0:  # a lifetime group: one step
                if not batch._read(
                    slot, newest, watermark, tiles, distinct, buffer, groups, ops, readers,
                    fields, window, scratch, out_int, out_float, r, use_buffer, g,
                ):  # fmt: skip
                    exact[s] = 0
                starts[r] = newest
                rows = 1
            else:
                rows = _group_steps(
                    g, newest, groups, ops, readers, window, scratch, out_int, out_float, starts, r,
                    folded, best_value, best_time, best_seq, best_id, exact, s,
                )  # fmt: skip
            steps[s, g] = rows
            next_row[g] = r + rows


@unmanaged
def _fold(  # type: ignore[no-untyped-def]
    slot: int,
    newest: int,
    use_buffer: bool,
    tiles: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
    settle_ops: np.ndarray,
    fields: int,
    folded: tuple,  # type: ignore[type-arg]
    places: np.ndarray,
    found: np.ndarray,
):
    """Copy a key's tiles that the window at its newest event reaches into `folded` (row 0)
    and settle its buffered events into the copies with batch._settle (every op but
    count_distinct's), then move each buffered count_distinct value to the tile of its latest
    time (from the tile of its latest settled time, when that one counts it): what its
    complete tiles would hold, read by _group_steps."""
    tids, icell, kcell, fcell = tiles[2], tiles[3], tiles[4], tiles[5]
    ftids, ficell, fkcell, ffcell = folded[2], folded[3], folded[4], folded[5]
    for c in range(icell.shape[1]):
        ficell[0, c] = icell[slot, c]
    for c in range(kcell.shape[1]):
        fkcell[0, c] = kcell[slot, c]
    for c in range(fcell.shape[1]):
        ffcell[0, c] = fcell[slot, c]
    for g in range(groups.shape[0]):
        hop, ring, tid_off = groups[g, 0], groups[g, 1], groups[g, 2]
        lo = newest // hop - ring + 1 if hop else 0
        for p in range(ring):
            tile = tids[slot, tid_off + p]
            ftids[0, tid_off + p] = batch.EMPTY_TILE if hop and tile < lo else tile
    if not use_buffer:
        return
    btime, bseq, bnext, bvals, bids, bhead = buffer[0], buffer[1], buffer[2], buffer[3], buffer[4], buffer[5]
    e = bhead[slot]
    while e != -1:
        batch._settle(
            0, btime[e], bseq[e], newest, bvals[e], bids[e], folded, distinct, groups, settle_ops,
            fields, table.SETTLED, places, found,
        )  # fmt: skip
        e = bnext[e]
    dtable = distinct[0]
    for o in range(ops.shape[0]):
        if ops[o, 0] != batch.OP_DISTINCT:
            continue
        g, column, ioff = ops[o, 1], ops[o, 2], ops[o, 3]
        hop, ring, tid_off, i_off, ni = groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3], groups[g, 4]
        if hop == 0:
            continue  # (a lifetime group is read by batch._read)
        lo = newest // hop - ring + 1
        e = bhead[slot]
        while e != -1:
            t, vid = btime[e], bids[e, column]
            current = t // hop
            if vid < 0 or current < lo:
                e = bnext[e]
                continue
            latest = True  # the value's latest buffered occurrence (the last in the list on ties)
            after = False
            other = bhead[slot]
            while other != -1:
                if other == e:
                    after = True
                elif bids[other, column] == vid and (btime[other] > t or (after and btime[other] == t)):
                    latest = False
                    break
                other = bnext[other]
            if latest:
                h = table.find(dtable, table.packed(slot, column, fields, vid))
                if h >= 0 and dtable[h, table.SETTLED] != table.NO_TIME:  # settled before (its time ≤
                    settled = dtable[h, table.SETTLED] // hop  # the watermark < t): counted there?
                    if settled >= lo and ftids[0, tid_off + settled % ring] == settled:
                        ficell[0, i_off + (settled % ring) * ni + ioff] -= 1
                ficell[0, i_off + (current % ring) * ni + ioff] += 1
            e = bnext[e]


@numba.njit(cache=True, inline="always")
def _group_steps(  # type: ignore[no-untyped-def]
    g: int,
    newest: int,
    groups: np.ndarray,
    ops: np.ndarray,
    readers: np.ndarray,
    window: np.ndarray,
    scratch: np.ndarray,
    out_int: np.ndarray,
    out_float: np.ndarray,
    starts: np.ndarray,
    r: int,
    folded: tuple,  # type: ignore[type-arg]
    best_value: np.ndarray,
    best_time: np.ndarray,
    best_seq: np.ndarray,
    best_id: np.ndarray,
    exact: np.ndarray,
    s: int,
):
    """Group g's steps of one key (its tiles folded by _fold) from row r on; returns how many.

    The windows from the newest event on start at tiles lo = newest // H - ring + 1, lo + 1,
    ... (the one at boundary b_k = (newest // H + k)·H starts at lo + k), and no event is ever
    added to them: each is the previous one without its oldest tile. So the additive cells are
    summed once and the leaving tile subtracted at each boundary where one leaves, and
    min/max/last/first are read off suffix bests: O(ring) per group, not the O(ring²) of
    reading every window from scratch. Exact sums are integers: subtracting gives the digits,
    and so the values, that summing the window's tiles anew gives."""
    hop, ring, tid_off, i_off, ni, tot_off = (
        groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3], groups[g, 4], groups[g, 9]
    )  # fmt: skip
    ftids, ficell = folded[2], folded[3]
    base = newest // hop
    lo = base - ring + 1
    for c in range(ni):
        window[tot_off + c] = 0
    for p in range(ring):
        if ftids[0, tid_off + p] != batch.EMPTY_TILE:
            for c in range(ni):
                window[tot_off + c] += ficell[0, i_off + p * ni + c]
    batch.normalize_sums(ops, g, window, tot_off)
    _suffix_bests(g, lo, ring, groups, readers, folded, best_value, best_time, best_seq, best_id)
    if not _emit(g, 0, window, readers, groups, scratch, out_int, out_float, r, best_value, best_time,
                 best_seq, best_id):  # fmt: skip
        exact[s] = 0
    starts[r] = newest
    first_row = r
    r += 1
    for k in range(1, ring + 1):
        leaving = lo + k - 1
        p = leaving % ring
        if ftids[0, tid_off + p] != leaving:
            continue  # nothing leaves: the same values as the window at b_(k-1)
        for c in range(ni):
            window[tot_off + c] -= ficell[0, i_off + p * ni + c]
        batch.normalize_sums(ops, g, window, tot_off)
        if not _emit(g, k, window, readers, groups, scratch, out_int, out_float, r, best_value, best_time,
                     best_seq, best_id):  # fmt: skip
            exact[s] = 0
        if not _same(readers, g, out_int, out_float, r, r - 1):
            starts[r] = (base + k) * hop
            r += 1
    return r - first_row


@numba.njit(cache=True, inline="always")
def _suffix_bests(  # type: ignore[no-untyped-def]
    g: int,
    lo: int,
    ring: int,
    groups: np.ndarray,
    readers: np.ndarray,
    folded: tuple,  # type: ignore[type-arg]
    best_value: np.ndarray,
    best_time: np.ndarray,
    best_seq: np.ndarray,
    best_id: np.ndarray,
):
    """For each min/max/last/first reader q of group g, its value over the tiles from lo + d on
    (d = 0 .. ring; d = ring: none), as batch._read combines tiles."""
    tid_off, k_off, nk, f_off, nf = groups[g, 2], groups[g, 5], groups[g, 6], groups[g, 7], groups[g, 8]
    ftids, fkcell, ffcell = folded[2], folded[4], folded[5]
    for q in range(readers.shape[0]):
        kind = readers[q, 0]
        if readers[q, 1] != g or kind not in (
            batch.READ_MIN,
            batch.READ_MAX,
            batch.READ_LAST,
            batch.READ_FIRST,
        ):
            continue
        koff, foff = readers[q, 3], readers[q, 5]
        value, time, seq, vid = np.nan, 0, 0, -1
        best_value[q, ring], best_time[q, ring], best_seq[q, ring], best_id[q, ring] = value, time, seq, vid
        for d in range(ring - 1, -1, -1):
            tile = lo + d
            p = tile % ring
            if ftids[0, tid_off + p] == tile:
                if kind == batch.READ_MIN or kind == batch.READ_MAX:
                    value = batch.extreme(kind == batch.READ_MIN, ffcell[0, f_off + p * nf + foff], value)
                else:
                    kat = k_off + p * nk + koff
                    cell_time, cell_seq = fkcell[0, kat], fkcell[0, kat + 1]
                    if cell_seq != 0 and batch.beats(kind == batch.READ_LAST, cell_time, cell_seq, time, seq):
                        time, seq, vid = cell_time, cell_seq, fkcell[0, kat + 2]
                        value = ffcell[0, f_off + p * nf + foff] if foff >= 0 else np.nan
            best_value[q, d], best_time[q, d], best_seq[q, d], best_id[q, d] = value, time, seq, vid


@numba.njit(cache=True, inline="always")
def _emit(
    g: int,
    d: int,
    window: np.ndarray,
    readers: np.ndarray,
    groups: np.ndarray,
    scratch: np.ndarray,
    out_int: np.ndarray,
    out_float: np.ndarray,
    i: int,
    best_value: np.ndarray,
    best_time: np.ndarray,
    best_seq: np.ndarray,
    best_id: np.ndarray,
) -> bool:
    """Row i's group g columns over the window from tile lo + d on: the additive ones from its
    cells in `window`, the rest from the suffix bests. False where batch._read is not exact."""
    ok = True
    tot_off = groups[g, 9]
    for q in range(readers.shape[0]):
        if readers[q, 1] != g:
            continue
        kind, column, ioff, doff, foff = (
            readers[q, 0],
            readers[q, 2],
            readers[q, 3],
            readers[q, 4],
            readers[q, 5],
        )
        if kind == batch.READ_DISTINCT:  # (its per-tile counts are additive: the buffer is folded in)
            out_int[i, column] = window[tot_off + ioff]
        elif kind in (batch.READ_N, batch.READ_INT, batch.READ_SUM, batch.READ_MEAN):
            if not batch.read_additive(
                kind, window, tot_off + ioff, tot_off + doff, scratch, out_int, out_float, i, column
            ):
                ok = False
        elif kind == batch.READ_MIN or kind == batch.READ_MAX:
            out_float[i, column] = best_value[q, d]
        elif foff >= 0:  # last/first of a number
            out_float[i, column] = best_value[q, d] if best_seq[q, d] else np.nan
        else:
            out_int[i, column] = best_id[q, d] if best_seq[q, d] else -1
    return ok


@numba.njit(cache=True, inline="always")
def _same(readers: np.ndarray, g: int, out_int: np.ndarray, out_float: np.ndarray, a: int, b: int) -> bool:
    """Whether rows a and b hold the same values in group g's columns (NaN, i.e. None, equals NaN)."""
    for q in range(readers.shape[0]):
        if readers[q, 1] != g:
            continue
        column = readers[q, 2]
        if out_int[a, column] != out_int[b, column]:
            return False
        x, y = out_float[a, column], out_float[b, column]
        if x != y and not (x != x and y != y):
            return False
    return True


def serving_columns(store: KernelStore, keys: list[Key], slots: list[int]) -> ServingColumns:
    """The serving states of (key, slot) pairs as columns (slot -1: no such key, state None),
    read off the arrays. Where the kernel cannot give a value exactly (an int sum beyond int64),
    the key's state comes from its KeyState by engine/serving.py."""
    layout = store.layout
    count = len(slots)
    group_hops = layout.groups[:, :2].tolist()
    group_count = len(group_hops)
    per_group = [int(ring) + 1 if hop else 1 for hop, ring in group_hops]
    region = np.zeros(group_count, np.int64)
    region[1:] = np.cumsum(np.asarray(per_group[:-1], np.int64) * count)
    capacity = count * sum(per_group)
    names = store.compiled.view.feature_names
    columns = [
        tuple(names.index(name) for name in group) for group in store.compiled.group_features
    ]  # fmt: skip
    # Column-major: each feature's steps are read back as one contiguous run (tolist), and only
    # the cells a group can write are zeroed (_same reads both arrays of a column; a row of a key
    # the kernel cannot give exactly may be left part-written). np.zeros of the whole (capacity
    # is an upper bound, mostly unused) cost ~1 ms per 1,000 keys of the payments view: from
    # the heap, calloc writes every zero.
    out_int = np.empty((capacity, layout.features), np.int64, order="F")
    out_float = np.empty((capacity, layout.features), np.float64, order="F")
    for g in range(group_count):
        rows = slice(int(region[g]), int(region[g]) + per_group[g] * count)
        for column in columns[g]:
            out_int[rows, column] = 0
            out_float[rows, column] = 0.0
    starts = np.empty(capacity, np.int64)
    steps = np.zeros((count, group_count), np.int64)
    exact = np.zeros(count, np.int8)
    slot_array = np.asarray(slots, dtype=np.int64)
    step_rows(
        slot_array,
        layout.lateness,
        store.state,
        store.distinct,
        store.buffer,
        layout.groups,
        layout.ops,
        layout.readers,
        store.fields,
        out_int,
        out_float,
        starts,
        steps,
        exact,
        region,
        store.complete,
        store.cvalid,
        layout.settle_ops,
        *step_scratch(store),
        region.copy(),
    )
    found = slot_array >= 0
    maxt = np.full(count, batch.UNSEEN, np.int64)
    maxt[found] = store.maxt[slot_array[found]]
    seqs = np.zeros(count, np.int64)
    seqs[found] = store.seq[slot_array[found]]
    totals = steps.sum(axis=0).tolist()
    bad_row = np.zeros(capacity, np.bool_)
    for g in range(group_count):
        rows = slice(int(region[g]), int(region[g]) + totals[g])
        _mark_unplain(store, out_int[rows], out_float[rows], list(columns[g]), bad_row[rows])
    plain = np.ones(count, np.bool_)
    if bad_row.any():  # the keys those rows belong to
        for g in range(group_count):
            owner = np.repeat(np.arange(count), steps[:, g])
            bad = bad_row[int(region[g]) : int(region[g]) + totals[g]]
            plain[owner[bad]] = False

    def python_rows() -> tuple[list[tuple[int, ...]], list[tuple[tuple[Any, ...], ...]]]:
        group_starts: list[tuple[int, ...]] = []
        group_rows: list[tuple[tuple[Any, ...], ...]] = []
        for g in range(group_count):
            rows = slice(int(region[g]), int(region[g]) + totals[g])
            group_starts.append(tuple(starts[rows].tolist()))  # (tuples: their slices are the steps' tuples)
            group_rows.append(tuple(rows_of_columns(store, out_int[rows], out_float[rows], columns[g])))
        return group_starts, group_rows

    kinds = _kinds(store, columns)
    arrays = None
    if kinds is not None:
        arrays = StepArrays(starts, out_int, out_float, region, steps, tuple(columns), kinds)
    firsts = np.cumsum(steps, axis=0) - steps  # key i's first row of group g, within the group
    states: dict[int, ServingState | None] = {}
    maxt_list = maxt.tolist()
    for index in np.flatnonzero((maxt == batch.UNSEEN) | (exact == 0)).tolist():
        unseen = maxt_list[index] == batch.UNSEEN
        states[index] = (
            None if unseen else serving_state(store.compiled, keys[index], store.key_state(slots[index]))
        )
    return ServingColumns(
        keys,
        max_times=maxt_list,
        events=seqs.tolist(),
        counts=steps.tolist(),
        group_first=firsts.tolist(),
        group_starts=None,
        group_rows=None,
        plain=plain.tolist(),
        states=states,
        arrays=arrays,
        rows_of_arrays=python_rows,
    )


def _kinds(store: KernelStore, columns: list[tuple[int, ...]]) -> bytes | None:
    """StepArrays.kinds of these group columns, or None if one holds interned values (ids)."""
    layout = store.layout
    if set(layout.id_valued_columns) & {c for group in columns for c in group}:
        return None
    ints, int_valued = set(layout.int_columns), set(layout.int_valued_columns)
    return bytes(
        b"i"[0] if c in ints else b"n"[0] if c in int_valued else b"f"[0] for group in columns for c in group
    )


def _mark_unplain(
    store: KernelStore, out_int: np.ndarray, out_float: np.ndarray, columns: list[int], bad: np.ndarray
) -> None:
    """Set bad[r] where row r of these columns holds a value JSON does not carry exactly
    (engine.serving.is_plain): a non-finite float where None is not meant, an interned value
    that is not a str, bool, finite float or 64-bit int."""
    layout = store.layout
    ints, ids = set(layout.int_columns), set(layout.id_valued_columns)
    none_for_nan = set(layout.nullable_columns) | set(layout.int_valued_columns)
    for column in columns:
        if column in ids:
            vids = out_int[:, column]
            used = np.unique(vids[vids >= 0]).tolist()
            odd = [vid for vid in used if not is_plain(store.id_values[vid])]
            if odd:
                bad |= np.isin(vids, odd)
        elif column not in ints:
            values = out_float[:, column]
            bad |= np.isinf(values) if column in none_for_nan else ~np.isfinite(values)


def serving_states(store: KernelStore, keys: list[Key], slots: list[int]) -> list[ServingState | None]:
    """The ServingState of each (key, slot) (see serving_columns)."""
    columns = serving_columns(store, keys, slots)
    return [columns.state(index) for index in range(len(keys))]
