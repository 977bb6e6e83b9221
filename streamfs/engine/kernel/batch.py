"""One micro-batch through the compiled kernel: accept, settle or buffer, expire, read, event by event.

The same state model as the Python engine (see engine/__init__.py), over arrays. Per key (a
*slot*) and window group, a ring of L/H *settled* tiles (tile i at position i mod L/H) covering
the tiles the window at the key's watermark w = newest - allowed lateness can still reach, the
running total of the ring's additive cells (counts, exact sums, per-tile distinct counts), and
a *buffer* of the accepted events after w (a linked list in time order, in a shared pool). An
event at or before w settles into its tile at once; later ones wait in the buffer until w
passes them (the buffer's front). With allowed lateness 0 the buffer stays empty and each
event settles on arrival.

An event's row is the window [start(t), t] at its own time t ≥ w: the ring's total minus the
ring tiles older than first_tile(t) (at most lateness/H + 1 of them), plus the buffered events
in [start(t), t]; min and max scan the ring tiles in the window and those buffered events;
count_distinct adds the buffered values whose latest settled time is not already in the window.

Layout (layout.py): per group g, `groups[g]` = hop, ring, tid_off, i_off, ni, k_off, nk, f_off,
nf, tot_off: where g's ring starts in `tids` (tile index or EMPTY_TILE), `icell` (ni int cells per
tile), `kcell` (the k of each exact sum, for snapshots), `fcell` (min/max, NaN when none) and
`tot`. `ops` says what an event adds, `readers` what a row reads.

The kernel stops where it cannot be exact: a row whose int sum leaves int64 or whose mean has
2**31 values. It returns (events it ran, whether the last one's row must be recomputed): the
caller moves the view to the Python engine, which recomputes that row and runs the rest.
"""

from __future__ import annotations

import numba
import numpy as np

from streamfs.engine.kernel import distinct as table
from streamfs.engine.kernel.fixed import (
    DIGITS,
    SCALE,
    add_float,
    exponent_k,
    mean_float,
    normalize,
    to_float,
)
from streamfs.engine.kernel.prefetch import prefetch, prefetch_cells, prefetch_item
from streamfs.engine.kernel.unmanaged import unmanaged

UNSEEN = np.iinfo(np.int64).min
AHEAD = 2
"""process prefetches the state of the event this many events ahead (prefetch.py): memory
answers while the events before it run (~1 µs each); 2 measured better than 1, 3 and 8."""
SETTLING_AHEAD = 2
"""_prefetch_buffered looks at most this many buffered events ahead (an in-order stream
settles about one per event)."""
EMPTY_TILE = np.iinfo(np.int64).min
NOT_LOOKED_UP = -2
"""_settle's `found` scratch: the field's value was not looked up yet for this event."""
COMPLETE_AT = 8
"""Buffered events of a key at which its rows start reading complete tiles (kept up to date from
then on) instead of its settled tiles plus its buffer. Keeping them doubles a key's settling
and its count_distinct entries; it pays off only when the buffer is long enough that reading
it for every row costs more (a hot key: many events within the allowed lateness)."""

OP_EVENTS, OP_COUNT, OP_STATS, OP_INT_SUM, OP_MIN, OP_MAX, OP_DISTINCT, OP_LAST, OP_FIRST = range(9)
READ_N, READ_INT, READ_SUM, READ_MEAN, READ_MIN, READ_MAX, READ_DISTINCT, READ_LAST, READ_FIRST = range(9)
# ops rows: kind, group, column (input values, or ids for OP_DISTINCT), icell offset in the
# tile, kcell offset, fcell offset, distinct feature j.
# readers rows: kind, group, output column, icell offset (n for READ_MEAN), digits offset
# (READ_SUM/READ_MEAN), fcell offset (READ_MIN/MAX), input column (READ_MIN/MAX: values;
# READ_DISTINCT: ids), distinct feature j.
# OP_LAST/OP_FIRST keep (time, seq, value id) in kcell at koff (seq 0: none) and, for a number,
# the value in fcell at foff (-1 otherwise); `column` is the values column for a number, else
# the ids column. READ_LAST/READ_FIRST rows: kind, group, output column, kcell offset, 0, fcell
# offset (-1: an id), input column (values or ids), 0.
assert DIGITS == 7 and SCALE == 96  # _fits_int64 and int_value read digits 3-6 as the integer


@numba.njit(cache=True, inline="always")
def buffer_insert(
    btime: np.ndarray, bnext: np.ndarray, bhead: np.ndarray, btail: np.ndarray, slot: int, e: int
) -> None:
    """Link entry e into its key's buffer, which is in time order (equal times in the order
    they came): at the tail for an event in order (most are), else after the last entry not
    later than it. The watermark then settles the buffer from its head, walking only what
    it settles."""
    tail = btail[slot]
    t = btime[e]
    if tail == -1 or btime[tail] <= t:
        bnext[e] = -1
        if tail == -1:
            bhead[slot] = e
        else:
            bnext[tail] = e
        btail[slot] = e
        return
    previous = -1
    following = bhead[slot]
    while btime[following] <= t:  # (stops at the tail at the latest: it is later than t)
        previous = following
        following = bnext[following]
    bnext[e] = following
    if previous == -1:
        bhead[slot] = e
    else:
        bnext[previous] = e


