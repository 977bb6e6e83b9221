"""An archive table's rows as the kernel's input arrays, without a Python object per event.

Replays (training sets) read the event archive as Arrow tables; turning every row into a
SourceEvent and checking it one by one cost more than the kernel's whole loop. Here the
columns go to numpy as columns: numbers as float64 (NaN for null), other values interned once
per distinct value (dictionary-encoded), keys mapped to slots. Archived events passed the same
checks when the worker accepted them; anything that would not pass them here (a missing key, a
non-finite number, an int beyond 2**53, a type Arrow cannot dictionary-encode) returns None and
the caller takes the row path, which rejects exactly as the worker did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfs.engine.kernel.fixed import EXACT_INT
from streamfs.engine.kernel.keyindex import KeyIndex
from streamfs.engine.kernel.store import KernelStore
from streamfs.engine.state import Key
from streamfs.pyvalues import python_values


@dataclass(slots=True)
class TableColumns:
    slots: np.ndarray
    times: np.ndarray
    values: np.ndarray
    ids: np.ndarray


def table_columns(store: KernelStore, table: pa.Table) -> TableColumns | None:
    """The kernel's arrays for the rows of an archive table (schema fields, event_time,
    partition), or None if the row path must take them."""
    compiled, layout = store.compiled, store.layout
    if compiled.view.transform is not None:
        return None
    count = table.num_rows
    present = set(table.column_names)
    for name in compiled.key_fields:
        if name not in present or table.column(name).null_count:
            return None
    slots = _string_key_slots(store, table, compiled.key_fields)
    if slots is None:
        unit_partitions, unit_keys, unit_rows = _units(table, compiled.key_fields)
        unit_slots = store.slots(unit_partitions, unit_keys)
        slots = unit_slots[unit_rows] if count else np.zeros(0, np.int64)
    # a writable copy: Arrow's buffers are read-only, and numba compiles (and loads) the loop
    # once more for a read-only array type than the one warm_up loaded
    times = np.array(_int64_values(table.column("event_time")), dtype=np.int64)
    values = np.full((count, max(len(compiled.input_fields), 1)), np.nan)
    ids = np.full((count, max(len(layout.id_columns), 1)), -1, np.int64)
    id_column = {input_slot: c for c, input_slot in enumerate(layout.id_columns)}
    for input_slot, name in enumerate(compiled.input_fields):
        if name not in present:
            continue  # every value None
        column = table.column(name)
        nulls = _nulls(column)
        if input_slot in layout.value_slots:
            if pa.types.is_integer(column.type):
                largest = pc.max(pc.abs(column)).as_py()
                if largest is not None and largest >= EXACT_INT:
                    return None
            elif not pa.types.is_floating(column.type):
                return None
            # The numbers from a float64 copy: `column` stays as it is, since the ids below intern
            # its own values (an int field's ints, not these floats).
            as_floats = column
            if column.type != pa.float64():  # (a cast costs ~15 µs even to the same type)
                as_floats = column.cast(pa.float64())
            numbers = np.asarray(as_floats.to_numpy(zero_copy_only=False), dtype=np.float64)
            if not np.isfinite(numbers if nulls is None else numbers[~nulls]).all():
                return None
            values[:, input_slot] = numbers
        else:
            values[:, input_slot] = 0.0 if nulls is None else np.where(nulls, np.nan, 0.0)
        if input_slot in id_column:
            if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
                return None  # NaN equals nothing: the row path rejects what needs rejecting
            if column.type in (pa.string(), pa.large_string()):
                column_ids = _by_bytes(store.value_index, column.combine_chunks(), store.value_ids)
                if nulls is not None:
                    column_ids[nulls] = -1
                ids[:, id_column[input_slot]] = column_ids
                continue
            try:
                encoded = pc.dictionary_encode(column.combine_chunks())
            except pa.ArrowNotImplementedError:
                return None
            uniques = python_values(pa.chunked_array([encoded.dictionary]))
            mapping = np.fromiter((store.value_id(value) for value in uniques), np.int64, len(uniques))
            indices = np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
            column_ids = mapping[indices] if len(mapping) else np.zeros(count, np.int64)
            if nulls is not None:
                column_ids[nulls] = -1
            ids[:, id_column[input_slot]] = column_ids
    return TableColumns(slots, times, values, ids)


def _string_key_slots(store: KernelStore, table: pa.Table, key_fields: Sequence[str]) -> np.ndarray | None:
    """Each row's slot, for one string key field and one partition (a worker's batch), looked up
    by the key's bytes in the partition's KeyIndex: a Python object only for keys it has not
    seen yet. None for any other table (_units takes it)."""
    if len(key_fields) != 1 or not table.num_rows:
        return None
    column = table.column(key_fields[0])
    if column.type not in (pa.string(), pa.large_string()):
        return None
    partition = _only_partition(table)
    if partition is None:
        return None
    return _by_bytes(
        store.key_index(partition),
        column.combine_chunks(),
        lambda keys: store.partition_slots(partition, [(key,) for key in keys]),
    )


def _only_partition(table: pa.Table) -> int | None:
    """The partition of every row of a non-empty table, or None if they are not all one (by
    numpy: Arrow's min_max and its scalars cost ~4 times as much per batch)."""
    column = table.column("partition")
    if column.null_count:
        return None
    partitions = column.to_numpy()
    first = int(partitions[0])
    return first if (partitions == first).all() else None


def _int64_values(column: pa.ChunkedArray) -> np.ndarray:
    """A column of int64-sized values (timestamps) as int64, read off its buffer when it is one
    chunk without nulls (a cast and a copy otherwise)."""
    if column.num_chunks == 1 and column.null_count == 0:
        chunk = column.chunk(0)
        if pa.types.is_timestamp(chunk.type) or pa.types.is_int64(chunk.type):
            return np.frombuffer(chunk.buffers()[1], np.int64)[chunk.offset : chunk.offset + len(chunk)]
    return np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _nulls(column: pa.ChunkedArray) -> np.ndarray | None:
    """Which rows are null, None when none is (a batch's usual case: no mask to build or apply)."""
    if column.null_count == 0:
        return None
    return np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)


