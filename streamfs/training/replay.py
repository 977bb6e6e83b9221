"""Point-in-time feature values for one view, recomputed by replaying the event archive.

Window semantics are never re-implemented here: archived events go through a fresh ViewEngine
in arrival order, with label evaluations interleaved at the right moments, so a training set
holds exactly what the engine computes.

* as_served: before answering a label at t, the engine has processed every event that arrived
  at or before t (ordered by arrival time, partition, offset); the answer is `serve(key, t)`,
  what the online store returned at t.
* event_time: a first replay in arrival order decides which events were accepted (too-late
  events are rejected there, as online). The accepted events are then replayed sorted by
  (event time, arrival order) into a second engine, which answers `evaluate(key, t)` after
  every accepted event with event time ≤ t: the value as if nothing had arrived late.

Labels whose entity has no events yet read as empty windows (count 0, sum 0, others null) if
the view accepts an event of that entity at any point in the archive, and as nulls if it never
does. TTL applies as the engine applies it.

Out of core: entity keys are independent in the engine, so the labels' distinct keys are split
into buckets and each bucket is replayed on its own, reading only the archive rows of its keys
(a vectorised `is_in` filter per file). Memory holds one bucket's archive rows as Arrow columns
(~50 bytes per event), the engine state of one bucket's keys, and a 64k-event window of Python
objects; the archive is read once per bucket. Views with a transform may rewrite keys, so they
run as a single bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamfs.definitions import FeatureView
from streamfs.engine import Key, ViewEngine
from streamfs.offline.layout import DataFile
from streamfs.offline.scan import events_from_table
from streamfs.records import SourceEvent

__all__ = ["Mode", "point_in_time"]

Mode = Literal["as_served", "event_time"]
Times = np.ndarray[Any, np.dtype[np.int64]]

CHUNK = 65_536
"""Archive rows turned into Python events at a time."""
_ARRIVAL_ORDER = [("arrival_time", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
_EVENT_ORDER = [("event_time", "ascending"), *_ARRIVAL_ORDER]


@dataclass(slots=True)
class Replay:
    """One view's point-in-time request: label keys and times, the features wanted, the archive."""

    view: FeatureView
    files: Sequence[DataFile]
    keys: Sequence[Key | None]
    times: Times
    features: Sequence[str]
    mode: Mode
    events_per_bucket: int


def point_in_time(request: Replay) -> list[list[Any]]:
    """One column of values per requested feature, in label order (None for null labels)."""
    n = len(request.keys)
    columns: list[list[Any]] = [[None] * n for _ in request.features]
    distinct = dict.fromkeys(key for key in request.keys if key is not None)
    if not distinct:
        return columns
    total = sum(pq.ParquetFile(f.path).metadata.num_rows for f in request.files)
    buckets = 1 if request.view.transform is not None else math.ceil(total / request.events_per_bucket)
    buckets = max(1, min(buckets, len(distinct)))
    bucket_of = {key: index % buckets for index, key in enumerate(distinct)}
    members: list[list[int]] = [[] for _ in range(buckets)]
    for index, key in enumerate(request.keys):
        if key is not None:
            members[bucket_of[key]].append(index)
    for bucket in range(buckets):
        keys = [key for key, b in bucket_of.items() if b == bucket] if buckets > 1 else None
        table = _read_bucket(request, keys)
        labels = np.asarray(members[bucket], dtype=np.int64)
        order = labels[np.lexsort((labels, request.times[labels]))]
        if request.mode == "as_served":
            _as_served(request, table, order, columns)
        else:
            _event_time(request, table, order, columns)
    return columns


# ---------------------------------------------------------------------- the two modes


def _as_served(request: Replay, table: pa.Table, order: Times, columns: list[list[Any]]) -> None:
    engine = ViewEngine(request.view)
    unseen, position = _answer_labels(
        request, engine, ViewEngine.serve, table, "arrival_time", order, columns
    )
    _fill_known_later(request, engine, table, position, unseen, columns)


def _event_time(request: Replay, table: pa.Table, order: Times, columns: list[list[Any]]) -> None:
    # Pass 1, arrival order: which events did the view accept? Only events that arrived no later
    # than the last event with event time ≤ the latest label can matter.
    latest = int(request.times[order].max())
    event_times = _ms(table, "event_time")
    relevant = event_times <= latest
    arrivals = _ms(table, "arrival_time")
    stop = int(np.searchsorted(arrivals, arrivals[relevant].max(), side="right")) if relevant.any() else 0
    first = ViewEngine(request.view)
    cursor = _Cursor(table, request.view)
    rejected: list[int] = []
    for batch in cursor.advance(stop):
        for rejection in first.process(batch, rows=False).rejected:
            position = rejection.position
            assert position is not None
            rejected.append(_position_id(position.partition, position.offset))
    head = table.slice(0, stop)
    ids = _position_id(head.column("partition").to_numpy().astype(np.int64), head.column("offset").to_numpy())
    keep = relevant[:stop] & ~np.isin(ids, np.asarray(rejected, dtype=np.int64))
    accepted = head.filter(pa.array(keep)).sort_by(_EVENT_ORDER)

    # Pass 2, event-time order: every accepted event with event time ≤ t, then evaluate at t.
    second = ViewEngine(request.view)
    unseen, _ = _answer_labels(request, second, ViewEngine.evaluate, accepted, "event_time", order, columns)
    _fill_known_later(request, first, table, stop, unseen, columns)