@numba.njit(cache=True, inline="always")
def buffer_push(
    buffer: tuple,  # type: ignore[type-arg]
    slot: int,
    t: int,
    seq: int,
    values: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Buffer one event of a key (the caller reserved room): a pool entry off the free list,
    linked in at its place in time order."""
    btime, bseq, bnext, bvals, bids, bhead, bmeta, btail = buffer
    e = bmeta[0]
    bmeta[0] = bnext[e]  # pop the free list
    bmeta[1] -= 1
    btime[e] = t
    bseq[e] = seq
    for c in range(bvals.shape[1]):  # (element by element: a slice assignment may allocate)
        bvals[e, c] = values[c]
    for c in range(bids.shape[1]):
        bids[e, c] = ids[c]
    buffer_insert(btime, bnext, bhead, btail, slot, e)


@unmanaged
def buffer_push_all(
    buffer: tuple,  # type: ignore[type-arg]
    slots: np.ndarray,
    times: np.ndarray,
    seqs: np.ndarray,
    values: np.ndarray,
    ids: np.ndarray,
) -> None:
    """buffer_push each of these events, in order (restores: a key's events listed in buffer
    order go back in the same order)."""
    for i in range(len(slots)):
        buffer_push(buffer, slots[i], times[i], seqs[i], values[i], ids[i])


@numba.njit(cache=True, inline="always")
def buffered_at_least(bhead: np.ndarray, bnext: np.ndarray, slot: int, count: int) -> bool:
    """The key has at least `count` buffered events (walks at most `count` of them)."""
    e = bhead[slot]
    while e != -1 and count > 0:
        count -= 1
        e = bnext[e]
    return count <= 0


@numba.njit(cache=True, inline="always")
def _fits_int64(d: np.ndarray, at: int) -> bool:
    """The int sum in digits at `at` (digits 0-2, the fraction, are zero) has |value| < 2**62."""
    top = d[at + 6]
    if top == 0:
        return bool(d[at + 5] == 0 and d[at + 4] < (1 << 30))
    if top == -1:
        return bool(d[at + 5] == 0xFFFFFFFF and d[at + 4] >= (1 << 32) - (1 << 30))
    return False


@numba.njit(cache=True, inline="always")
def int_value(d: np.ndarray, at: int) -> int:
    """The int sum held in digits at `at` (when _fits_int64)."""
    high = d[at + 4] if d[at + 6] == 0 else d[at + 4] - (1 << 32)
    return int(d[at + 3] + (high << 32))


@numba.njit(cache=True, inline="always")
def beats(last: bool, time: int, seq: int, best_time: int, best_seq: int) -> bool:
    """Whether the event (time, seq) replaces the best one (seq 0: none yet) of a last (or a
    first): the greatest (or least) event time, ties broken by arrival order (seq)."""
    if best_seq == 0:
        return True
    if last:
        return time > best_time or (time == best_time and seq > best_seq)
    return time < best_time or (time == best_time and seq < best_seq)


@numba.njit(cache=True, inline="always")
def extreme(smallest: bool, x: float, best: float) -> float:
    """min (or max) of the best so far and x, NaN (None) on either side ignored."""
    if x == x and (best != best or (x < best if smallest else x > best)):
        return x
    return best


@numba.njit(cache=True, inline="always")
def read_additive(
    kind: int,
    window: np.ndarray,
    cells: int,
    digits: int,
    scratch: np.ndarray,
    out_int: np.ndarray,
    out_float: np.ndarray,
    i: int,
    column: int,
) -> bool:
    """Row i's value of a count, int sum, float sum or mean from its window cells (at `cells`,
    its exact sum at `digits`). False where it cannot be given exactly here (an int sum beyond
    int64, a mean over 2**31 values)."""
    if kind == READ_N:
        out_int[i, column] = window[cells]
    elif kind == READ_INT:
        if not _fits_int64(window, cells):
            return False
        out_int[i, column] = int_value(window, cells)
    elif kind == READ_SUM:
        out_float[i, column] = to_float(window, digits, scratch)
    else:  # READ_MEAN
        n = window[cells]
        if n >= (1 << 31):
            return False
        out_float[i, column] = mean_float(window, digits, n, scratch) if n else np.nan
    return True


@numba.njit(cache=True, inline="always")  # (small, and called per expired group: a call cost more)
def normalize_sums(ops: np.ndarray, g: int, cells: np.ndarray, at: int) -> None:
    """Propagate the carries of group g's exact sums in cells[at:] (after digit-wise +/-)."""
    for o in range(ops.shape[0]):
        if ops[o, 1] == g and ops[o, 0] == OP_STATS:
            normalize(cells, at + ops[o, 3] + 1)
        elif ops[o, 1] == g and ops[o, 0] == OP_INT_SUM:
            normalize(cells, at + ops[o, 3])


