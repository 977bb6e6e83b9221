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
from streamfs.engine.kernel.fixed import DIGITS
from streamfs.engine.kernel.run import rows_of_columns
from streamfs.engine.kernel.store import KernelStore
from streamfs.engine.serving import ServingColumns, ServingState, is_plain, serving_state
from streamfs.engine.state import Key


@numba.njit(cache=True)
def step_rows(
    slots: np.ndarray,
    lateness: int,
    state: tuple,  # type: ignore[type-arg]
    distinct: tuple,  # type: ignore[type-arg]
    buffer: tuple,  # type: ignore[type-arg]
    groups: np.ndarray,
    ops: np.ndarray,
    readers: np.ndarray,
    distinct_features: int,
    out_int: np.ndarray,
    out_float: np.ndarray,
    starts: np.ndarray,
    steps: np.ndarray,
    exact: np.ndarray,
    region: np.ndarray,
    complete: tuple,  # type: ignore[type-arg]
    cvalid: np.ndarray,
) -> None:
    """Each slot's step rows, slot by slot, each group's rows in its own region: group g's rows
    are written from row region[g] on, key after key, so they are contiguous. Row r holds the
    group's values from starts[r] on (its other columns are unused); steps[s, g] how many rows
    slot s's group g has. A slot < 0 (no such key) or without an accepted event has none.
    exact[s] is 0 where a value cannot be given exactly (the caller uses the Python engine for
    that key).

    With allowed lateness a key's complete tiles (every accepted event settled, valid where
    cvalid) are read instead of its settled tiles plus its buffer: a hot key's buffer holds a
    lateness' worth of events, and every read walked it (count_distinct twice over)."""
    maxt = state[0]
    btime, bnext, bhead = buffer[0], buffer[2], buffer[5]
    scratch = np.zeros(2 * DIGITS + 4, np.int64)
    window = np.zeros(state[6].shape[1], np.int64)
    leaving = np.zeros(int(groups[:, 1].max()) + 2 if groups.shape[0] else 1, np.bool_)
    next_row = region.copy()
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
        tids = tiles[2]
        watermark = newest - lateness if use_buffer else newest  # (what the tiles settled up to)
        for g in range(groups.shape[0]):
            hop, ring, tid_off = groups[g, 0], groups[g, 1], groups[g, 2]
            r = next_row[g]
            first_row = r
            if not batch._read(
                slot, newest, watermark, tiles, distinct, buffer, groups, ops, readers,
                distinct_features, window, scratch, out_int, out_float, r, use_buffer, g,
            ):  # fmt: skip
                exact[s] = 0
            starts[r] = newest
            r += 1
            if hop:
                base = newest // hop
                leaving[: ring + 1] = False
                for position in range(ring):  # tile base + k - ring leaves the window at b_k
                    tile = tids[slot, tid_off + position]
                    if tile != batch.EMPTY_TILE and base - ring < tile <= base:
                        leaving[tile - base + ring] = True
                e = bhead[slot] if use_buffer else -1
                while e != -1:
                    tile = btime[e] // hop
                    if base - ring < tile <= base:
                        leaving[tile - base + ring] = True
                    e = bnext[e]
                for k in range(1, ring + 1):
                    if not leaving[k]:
                        continue  # the same tiles and events as the window at b_(k-1)
                    if not batch._read(
                        slot, (base + k) * hop, watermark, tiles, distinct, buffer, groups, ops,
                        readers, distinct_features, window, scratch, out_int, out_float, r, use_buffer, g,
                    ):  # fmt: skip
                        exact[s] = 0
                    if not _same(readers, g, out_int, out_float, r, r - 1):
                        starts[r] = (base + k) * hop
                        r += 1
            steps[s, g] = r - first_row
            next_row[g] = r


@numba.njit(cache=True)
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
    out_int = np.zeros((capacity, layout.features), np.int64)  # (_same reads both of a column)
    out_float = np.zeros((capacity, layout.features), np.float64)
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
        store.distinct_features,
        out_int,
        out_float,
        starts,
        steps,
        exact,
        region,
        store.complete,
        store.cvalid,
    )
    found = slot_array >= 0
    maxt = np.full(count, batch.UNSEEN, np.int64)
    maxt[found] = store.maxt[slot_array[found]]
    seqs = np.zeros(count, np.int64)
    seqs[found] = store.seq[slot_array[found]]
    totals = steps.sum(axis=0).tolist()
    names = store.compiled.view.feature_names
    bad_row = np.zeros(capacity, np.bool_)
    group_starts: list[tuple[int, ...]] = []
    group_rows: list[tuple[tuple[Any, ...], ...]] = []
    for g, group in enumerate(store.compiled.group_features):
        rows = slice(int(region[g]), int(region[g]) + totals[g])
        columns = [names.index(name) for name in group]
        _mark_unplain(store, out_int[rows], out_float[rows], columns, bad_row[rows])
        group_starts.append(tuple(starts[rows].tolist()))  # (tuples: their slices are the steps' tuples)
        group_rows.append(tuple(rows_of_columns(store, out_int[rows], out_float[rows], columns)))
    firsts = np.cumsum(steps, axis=0) - steps  # key i's first row of group g, within the group
    plain = np.ones(count, np.bool_)
    if bad_row.any():  # the keys those rows belong to
        for g in range(group_count):
            owner = np.repeat(np.arange(count), steps[:, g])
            bad = bad_row[int(region[g]) : int(region[g]) + totals[g]]
            plain[owner[bad]] = False
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
        group_starts=group_starts,
        group_rows=group_rows,
        plain=plain.tolist(),
        states=states,
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
