"""Serving states (engine/serving.py's step functions) read straight off the kernel's arrays.

The online store holds, per key and window group, the group's values from the key's newest
event on and the hop boundaries where they change. engine/serving.py computes them from a
KeyState; building a KeyState per changed key per Redis write cost more than all the rest of
the worker's work. Here the kernel reads the windows itself: for a group of hop H and L/H
tiles, the window at boundary b_k = (max_time // H + k)·H differs from the one at b_(k-1)
only if the tile leaving between them (max_time // H + k - L/H) holds something, so it reads
the window at max_time and at those boundaries, and keeps a step where the values change:
the same starts and values as the backward sweep of engine/serving.py, which is the definition
(tests/unit/test_engine_kernel.py compares the two).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from streamfs.engine.kernel import batch
from streamfs.engine.kernel.fixed import DIGITS
from streamfs.engine.kernel.run import rows_of_columns
from streamfs.engine.kernel.store import KernelStore
from streamfs.engine.serving import GroupSteps, ServingState, serving_state
from streamfs.engine.state import Key


@numba.njit(cache=True)
def step_rows(  # type: ignore[no-untyped-def]
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
):
    """Each slot's step rows, slot by slot and group by group: row r holds the group's values
    from starts[r] on (its other columns are unused); steps[s, g] how many rows slot s's group
    g has. exact[s] is 0 where a value cannot be given exactly (the caller uses the Python
    engine for that key). Returns the number of rows written."""
    maxt, tids = state[0], state[2]
    btime, bnext, bhead = buffer[0], buffer[2], buffer[5]
    tot = state[6]
    scratch = np.zeros(2 * DIGITS + 4, np.int64)
    window = np.zeros(tot.shape[1], np.int64)
    leaving = np.zeros(int(groups[:, 1].max()) + 2 if groups.shape[0] else 1, np.bool_)
    r = 0
    for s in range(slots.shape[0]):
        slot = slots[s]
        newest = maxt[slot]
        if newest == batch.UNSEEN:
            continue  # no accepted event: no serving state (its steps stay 0)
        watermark = newest - lateness
        exact[s] = 1
        for g in range(groups.shape[0]):
            hop, ring, tid_off = groups[g, 0], groups[g, 1], groups[g, 2]
            first_row = r
            if not batch._read(
                slot, newest, watermark, state, distinct, buffer, groups, ops, readers,
                distinct_features, window, scratch, out_int, out_float, r, True, g,
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
                e = bhead[slot]
                while e != -1:
                    tile = btime[e] // hop
                    if base - ring < tile <= base:
                        leaving[tile - base + ring] = True
                    e = bnext[e]
                for k in range(1, ring + 1):
                    if not leaving[k]:
                        continue  # the same tiles and events as the window at b_(k-1)
                    if not batch._read(
                        slot, (base + k) * hop, watermark, state, distinct, buffer, groups, ops,
                        readers, distinct_features, window, scratch, out_int, out_float, r, True, g,
                    ):  # fmt: skip
                        exact[s] = 0
                    if not _same(readers, g, out_int, out_float, r, r - 1):
                        starts[r] = (base + k) * hop
                        r += 1
            steps[s, g] = r - first_row
    return r


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


def serving_states(store: KernelStore, keys: list[Key], slots: list[int]) -> list[ServingState | None]:
    """The ServingState of each (key, slot), None where the key has no accepted event. Read off
    the arrays; where the kernel cannot give a value exactly (an int sum beyond int64), from the
    key's KeyState by engine/serving.py."""
    layout = store.layout
    count = len(slots)
    group_count = len(layout.groups)
    if count == 0:
        return []
    per_key = sum(int(ring) + 1 if hop else 1 for hop, ring in layout.groups[:, :2].tolist())
    capacity = count * per_key
    out_int = np.zeros((capacity, layout.features), np.int64)
    out_float = np.zeros((capacity, layout.features), np.float64)
    starts = np.zeros(capacity, np.int64)
    steps = np.zeros((count, group_count), np.int64)
    exact = np.zeros(count, np.int8)
    slot_array = np.asarray(slots, dtype=np.int64)
    rows = step_rows(
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
    )
    # Rows are laid out slot by slot, group by group: the rows of group g are those whose
    # position in that order is g. Each group's columns are converted once, over its rows only.
    row_group = np.repeat(np.tile(np.arange(group_count), count), steps.ravel())
    group_values: list[tuple[tuple[Any, ...], ...]] = []
    names = store.compiled.view.feature_names
    group_columns = [[names.index(name) for name in group] for group in store.compiled.group_features]
    for g, columns in enumerate(group_columns):
        chosen = np.flatnonzero(row_group == g)
        group_values.append(tuple(rows_of_columns(store, out_int[chosen], out_float[chosen], columns)))
    start_list = tuple(starts[:rows].tolist())  # (tuples: their slices are the steps' tuples)
    step_counts = steps.tolist()
    maxt = store.maxt[slot_array].tolist()
    seqs = store.seq[slot_array].tolist()
    next_row = [0] * group_count
    states: list[ServingState | None] = []
    position = 0
    for index, key in enumerate(keys):
        counts = step_counts[index]
        if maxt[index] == batch.UNSEEN:
            states.append(None)
        elif not exact[index]:
            states.append(serving_state(store.compiled, key, store.key_state(slots[index])))
        else:
            group_steps = []
            at = position
            for g, n in enumerate(counts):
                first = next_row[g]
                group_steps.append(GroupSteps(start_list[at : at + n], group_values[g][first : first + n]))
                at += n
            states.append(ServingState(key, maxt[index], seqs[index], tuple(group_steps)))
        for g, n in enumerate(counts):
            next_row[g] += n
            position += n
    return states
