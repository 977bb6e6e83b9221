"""Archive rows for a replay: read only the labels' keys, order them, and turn them into events.

Vectorised (Arrow, numpy) helpers of training/replay.py: the key filter of a scan, the cut of
each label in rows sorted by (unit, time), and a cursor that converts rows to Python events
CHUNK at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from streamfs.definitions import FeatureView
from streamfs.engine import Key
from streamfs.offline import layout
from streamfs.offline.layout import DataFile
from streamfs.offline.scan import events_from_table
from streamfs.records import SourceEvent

Times = np.ndarray[Any, np.dtype[np.int64]]

CHUNK = 65_536
"""Archive rows turned into Python events at a time."""
UNIT = "__streamfs_unit"
"""The column holding each row's unit (its key's index in the bucket's key set)."""
ARRIVAL_ORDER = [("arrival_time", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
EVENT_ORDER = [("event_time", "ascending"), *ARRIVAL_ORDER]


def read_rows(view: FeatureView, files: Sequence[DataFile], value_set: pa.Array | None) -> pa.Table:
    """The archive rows of the used fields; with a key value set only the rows of those keys,
    with their unit (the key's index in the set) in column UNIT. One multi-threaded scan over
    all files (per-file reads cost more in overhead than in decoding), filtered batch by batch."""
    if view.transform is None:
        fields = list(dict.fromkeys([*view.entity.join_keys, *(f.field for f in view.features if f.field)]))
    else:
        fields = list(view.source.schema.model_fields)
    columns = ["topic", "partition", "offset", "arrival_time", "event_time", *fields]
    paths = [data_file.path for data_file in files]
    if not paths:
        empty = {name: pa.array([], type=pa.int64()) for name in columns}
        if value_set is not None:
            empty[UNIT] = pa.array([], type=pa.int64())
        return pa.table(empty)
    schema = pa.unify_schemas([pq.read_schema(path) for path in paths], promote_options="default")
    scanner = ds.dataset([str(path) for path in paths], schema=schema, format="parquet").scanner(
        columns=[name for name in columns if name in schema.names]
    )
    parts = []
    for batch in scanner.to_batches():
        part = pa.Table.from_batches([batch])
        if value_set is not None:
            codes = pc.index_in(_row_keys(part, view, value_set.type), value_set=value_set)
            found = pc.is_valid(codes)
            part = part.filter(found).append_column(UNIT, pc.cast(codes.filter(found), pa.int64()))
        parts.append(part)
    if parts:
        return pa.concat_tables(parts)
    table = scanner.to_table()
    return table if value_set is None else table.append_column(UNIT, pa.array([], pa.int64()))


def key_values(view: FeatureView, keys: list[Key]) -> pa.Array:
    """The keys as one Arrow array of the archive's key type (composite keys joined as text)."""
    names = view.entity.join_keys
    parts = [
        pa.array([key[i] for key in keys], layout.key_type(view.source, name)) for i, name in enumerate(names)
    ]
    return parts[0] if len(parts) == 1 else _joined(parts)


def _row_keys(table: pa.Table, view: FeatureView, kind: pa.DataType) -> Any:
    names = view.entity.join_keys
    if len(names) == 1:
        column = table.column(names[0])
        return column if column.type == kind else pc.cast(column, kind)
    return _joined([table.column(name) for name in names])


def _joined(parts: Sequence[pa.Array | pa.ChunkedArray]) -> Any:
    """Composite keys as one text column; \\x1f cannot occur in a cast number and rarely in text,
    and a false match only replays two keys as one unit (which changes neither's answers)."""
    return pc.binary_join_element_wise(*[pc.cast(part, pa.string()) for part in parts], "\x1f")


def label_cuts(row_units: Times, row_times: Times, label_units: Times, label_times: Times) -> Times:
    """Per label, one past the last row of its unit with time ≤ the label's: rows are sorted by
    (unit, time); merged with the labels (after rows of equal time), a label's cut is the number
    of rows before it."""
    rows = len(row_units)
    units = np.concatenate([row_units, label_units])
    times = np.concatenate([row_times, label_times])
    is_label = np.concatenate([np.zeros(rows, dtype=np.int8), np.ones(len(label_units), dtype=np.int8)])
    order = np.lexsort((is_label, times, units))
    at = np.flatnonzero(order >= rows)
    cuts = np.empty(len(label_units), dtype=np.int64)
    cuts[order[at] - rows] = at - np.arange(len(at), dtype=np.int64)
    return cuts


class Cursor:
    """Walks an archive table in order, handing out Python events; rows are converted CHUNK at
    a time (converting per label would pay Arrow's per-call overhead a million times)."""

    __slots__ = ("buffer", "buffer_start", "position", "table", "view")

    def __init__(self, table: pa.Table, view: FeatureView) -> None:
        self.table = table
        self.view = view
        self.position = 0
        self.buffer: list[SourceEvent] = []
        self.buffer_start = 0

    def advance(self, stop: int) -> Iterator[list[SourceEvent]]:
        """The events of rows [position, stop), in order, in one or more lists."""
        while self.position < stop:
            end = self.buffer_start + len(self.buffer)
            if self.position >= end:
                self.buffer_start = self.position
                size = min(CHUNK, self.table.num_rows - self.position)
                self.buffer = events_from_table(self.table.slice(self.position, size), self.view.source)
                end = self.buffer_start + len(self.buffer)
            upto = min(stop, end)
            yield self.buffer[self.position - self.buffer_start : upto - self.buffer_start]
            self.position = upto

    def take_table(self, stop: int) -> pa.Table:
        """Rows [position, stop) as an Arrow table (for the kernel's columnar path)."""
        rows = self.table.slice(self.position, max(stop - self.position, 0))
        self.position = max(stop, self.position)
        self.buffer, self.buffer_start = [], self.position
        return rows


def ms(table: pa.Table, column: str) -> Times:
    return np.asarray(table.column(column).cast(pa.int64()).to_numpy(), dtype=np.int64)


def position_id(partition: Any, offset: Any) -> Any:
    return partition * (1 << 42) + offset