@unmanaged
def _expire(
    slot: int,
    before: int,
    watermark: int,
    state: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
) -> None:
    """Drop the ring tiles older than the first tile the window at the watermark reaches.

    `before` is the watermark the key's tiles were last expired at (UNSEEN: never): no ring
    tile is older than the first tile at `before` (none older was kept or settled since), so
    only the tiles from that one up to the new first can be dropped, and only their ring
    positions are looked at (a sparse key's 1 h ring of 5 min tiles: ~3 of 13); a group whose
    first tile is the same at both has nothing to drop, as for most events of a busy key."""
    tids, icell, tot = state[2], state[3], state[6]
    for g in range(groups.shape[0]):
        hop = groups[g, 0]
        if hop == 0 or (before != UNSEEN and before // hop == watermark // hop):
            continue
        ring, tid_off, i_off, ni, tot_off = (
            groups[g, 1],
            groups[g, 2],
            groups[g, 3],
            groups[g, 4],
            groups[g, 9],
        )
        first = watermark // hop - (ring - 1)
        old_first = before // hop - (ring - 1) if before != UNSEEN else first - ring
        expired = False
        for position in range(max(old_first, first - ring), first):
            r = position % ring
            tile = tids[slot, tid_off + r]
            if tile != EMPTY_TILE and tile < first:
                base = i_off + r * ni
                for c in range(ni):
                    tot[slot, tot_off + c] -= icell[slot, base + c]
                tids[slot, tid_off + r] = EMPTY_TILE
                expired = True
        if expired:
            normalize_sums(ops, g, tot[slot], tot_off)


@unmanaged
def _settle(  # type: ignore[no-untyped-def]
    slot: int,
    t: int,
    event_seq: int,
    watermark: int,
    row: np.ndarray,
    row_ids: np.ndarray,
    state: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
    fields: int,
    which: int,
    places: np.ndarray,
    found: np.ndarray,
):
    """Add an event at or before the watermark to its settled tile (and the ring's total) in
    every group whose ring still reaches its tile. (The complete tiles use this too, with the
    newest time as the watermark and `which` = table.COMPLETE: the count_distinct times of the
    complete tiles.) `places` is scratch: per group, the event's tile, the ring's first tile and
    the tile's ring position (-1: unreachable), worked out once for all of the group's ops;
    `found` too: per field, the value's table row (looked up once for all of the field's
    count_distinct features) and its time before this event."""
    _maxt, _seq, tids, icell, kcell, fcell, tot = state
    dtable, heads, meta = distinct
    for o in range(ops.shape[0]):
        if ops[o, 0] == OP_DISTINCT:
            found[ops[o, 2], 0] = NOT_LOOKED_UP
    for g in range(groups.shape[0]):
        hop, ring, tid_off, i_off, ni = groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3], groups[g, 4]
        k_off, nk, f_off, nf = groups[g, 5], groups[g, 6], groups[g, 7], groups[g, 8]
        current = t // hop if hop else 0
        first = watermark // hop - (ring - 1) if hop else 0
        places[g, 0] = current
        places[g, 1] = first
        if hop and current < first:
            places[g, 2] = -1
            continue  # unreachable by any later window
        r = current % ring
        places[g, 2] = r
        if tids[slot, tid_off + r] != current:
            tids[slot, tid_off + r] = current
            base = i_off + r * ni
            for c in range(ni):
                icell[slot, base + c] = 0
            for c in range(nk):
                kcell[slot, k_off + r * nk + c] = 0
            for c in range(nf):
                fcell[slot, f_off + r * nf + c] = np.nan
    for o in range(ops.shape[0]):
        kind, g, column, ioff, koff, foff = ops[o, 0], ops[o, 1], ops[o, 2], ops[o, 3], ops[o, 4], ops[o, 5]
        r = places[g, 2]
        if r < 0:
            continue
        current, first = places[g, 0], places[g, 1]
        hop, ring, i_off, ni = groups[g, 0], groups[g, 1], groups[g, 3], groups[g, 4]
        k_off, nk, f_off, nf, tot_off = groups[g, 5], groups[g, 6], groups[g, 7], groups[g, 8], groups[g, 9]
        cell = i_off + r * ni + ioff
        if kind == OP_EVENTS:
            icell[slot, cell] += 1
            tot[slot, tot_off + ioff] += 1
            continue
        if kind in (OP_LAST, OP_FIRST):
            if foff >= 0:
                x = row[column]
                if x != x:
                    continue
                vid = -1
            else:
                x = np.nan
                vid = row_ids[column]
                if vid < 0:
                    continue
            kat = k_off + r * nk + koff
            if beats(kind == OP_LAST, t, event_seq, kcell[slot, kat], kcell[slot, kat + 1]):
                kcell[slot, kat] = t
                kcell[slot, kat + 1] = event_seq
                kcell[slot, kat + 2] = vid
                if foff >= 0:
                    fcell[slot, f_off + r * nf + foff] = x
            continue
        if kind == OP_DISTINCT:  # (column: the field, the ids column of the values)
            if found[column, 0] == NOT_LOOKED_UP:
                vid = row_ids[column]
                if vid < 0:
                    found[column, 0] = -1
                else:
                    h = table.find_or_add(
                        dtable, heads, meta, slot, column, table.packed(slot, column, fields, vid)
                    )
                    found[column, 0] = h
                    found[column, 1] = dtable[h, which]
            if found[column, 0] < 0:
                continue
            previous = found[column, 1]
            if previous >= t:
                continue
            if previous != table.NO_TIME:
                old = previous // hop if hop else 0
                if old == current:
                    continue
                if old >= first:  # still in the ring: it moves tiles
                    icell[slot, i_off + (old % ring) * ni + ioff] -= 1
                    icell[slot, cell] += 1
                    continue
            # new, or its time had left the ring: it counts again
            icell[slot, cell] += 1
            tot[slot, tot_off + ioff] += 1
            continue
        x = row[column]
        if x != x:
            continue
        if kind == OP_COUNT:
            icell[slot, cell] += 1
            tot[slot, tot_off + ioff] += 1
        elif kind == OP_STATS:
            icell[slot, cell] += 1
            tot[slot, tot_off + ioff] += 1
            add_float(icell[slot], cell + 1, x, 1)
            add_float(tot[slot], tot_off + ioff + 1, x, 1)
            kat = k_off + r * nk + koff
            k = exponent_k(x)
            if k > kcell[slot, kat]:
                kcell[slot, kat] = k
        elif kind == OP_INT_SUM:
            add_float(icell[slot], cell, x, 1)
            add_float(tot[slot], tot_off + ioff, x, 1)
        elif kind == OP_MIN:
            at = f_off + r * nf + foff
            if not fcell[slot, at] <= x:
                fcell[slot, at] = x
        else:  # OP_MAX
            at = f_off + r * nf + foff
            if not fcell[slot, at] >= x:
                fcell[slot, at] = x
    for o in range(ops.shape[0]):  # the values' latest times, once every feature has read them
        if ops[o, 0] == OP_DISTINCT:
            h = found[ops[o, 2], 0]
            if h >= 0 and t > dtable[h, which]:
                dtable[h, which] = t


