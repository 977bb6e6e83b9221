"""A validated micro-batch through the kernel: build its columns, run batch.process, make the rows.

ViewEngine validates each event (transform, key, value checks) exactly as on its Python path and
hands the admitted ones here. Values the kernel cannot hold exactly (an int beyond 2**53, a float
below 2**-96 or above 2**80) stop the batch at that event, like batch.process's own stops: the
caller moves the view to the Python engine and runs the rest there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from streamfs.engine.kernel import batch
from streamfs.engine.kernel.fixed import exact_as_float, representable
from streamfs.engine.kernel.store import KernelStore
from streamfs.engine.state import Key
from streamfs.records import SourceEvent

Admitted = tuple[SourceEvent, Key, tuple[Any, ...], int]
"""(event, entity key, input values, partition) of an event that passed validation."""


@dataclass(slots=True)
class KernelOutput:
    ran: int  # how many admitted events the kernel took (the rest go to the Python engine)
    accepted: np.ndarray  # bool per event that ran (arrays: the columnar path keeps them so)
    newest: np.ndarray  # int64: each event's key's newest time before it (for too-late messages)
    values: list[tuple[Any, ...]]  # rows of the accepted events, in order (empty if rows=False)
    missing_last: bool  # the last event that ran has no row in `values`: it was not exact here
    answers: list[tuple[Any, ...] | None]  # the asks answered (a prefix of them), None if unseen
    ask_newest: list[int]  # each answered ask's key's newest event time then (batch.UNSEEN if none)
    row_arrays: list[pa.Array]  # the rows' feature columns (run_columns(columnar=True))


@numba.njit(cache=True)
def first_unrepresentable(values: np.ndarray, columns: np.ndarray) -> int:
    for i in range(values.shape[0]):
        for c in columns:
            x = values[i, c]
            if x == x and not representable(x):
                return i
    return int(values.shape[0])


NO_ASKS = np.zeros((0, 4), np.int64)


def run(
    store: KernelStore,
    admitted: list[Admitted],
    rows: bool,
    asks: list[tuple[int, Key, int, bool]] = (),  # type: ignore[assignment]
) -> KernelOutput:
    """Run admitted events (and answer asks: (position among them, key, t, serve))."""
    layout = store.layout
    compiled = store.compiled
    count = len(admitted)
    slots = np.fromiter((store.slot(item[3], item[1]) for item in admitted), np.int64, count)
    times = np.fromiter((item[0].event_time for item in admitted), np.int64, count)
    width = len(compiled.input_fields)
    values = np.empty((count, max(width, 1)), np.float64)
    limit = count
    for slot in range(width):
        column = [item[2][slot] for item in admitted]
        if slot in layout.value_slots:
            for i, value in enumerate(column):
                if type(value) is int and not exact_as_float(value):
                    limit = min(limit, i)  # the kernel stops here: it cannot hold this int exactly
                    column = column[:i] + [None] * (count - i)
                    break
            values[:, slot] = np.array(column, dtype=np.float64)
        else:
            values[:, slot] = [np.nan if value is None else 0.0 for value in column]
    ids = np.empty((count, max(len(layout.id_columns), 1)), np.int64)
    value_id = store.value_id
    for c, slot in enumerate(layout.id_columns):
        ids[:, c] = [-1 if item[2][slot] is None else value_id(item[2][slot]) for item in admitted]
    return run_columns(store, slots, times, values, ids, limit, rows, asks)


def run_columns(
    store: KernelStore,
    slots: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    ids: np.ndarray,
    limit: int,
    rows: bool,
    asks: Sequence[tuple[int, Key, int, bool]],
    columnar: bool = False,
) -> KernelOutput:
    """Run the first `limit` events given as the kernel's input arrays (slots, event times, the
    values matrix with NaN for None, the ids matrix with -1 for None), answering asks."""
    layout = store.layout
    if layout.summed_slots:
        summed = np.array(layout.summed_slots, dtype=np.int64)
        limit = min(limit, first_unrepresentable(values[:limit], summed))
    fields = len(set(layout.distinct_field.tolist()))  # each event adds at most a row per field
    inserts = limit * fields
    if layout.lateness and rows:  # complete tiles: every event settles there too, and rebuilding
        buffered = len(store.btime) - int(store.bmeta[1])  # them settles the buffer in (once per
        inserts = 3 * inserts + buffered * fields  # key and batch: its buffered and new events)
    store.reserve(inserts)
    if layout.lateness:
        store.reserve_buffer(limit)
    accepted = np.zeros(limit, np.int8)
    newest = np.zeros(limit, np.int64)
    features = layout.features
    # Column-major, so each feature's column of rows is contiguous: Arrow wraps it without a
    # copy (a strided column cost ~12 µs per 10,000 rows to copy, 15 features a batch). At least
    # 2 rows: numba types a 0- or 1-row array as C-ordered, a different compiled loop. One
    # buffer seen both ways: each feature is written as an int or as a float, never both, and
    # the Arrow columns keep their buffer alive while the offline writer holds the rows (two
    # buffers held twice the rows' bytes: +70-300 MB of a worker's peak RSS).
    out_rows = max(limit if rows else 0, 2)
    out_float = np.zeros((out_rows, features), np.float64, order="F")
    out_int = out_float.view(np.int64)
    ask_table = NO_ASKS
    runnable = [ask for ask in asks if ask[0] <= limit]  # (asks are in position order)
    if runnable:
        ask_table = np.array(
            [(position, _slot_or_none(store, key), t, serve) for position, key, t, serve in runnable],
            dtype=np.int64,
        ).reshape(len(runnable), 4)
    ask_newest = np.zeros(len(ask_table), np.int64)
    ask_int = np.zeros((len(ask_table), features), np.int64)
    ask_float = np.zeros((len(ask_table), features), np.float64)
    ran, missing, answered = batch.process(
        slots[:limit],
        times[:limit],
        values[:limit],
        ids[:limit],
        rows,
        layout.lateness,
        store.state,
        store.distinct,
        store.buffer,
        layout.groups,
        layout.ops,
        layout.readers,
        store.fields,
        accepted,
        newest,
        out_int,
        out_float,
        ask_table,
        ask_newest,
        ask_int,
        ask_float,
        store.complete,
        store.cvalid,
        store.complete_at,
        *batch.loop_scratch(layout.groups, store.tot.shape[1], store.fields),
    )
    taken = accepted[:ran].astype(bool)
    if missing:
        taken[ran - 1] = False  # its row is not in out_*: the Python engine computes it
    out: list[tuple[Any, ...]] = []
    arrays: list[pa.Array] = []
    if rows:
        if taken.all():  # (most batches: no copy of the kept rows needed)
            kept_int, kept_float = out_int[:ran], out_float[:ran]
        else:
            kept_int, kept_float = out_int[:ran][taken], out_float[:ran][taken]
        if columnar:
            arrays = row_columns(store, kept_int, kept_float)
        else:
            out = _rows(store, kept_int, kept_float)
    if missing:
        taken[ran - 1] = True
    answers: list[tuple[Any, ...] | None] = []
    if len(ask_table):
        answered = int(answered)
        seen = ask_newest[:answered] != batch.UNSEEN
        found = iter(_rows(store, ask_int[:answered][seen], ask_float[:answered][seen]))
        answers = [next(found) if was_seen else None for was_seen in seen.tolist()]
        newest_of_asks = ask_newest[:answered].tolist()
    else:
        newest_of_asks = []
    return KernelOutput(
        int(ran), taken, newest[:ran], out, bool(missing), answers, newest_of_asks, arrays
    )


def _slot_or_none(store: KernelStore, key: Key) -> int:
    slot = store.find(key)
    return -1 if slot is None else slot


def _rows(store: KernelStore, out_int: np.ndarray, out_float: np.ndarray) -> list[tuple[Any, ...]]:
    return rows_of_columns(store, out_int, out_float, range(store.layout.features))


def rows_of_columns(
    store: KernelStore, out_int: np.ndarray, out_float: np.ndarray, columns: Sequence[int]
) -> list[tuple[Any, ...]]:
    """The kernel's output rows as tuples of Python values of the given feature columns: counts
    and int sums int, numbers float, None where a window is empty, ids back to their values."""
    layout = store.layout
    ints = set(layout.int_columns)
    nullable = set(layout.nullable_columns)
    int_valued = set(layout.int_valued_columns)
    id_valued = set(layout.id_valued_columns)
    id_values = store.id_values
    lists: list[list[Any]] = []
    for column in columns:
        if column in id_valued:
            lists.append([None if vid < 0 else id_values[vid] for vid in out_int[:, column].tolist()])
            continue
        if column in ints:
            lists.append(out_int[:, column].tolist())
            continue
        numbers = out_float[:, column]
        if column in int_valued:
            values = [None if x != x else int(x) for x in numbers.tolist()]
        else:
            values = numbers.tolist()
            if column in nullable:  # None where NaN: few (the empty window's step, mostly)
                for index in np.flatnonzero(np.isnan(numbers)).tolist():
                    values[index] = None
        lists.append(values)
    if not lists:
        return [()] * len(out_int)
    return list(zip(*lists, strict=True))


def row_columns(store: KernelStore, out_int: np.ndarray, out_float: np.ndarray) -> list[pa.Array]:
    """The rows' feature columns as Arrow arrays (the columnar twin of _rows): counts and int
    sums int64, numbers float64, null where a window is empty, ids back to their values."""
    layout = store.layout
    ints = set(layout.int_columns)
    nullable = set(layout.nullable_columns)
    int_valued = set(layout.int_valued_columns)
    id_valued = set(layout.id_valued_columns)
    arrays: list[pa.Array] = []
    for column in range(layout.features):
        if column in id_valued:
            arrays.append(
                pa.array([None if vid < 0 else store.id_values[vid] for vid in out_int[:, column].tolist()])
            )
        elif column in ints:
            arrays.append(pa.array(out_int[:, column]))
        else:
            numbers = out_float[:, column]
            missing = np.isnan(numbers) if column in nullable else None
            if missing is not None and not missing.any():
                missing = None  # (a mask costs ~9 µs per 10,000 rows even when it masks nothing)
            if column in int_valued:
                arrays.append(pa.array(np.nan_to_num(numbers).astype(np.int64), mask=missing))
            else:
                arrays.append(pa.array(numbers, mask=missing))
    return arrays