def _answer_labels(
    request: Replay,
    engine: ViewEngine,
    answer: Callable[[ViewEngine, Key, int], dict[str, Any] | None],
    table: pa.Table,
    time_column: str,
    order: Times,
    columns: list[list[Any]],
) -> tuple[list[int], int]:
    """Feed `table` (sorted by `time_column`) into `engine` up to each label's time, in label-time
    order, and record `answer(engine, key, t)`. Returns the labels whose entity the engine had not
    seen yet, and how far into `table` the replay got."""
    cuts = np.searchsorted(_ms(table, time_column), request.times[order], side="right")
    cursor = _Cursor(table, request.view)
    unseen: list[int] = []
    for label, cut in zip(order.tolist(), cuts.tolist(), strict=True):
        for batch in cursor.advance(cut):
            engine.process(batch, rows=False)
        key = request.keys[label]
        assert key is not None
        values = answer(engine, key, int(request.times[label]))
        if values is not None:
            _put(columns, request.features, label, values)
        elif engine.watermark(key) is None:
            unseen.append(label)
    return unseen, cursor.position


def _fill_known_later(
    request: Replay,
    engine: ViewEngine,
    table: pa.Table,
    processed: int,
    unseen: list[int],
    columns: list[list[Any]],
) -> None:
    """Labels before their entity's first event: empty windows if the view ever accepts an
    event of the entity (finish the replay for just those keys to find out), else nulls."""
    if not unseen:
        return
    pending: list[Key] = []
    for label in unseen:
        key = request.keys[label]
        if key is not None and engine.watermark(key) is None:
            pending.append(key)
    rest = table.slice(processed)
    if pending and rest.num_rows and request.view.transform is None:
        rest = rest.filter(_key_filter(rest, request.view, pending))
    if pending:
        for batch in _Cursor(rest, request.view).advance(rest.num_rows):
            engine.process(batch, rows=False)
    empty = engine.empty_values()
    for label in unseen:
        key = request.keys[label]
        if key is not None and engine.watermark(key) is not None:
            _put(columns, request.features, label, empty)


# ---------------------------------------------------------------------- archive access


def _read_bucket(request: Replay, keys: list[Key] | None) -> pa.Table:
    """The archive rows a bucket needs, in arrival order: only its keys, only the used fields."""
    view = request.view
    if view.transform is None:
        fields = list(dict.fromkeys([*view.entity.join_keys, *(f.field for f in view.features if f.field)]))
    else:
        fields = list(view.source.schema.model_fields)
    columns = ["topic", "partition", "offset", "arrival_time", "event_time", *fields]
    parts = []
    for data_file in request.files:
        part = pq.read_table(data_file.path, columns=columns)
        if keys is not None:
            part = part.filter(_key_filter(part, view, keys))
        parts.append(part)
    if not parts:
        return pa.table({name: pa.array([], type=pa.int64()) for name in columns})
    return pa.concat_tables(parts, promote_options="default").sort_by(_ARRIVAL_ORDER)


def _key_filter(table: pa.Table, view: FeatureView, keys: list[Key]) -> pa.ChunkedArray:
    """Rows whose join key is one of `keys` (exact: composite keys compare part by part)."""
    names = view.entity.join_keys
    if len(names) == 1:
        column = table.column(names[0])
        return pc.is_in(column, value_set=pa.array([key[0] for key in keys], type=column.type))
    wanted = [
        pa.array([key[i] for key in keys], type=table.column(name).type) for i, name in enumerate(names)
    ]
    return pc.is_in(_joined([table.column(n) for n in names]), value_set=_joined(wanted))


def _joined(parts: Sequence[pa.Array | pa.ChunkedArray]) -> Any:
    """Composite keys as one text column; \\x1f cannot occur in a cast number and rarely in text,
    and a false match only replays an extra key (its events never reach a label)."""
    return pc.binary_join_element_wise(*[pc.cast(part, pa.string()) for part in parts], "\x1f")


class _Cursor:
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


def _ms(table: pa.Table, column: str) -> Times:
    return np.asarray(table.column(column).cast(pa.int64()).to_numpy(), dtype=np.int64)


def _position_id(partition: Any, offset: Any) -> Any:
    return partition * (1 << 42) + offset


def _put(columns: list[list[Any]], features: Sequence[str], label: int, values: dict[str, Any]) -> None:
    for column, name in zip(columns, features, strict=True):
        column[label] = values[name]