@unmanaged
def _read(
    slot: int,
    t: int,
    watermark: int,
    state: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
    readers: np.ndarray,
    fields: int,
    window: np.ndarray,
    scratch: np.ndarray,
    out_int: np.ndarray,
    out_float: np.ndarray,
    i: int,
    use_buffer: bool,
    only_group: int = -1,
) -> bool:
    """Row i: every feature over the window at t (t ≥ watermark), or only group `only_group`'s
    (the other columns of row i are left as they were). False if a value cannot be given exactly
    here (an int sum beyond int64, a mean over 2**31 values)."""
    tids, icell, kcell, fcell, tot = state[2], state[3], state[4], state[5], state[6]
    dtable = distinct[0]
    btime, bseq, bnext, bvals, bids, bhead = buffer[0], buffer[1], buffer[2], buffer[3], buffer[4], buffer[5]
    width = tot.shape[1]
    for c in range(width):
        window[c] = tot[slot, c]
    for g in range(groups.shape[0]):
        if only_group >= 0 and g != only_group:
            continue
        hop, ring, tid_off, i_off, ni, tot_off = (
            groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3], groups[g, 4], groups[g, 9]
        )  # fmt: skip
        if hop == 0:
            first = 0
            start = UNSEEN
        else:
            first = t // hop - (ring - 1)
            start = first * hop
        changed = False
        if hop and first > watermark // hop - (ring - 1):  # ring tiles before the window at t
            for r in range(ring):
                tile = tids[slot, tid_off + r]
                if tile != EMPTY_TILE and tile < first:
                    base = i_off + r * ni
                    for c in range(ni):
                        window[tot_off + c] -= icell[slot, base + c]
                    changed = True
        e = bhead[slot] if use_buffer else -1
        while e != -1:  # buffered events in [start, t]
            bt = btime[e]
            if start <= bt <= t:
                changed = True
                for o in range(ops.shape[0]):
                    if ops[o, 1] != g:
                        continue
                    kind, column, ioff = ops[o, 0], ops[o, 2], ops[o, 3]
                    if kind == OP_EVENTS:
                        window[tot_off + ioff] += 1
                        continue
                    if kind in (OP_DISTINCT, OP_MIN, OP_MAX, OP_LAST, OP_FIRST):
                        continue  # read below
                    x = bvals[e, column]
                    if x != x:
                        continue
                    if kind == OP_COUNT:
                        window[tot_off + ioff] += 1
                    elif kind == OP_STATS:
                        window[tot_off + ioff] += 1
                        add_float(window, tot_off + ioff + 1, x, 1)
                    else:  # OP_INT_SUM
                        add_float(window, tot_off + ioff, x, 1)
            e = bnext[e]
        if changed:
            normalize_sums(ops, g, window, tot_off)
    for q in range(readers.shape[0]):
        kind, g, column, ioff, doff, foff, source = (
            readers[q, 0], readers[q, 1], readers[q, 2], readers[q, 3], readers[q, 4], readers[q, 5],
            readers[q, 6],
        )  # fmt: skip
        if only_group >= 0 and g != only_group:
            continue
        tot_off = groups[g, 9]
        if kind in (READ_N, READ_INT, READ_SUM, READ_MEAN):
            if not read_additive(
                kind, window, tot_off + ioff, tot_off + doff, scratch, out_int, out_float, i, column
            ):
                return False
        else:
            hop, ring, tid_off, f_off, nf = (
                groups[g, 0],
                groups[g, 1],
                groups[g, 2],
                groups[g, 7],
                groups[g, 8],
            )
            first = t // hop - (ring - 1) if hop else 0
            start = first * hop if hop else UNSEEN
            if kind in (READ_LAST, READ_FIRST):
                koff = ioff
                k_off, nk = groups[g, 5], groups[g, 6]
                best_time, best_seq, best_id, best_value = 0, 0, -1, np.nan
                for r in range(ring):
                    tile = tids[slot, tid_off + r]
                    if tile == EMPTY_TILE or tile < first:
                        continue
                    kat = k_off + r * nk + koff
                    cell_time, cell_seq = kcell[slot, kat], kcell[slot, kat + 1]
                    if cell_seq != 0 and beats(kind == READ_LAST, cell_time, cell_seq, best_time, best_seq):
                        best_time, best_seq = cell_time, cell_seq
                        best_id = kcell[slot, kat + 2]
                        best_value = fcell[slot, f_off + r * nf + foff] if foff >= 0 else np.nan
                e = bhead[slot] if use_buffer else -1
                while e != -1:
                    bt = btime[e]
                    if start <= bt <= t:
                        present = bvals[e, source] == bvals[e, source] if foff >= 0 else bids[e, source] >= 0
                        event_seq = bseq[e]
                        if present and beats(kind == READ_LAST, bt, event_seq, best_time, best_seq):
                            best_time, best_seq = bt, event_seq
                            if foff >= 0:
                                best_value = bvals[e, source]
                            else:
                                best_id = bids[e, source]
                    e = bnext[e]
                if foff >= 0:
                    out_float[i, column] = best_value if best_seq else np.nan
                else:
                    out_int[i, column] = best_id if best_seq else -1
                continue
            if kind == READ_DISTINCT:
                count = window[tot_off + ioff]
                e = bhead[slot] if use_buffer else -1
                while e != -1:
                    bt = btime[e]
                    vid = bids[e, source]
                    if start <= bt <= t and vid >= 0:
                        h = table.find(dtable, table.packed(slot, source, fields, vid))
                        settled = table.NO_TIME if h < 0 else dtable[h, table.SETTLED]
                        if settled == table.NO_TIME or settled < start:  # not already in the window's tiles
                            seen = False
                            other = bnext[e]  # counted once: at its last occurrence in the list
                            while other != -1:
                                if start <= btime[other] <= t and bids[other, source] == vid:
                                    seen = True
                                    break
                                other = bnext[other]
                            if not seen:
                                count += 1
                    e = bnext[e]
                out_int[i, column] = count
                continue
            best = np.nan
            for r in range(ring):
                tile = tids[slot, tid_off + r]
                if tile == EMPTY_TILE or tile < first:
                    continue
                best = extreme(kind == READ_MIN, fcell[slot, f_off + r * nf + foff], best)
            e = bhead[slot] if use_buffer else -1
            while e != -1:
                bt = btime[e]
                if start <= bt <= t:
                    best = extreme(kind == READ_MIN, bvals[e, source], best)
                e = bnext[e]
            out_float[i, column] = best
    return True