def _by_bytes(index: KeyIndex, strings: pa.Array, resolve: Callable[[list[str]], list[int]]) -> np.ndarray:
    """index's number (a slot, a value id) for each string; resolve() gives them for the
    strings the index does not hold yet (each once, in one call), which are then added. Null
    rows: -1."""
    if not len(strings):
        return np.zeros(0, np.int64)
    offsets_buffer, data_buffer = strings.buffers()[1:3]
    offsets_type = np.int32 if strings.type == pa.string() else np.int64
    offsets = np.frombuffer(offsets_buffer, offsets_type)[strings.offset : strings.offset + len(strings) + 1]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    offsets = offsets.astype(np.int64, copy=False)
    numbers = index.lookup(offsets, data)
    unknown = numbers < 0
    if strings.null_count:
        unknown &= np.asarray(strings.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    rows = np.flatnonzero(unknown)
    if len(rows):
        values = strings.take(pa.array(rows)).to_pylist()
        first_rows: dict[str, int] = {}  # each new string's first row, in the order seen
        for row, value in zip(rows.tolist(), values, strict=True):
            first_rows.setdefault(value, row)
        new_numbers = resolve(list(first_rows))
        number_of = dict(zip(first_rows, new_numbers, strict=True))
        numbers[rows] = [number_of[value] for value in values]
        index.add_strings(
            offsets, data, np.array(list(first_rows.values()), np.int64), np.array(new_numbers, np.int64)
        )
    return numbers


def _units(table: pa.Table, key_fields: Sequence[str]) -> tuple[list[int], list[Key], np.ndarray]:
    """The distinct (partition, key) pairs of the table's rows, and each row's pair. One
    partition and one key field (a worker's batch) go through Arrow's dictionary encoding: a
    Python step per distinct key, not per row."""
    partition_column = table.column("partition")
    partition = _only_partition(table) if table.num_rows else None
    if len(key_fields) == 1 and partition is not None:
        try:
            encoded = pc.dictionary_encode(table.column(key_fields[0]).combine_chunks())
        except pa.ArrowNotImplementedError:
            encoded = None
        if encoded is not None:
            keys = python_values(pa.chunked_array([encoded.dictionary]))
            if len(set(keys)) == len(keys):  # (else two are equal in Python, e.g. 0.0 and -0.0)
                rows = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
                return [partition] * len(keys), [(key,) for key in keys], rows
    columns = [python_values(table.column(name)) for name in key_fields]
    partitions = partition_column.to_pylist()
    index: dict[tuple[int, Key], int] = {}
    rows = np.fromiter(
        (
            index.setdefault((p, key), len(index))
            for p, key in zip(partitions, zip(*columns, strict=True), strict=True)
        ),
        np.int64,
        table.num_rows,
    )
    return [p for p, _ in index], [key for _, key in index], rows