# The same three, compiled into process where every event goes: its settle (in order), its
# expiry and its row (one read, whichever tiles it reads). A call passes each array as a struct
# of 5-9 words, and these take 15-30 arrays: pushing them cost more than their work (perf:
# process itself, mostly pushes, was 25 % of a three-count view's time; inlined, that view went
# from 0.45-0.62 to 0.22-0.24 µs per event with 100 keys, the benchmark view from 2.7-2.9 to
# 2.0-2.5 µs with 10,000). Inlining them at every call site instead tripled the kernel's first
# compile (75 s to 246 s): the other sites (the buffer's and the complete tiles' settles, asks,
# serving) keep the calls.
_expire_inline = numba.njit(cache=True, inline="always")(_expire.py_func)  # type: ignore[attr-defined]
_settle_inline = numba.njit(cache=True, inline="always")(_settle.py_func)  # type: ignore[attr-defined]
_read_inline = numba.njit(cache=True, inline="always")(_read.py_func)  # type: ignore[attr-defined]


def loop_scratch(groups: np.ndarray, totals: int, fields: int) -> tuple[np.ndarray, ...]:
    """The scratch arrays process and serving.step_rows work in (they allocate nothing): an exact
    sum's digits, a window's totals (`totals` cells), each group's places for _settle, and each
    field's found row."""
    return (
        np.zeros(2 * DIGITS + 4, np.int64),
        np.zeros(totals, np.int64),
        np.zeros((groups.shape[0], 3), np.int64),
        np.full((fields, 2), NOT_LOOKED_UP, np.int64),
    )


@numba.njit(cache=True, inline="always")
def _prefetch_tiles(slot: int, t: int, tiles: tuple, groups: np.ndarray, whole_kcell: bool) -> None:  # type: ignore[type-arg]
    """The lines an event of `slot` at `t` touches in these tiles (settled or complete): the
    key's newest time, tile ids, totals and min/max cells (whole rows: reads scan the rings),
    and each group's tile for t. The kcell row is whole only where a last or first reads it
    (whole_kcell): otherwise only the current tile's cells are written, and each line asked for
    needlessly holds one of the few outstanding misses a core can have."""
    maxt, tids, icell, kcell, fcell, tot = tiles[0], tiles[2], tiles[3], tiles[4], tiles[5], tiles[6]
    prefetch_item(maxt, slot)
    prefetch_cells(tids, slot, 0, tids.shape[1])
    prefetch_cells(tot, slot, 0, tot.shape[1])
    prefetch_cells(fcell, slot, 0, fcell.shape[1])
    if whole_kcell:
        prefetch_cells(kcell, slot, 0, kcell.shape[1])
    for g in range(groups.shape[0]):
        hop, ring, i_off, ni = groups[g, 0], groups[g, 1], groups[g, 3], groups[g, 4]
        k_off, nk = groups[g, 5], groups[g, 6]
        r = (t // hop) % ring if hop else 0
        prefetch_cells(icell, slot, i_off + r * ni, ni)
        if nk and not whole_kcell:
            prefetch_cells(kcell, slot, k_off + r * nk, nk)


@numba.njit(cache=True, inline="always")
def _prefetch_expiring(slot: int, t: int, lateness: int, tiles: tuple, groups: np.ndarray) -> None:  # type: ignore[type-arg]
    """The cells of the tiles an event of `slot` at `t` will expire (_expire subtracts them from
    the running totals): tiles the window last reached but no longer will, long untouched, so
    each was a wait on memory (the loop's largest single one with 10,000 keys, perf 2026-12-07).
    Reads the key's newest time and tile ids, which _prefetch_tiles asked for events earlier."""
    maxt, tids, icell = tiles[0], tiles[2], tiles[3]
    before = maxt[slot]
    if before == UNSEEN or t <= before:
        return
    for g in range(groups.shape[0]):
        hop, ring, tid_off, i_off, ni = groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3], groups[g, 4]
        if hop == 0:
            continue
        old_first = (before - lateness) // hop - (ring - 1)
        new_first = min((t - lateness) // hop - (ring - 1), old_first + ring)
        for tile in range(old_first, new_first):
            r = tile % ring
            if tids[slot, tid_off + r] == tile:
                prefetch_cells(icell, slot, i_off + r * ni, ni)


@numba.njit(cache=True, inline="always")
def _prefetch_distinct_rows(
    slot: int,
    row_ids: np.ndarray,
    distinct: tuple,  # type: ignore[type-arg]
    ops: np.ndarray,
    fields: int,
) -> None:
    """For each count_distinct field of an event of `slot` with value ids `row_ids`: the line of
    the table row its value hashes to and the next one (a probe that passes the first row reads
    on, two rows per line), and the key's list head of the field (read when the value is new)."""
    dtable, heads = distinct[0], distinct[1]
    mask = len(dtable) - 1
    for o in range(ops.shape[0]):  # (a field under several features: the same lines again, free)
        if ops[o, 0] == OP_DISTINCT:
            column = ops[o, 2]
            vid = row_ids[column]
            if vid >= 0:
                h = table.first_probe(dtable, table.packed(slot, column, fields, vid))
                prefetch(dtable, h, 0)
                prefetch(dtable, ((h | 1) + 1) & mask, 0)
                prefetch(heads, slot, column)


@numba.njit(cache=True, inline="always")
def _prefetch_buffered(
    slot: int,
    t: int,
    lateness: int,
    state: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    cvalid: np.ndarray,
    ops: np.ndarray,
    groups: np.ndarray,
    fields: int,
    rows: bool,
) -> None:
    """What an event of `slot` at `t` will touch in the key's buffer, last touched when those
    events arrived (with 5 min of lateness, most of an in-order stream is buffered): the
    entries its watermark passes, which settle (at most SETTLING_AHEAD: their values, tiles
    and count_distinct rows), and, when its row reads the buffer (`rows`, and no complete
    tiles), the values and count_distinct rows of the first COMPLETE_AT entries, which the row
    reads. Reads the buffer's entries as it walks them: the event before asked for the head."""
    maxt, tids, icell = state[0], state[2], state[3]
    before = maxt[slot]
    moving = before != UNSEEN and t > before
    reads_buffer = rows and cvalid[slot] == 0
    if not moving and not reads_buffer:
        return
    btime, bnext, bvals, bids, bhead = buffer[0], buffer[2], buffer[3], buffer[4], buffer[5]
    watermark = t - lateness
    e = bhead[slot]
    for _ in range(COMPLETE_AT if reads_buffer else SETTLING_AHEAD):
        if e == -1:
            return
        bt = btime[e]
        settles = moving and bt <= watermark
        if not settles and not reads_buffer:
            return
        if bvals.shape[1]:
            prefetch_cells(bvals, e, 0, bvals.shape[1])
        if settles:
            for g in range(groups.shape[0]):
                hop, ring, tid_off = groups[g, 0], groups[g, 1], groups[g, 2]
                if hop == 0:
                    continue
                i_off, ni = groups[g, 3], groups[g, 4]
                r = (bt // hop) % ring
                if tids[slot, tid_off + r] == bt // hop:
                    prefetch_cells(icell, slot, i_off + r * ni, ni)
        _prefetch_distinct_rows(slot, bids[e], distinct, ops, fields)
        e = bnext[e]


@numba.njit(cache=True, inline="always")
def _prefetch_free(buffer: tuple) -> None:  # type: ignore[type-arg]
    """The buffer pool entries the next two pushes take off the free list (each an entry freed
    long ago, so its lines are cold): the head's were asked for one push earlier, when it was
    second, so reading its link here does not wait."""
    btime, bseq, bnext, bvals, bids, bmeta = buffer[0], buffer[1], buffer[2], buffer[3], buffer[4], buffer[6]
    e = bmeta[0]
    for _ in range(2):
        if e == -1:
            return
        prefetch_item(btime, e)
        prefetch_item(bseq, e)
        prefetch_item(bnext, e)
        if bvals.shape[1]:
            prefetch_cells(bvals, e, 0, bvals.shape[1])
        if bids.shape[1]:
            prefetch_cells(bids, e, 0, bids.shape[1])
        e = bnext[e]


@numba.njit(cache=True, inline="always")
def _prefetch_event(
    slot: int,
    t: int,
    row_ids: np.ndarray,
    lateness: int,
    state: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    complete: tuple,  # type: ignore[type-arg]
    cvalid: np.ndarray,
    ops: np.ndarray,
    groups: np.ndarray,
    fields: int,
    whole_kcell: bool,
) -> None:
    """Ask for what a later event will touch (prefetch.py): its key's settled tiles (and its
    complete tiles and buffer head with allowed lateness) and the count_distinct rows its
    values hash to. A hint only: nothing is read or written."""
    _prefetch_tiles(slot, t, state, groups, whole_kcell)
    if lateness:
        prefetch_item(cvalid, slot)
        prefetch_item(buffer[5], slot)  # bhead
        if cvalid[slot] != 0:
            _prefetch_tiles(slot, t, complete, groups, whole_kcell)
    _prefetch_distinct_rows(slot, row_ids, distinct, ops, fields)


@unmanaged
def process(  # type: ignore[no-untyped-def]
    slots: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    ids: np.ndarray,
    rows: bool,
    lateness: int,
    state: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
    readers: np.ndarray,
    fields: int,
    accepted: np.ndarray,
    newest: np.ndarray,
    out_int: np.ndarray,
    out_float: np.ndarray,
    asks: np.ndarray,
    ask_newest: np.ndarray,
    ask_int: np.ndarray,
    ask_float: np.ndarray,
    complete: tuple,  # type: ignore[type-arg]
    cvalid: np.ndarray,
    complete_at: int,
    scratch: np.ndarray,
    window: np.ndarray,
    places: np.ndarray,
    found: np.ndarray,
):
    """Run the events in order; returns (how many ran, whether the last one's row is missing,
    how many asks were answered).

    asks rows: (position, slot or -1, t, serve): answered after the first `position` events,
    as the window at max(t, newest) (serve: what the online store answers) or max(t, watermark)
    (evaluate), into row q of ask_int/ask_float, with the key's newest time (UNSEEN if none).
    scratch, window, places, found: loop_scratch's arrays (compiled without reference
    counting, this allocates nothing: see unmanaged.py)."""
    maxt, seq = state[0], state[1]
    btime, bseq, bnext, bvals, bids, bhead, bmeta, btail = buffer
    whole_kcell = False  # a last or first scans the kcell rows (else only current tiles are touched)
    for q in range(readers.shape[0]):
        if readers[q, 0] == READ_LAST or readers[q, 0] == READ_FIRST:
            whole_kcell = True
    q = 0
    for i in range(len(times) + 1):
        while q < asks.shape[0] and asks[q, 0] <= i:
            ask_slot = asks[q, 1]
            ask_newest[q] = UNSEEN if ask_slot < 0 else maxt[ask_slot]
            if ask_newest[q] != UNSEEN:
                mark = maxt[ask_slot] if asks[q, 3] else maxt[ask_slot] - lateness
                if not _read(
                    ask_slot, max(asks[q, 2], mark), maxt[ask_slot] - lateness, state, distinct, buffer,
                    groups, ops, readers, fields, window, scratch, ask_int, ask_float, q, True,
                ):  # fmt: skip
                    return i, False, q
            q += 1
        if i == len(times):
            break
        if i + AHEAD < len(times):
            _prefetch_event(
                slots[i + AHEAD], times[i + AHEAD], ids[i + AHEAD], lateness, state, distinct, buffer,
                complete, cvalid, ops, groups, fields, whole_kcell,
            )  # fmt: skip
        if i + 1 < len(times):
            _prefetch_expiring(slots[i + 1], times[i + 1], lateness, state, groups)
            if lateness:
                _prefetch_buffered(
                    slots[i + 1], times[i + 1], lateness, state, distinct, buffer, cvalid, ops, groups,
                    fields, rows,
                )  # fmt: skip
                _prefetch_free(buffer)
        slot = slots[i]
        t = times[i]
        newest[i] = maxt[slot]
        if maxt[slot] != UNSEEN and t < maxt[slot] - lateness:
            accepted[i] = 0
            continue
        accepted[i] = 1
        before = maxt[slot]
        moved = before == UNSEEN or t > before
        if moved:
            maxt[slot] = t
        seq[slot] += 1
        watermark = maxt[slot] - lateness
        if moved:
            expired_at = UNSEEN if before == UNSEEN else before - lateness
            _expire_inline(slot, expired_at, watermark, state, groups, ops)
        if t <= watermark:
            _settle_inline(
                slot, t, seq[slot], watermark, values[i], ids[i], state, distinct, groups, ops,
                fields, table.SETTLED, places, found,
            )  # fmt: skip
        else:  # into the buffer (the caller reserved room)
            buffer_push(buffer, slot, t, seq[slot], values[i], ids[i])
        if moved and lateness:  # settle what the watermark passed: the front of the buffer
            e = bhead[slot]
            while e != -1 and btime[e] <= watermark:
                following = bnext[e]
                _settle(
                    slot, btime[e], bseq[e], watermark, bvals[e], bids[e], state, distinct, groups, ops,
                    fields, table.SETTLED, places, found,
                )  # fmt: skip
                bnext[e] = bmeta[0]  # push onto the free list
                bmeta[0] = e
                bmeta[1] += 1
                e = following
            bhead[slot] = e
            if e == -1:
                btail[slot] = -1
        if not rows:
            cvalid[slot] = 0  # the complete tiles are rebuilt when a row needs them
            continue
        # The row: one (inlined) read, of the tiles the case needs.
        read_state, read_mark, read_buffer = state, watermark, False
        if lateness:
            if cvalid[slot] == 0:
                if buffered_at_least(bhead, bnext, slot, complete_at):  # (it holds this event already)
                    _rebuild_complete(
                        slot, state, complete, distinct, buffer, groups, ops, fields, places, found
                    )
                    cvalid[slot] = 1
            else:
                if moved:
                    _expire_inline(slot, before, maxt[slot], complete, groups, ops)
                _settle(
                    slot, t, seq[slot], maxt[slot], values[i], ids[i], complete, distinct, groups, ops,
                    fields, table.COMPLETE, places, found,
                )  # fmt: skip
            if cvalid[slot] != 0 and t >= maxt[slot]:  # the newest event: complete tiles hold its window
                read_state, read_mark = complete, t
            else:  # out of order, or a short buffer: the settled tiles and the buffer, the definition
                read_buffer = True
        ok = _read_inline(
            slot, t, read_mark, read_state, distinct, buffer, groups, ops, readers, fields,
            window, scratch, out_int, out_float, i, read_buffer,
        )  # fmt: skip
        if not ok:
            return i + 1, True, q
    return len(times), False, q


@unmanaged
def _rebuild_complete(  # type: ignore[no-untyped-def]
    slot: int,
    state: tuple,  # type: ignore[type-arg]
    complete: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
    fields: int,
    places: np.ndarray,
    found: np.ndarray,
):
    """A key's complete tiles from its settled tiles and its buffer (engine/ingest.py's
    _complete_from_settled): the settled tiles the window at the newest event reaches, the
    count_distinct values' settled times as their complete times, then every buffered event
    settled in."""
    maxt, tids, icell, kcell, fcell = state[0], state[2], state[3], state[4], state[5]
    ctids, cicell, ckcell, cfcell, ctot = complete[2], complete[3], complete[4], complete[5], complete[6]
    dtable, heads = distinct[0], distinct[1]
    btime, bseq, bnext, bvals, bids, bhead = buffer[0], buffer[1], buffer[2], buffer[3], buffer[4], buffer[5]
    newest = maxt[slot]
    for c in range(ctids.shape[1]):
        ctids[slot, c] = EMPTY_TILE
    for c in range(ctot.shape[1]):
        ctot[slot, c] = 0
    for g in range(groups.shape[0]):
        hop, ring, tid_off, i_off, ni = groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3], groups[g, 4]
        k_off, nk, f_off, nf, tot_off = groups[g, 5], groups[g, 6], groups[g, 7], groups[g, 8], groups[g, 9]
        first = newest // hop - (ring - 1) if hop else 0
        copied = False
        for r in range(ring):
            tile = tids[slot, tid_off + r]
            if tile == EMPTY_TILE or (hop and tile < first):
                continue
            ctids[slot, tid_off + r] = tile
            for c in range(i_off + r * ni, i_off + (r + 1) * ni):
                cicell[slot, c] = icell[slot, c]
            for c in range(ni):
                ctot[slot, tot_off + c] += icell[slot, i_off + r * ni + c]
            for c in range(k_off + r * nk, k_off + (r + 1) * nk):
                ckcell[slot, c] = kcell[slot, c]
            for c in range(f_off + r * nf, f_off + (r + 1) * nf):
                cfcell[slot, c] = fcell[slot, c]
            copied = True
        if copied:
            normalize_sums(ops, g, ctot[slot], tot_off)
    for field in range(heads.shape[1]):  # (a time the complete window no longer reaches
        h = heads[slot, field]  # reads as none there: see distinct.py)
        while h != -1:
            dtable[h, table.COMPLETE] = dtable[h, table.SETTLED]
            h = dtable[h, table.NEXT]
    e = bhead[slot]
    while e != -1:
        _settle(
            slot, btime[e], bseq[e], newest, bvals[e], bids[e], complete, distinct, groups, ops,
            fields, table.COMPLETE, places, found,
        )  # fmt: skip
        e = bnext[e]
