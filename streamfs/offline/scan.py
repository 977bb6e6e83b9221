"""Reading the offline store: feature-log and archive scans, and archived events for replays.

Files are found from the layout's names (layout.list_files), so date and offset pruning never
opens a file that cannot match. Times are UTC epoch milliseconds or aware datetimes; `start` is
inclusive and `end` exclusive, on event time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamfs.definitions import FeatureView, KafkaSource
from streamfs.durations import datetime_to_ms
from streamfs.offline import layout
from streamfs.pyvalues import python_values
from streamfs.records import Position, SourceEvent

__all__ = [
    "TimeBound",
    "archive_files",
    "archived_events",
    "events_from_table",
    "scan_archive",
    "scan_features",
]

TimeBound = datetime | int | None
"""A scan bound: an aware datetime, UTC epoch milliseconds, or None for unbounded."""


def scan_features(
    root: Path | str,
    view: FeatureView | str,
    start: TimeBound = None,
    end: TimeBound = None,
    *,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The feature log of `view` with start ≤ event_time < end, by date, partition and offset."""
    name = view if isinstance(view, str) else view.name
    lo, hi = _bound(start), _bound(end)
    files = layout.list_files(
        layout.features_dir(Path(root), name),
        start_day=None if lo is None else layout.day_of(lo),
        end_day=None if hi is None else layout.day_of(hi - 1),
    )
    return _read(files, columns, lo, hi, None)


def archive_files(
    root: Path | str,
    source: KafkaSource | str,
    start: TimeBound = None,
    end: TimeBound = None,
    partition: int | None = None,
    offsets: tuple[int, int] | None = None,
) -> list[layout.DataFile]:
    """The archive files that may hold events in range, found by name alone."""
    name = source if isinstance(source, str) else source.name
    lo, hi = _bound(start), _bound(end)
    files = layout.list_files(
        layout.archive_dir(Path(root), name),
        start_day=None if lo is None else layout.day_of(lo),
        end_day=None if hi is None else layout.day_of(hi - 1),
    )
    if partition is not None:
        files = [f for f in files if f.partition == partition]
    if offsets is not None:
        first, stop = offsets
        files = [f for f in files if f.last_offset >= first and f.first_offset < stop]
    return files


def scan_archive(
    root: Path | str,
    source: KafkaSource | str,
    start: TimeBound = None,
    end: TimeBound = None,
    partition: int | None = None,
    offsets: tuple[int, int] | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Archived events of `source`: start ≤ event_time < end, optionally one partition and an
    offset range [first, stop). Rows come by date, partition and offset (see archived_events
    for arrival order)."""
    files = archive_files(root, source, start, end, partition, offsets)
    return _read(files, columns, _bound(start), _bound(end), offsets, partition)


def archived_events(
    root: Path | str,
    source: KafkaSource,
    start: TimeBound = None,
    end: TimeBound = None,
    partition: int | None = None,
    offsets: tuple[int, int] | None = None,
) -> Iterator[SourceEvent]:
    """Archived events as SourceEvents, ordered by partition then offset (arrival order per
    partition), for backfills and state rebuilds. Memory holds one flush's files at a time:
    files are read in groups whose offset ranges overlap (one flush wrote them)."""
    files = archive_files(root, source, start, end, partition, offsets)
    by_partition: dict[int, list[layout.DataFile]] = {}
    for data_file in files:
        by_partition.setdefault(data_file.partition, []).append(data_file)
    lo, hi = _bound(start), _bound(end)
    for part in sorted(by_partition):
        for group in _overlapping_groups(by_partition[part]):
            table = _read(group, None, lo, hi, offsets, part)
            table = table.sort_by([("offset", "ascending")])
            yield from events_from_table(table, source)


def events_from_table(table: pa.Table, source: KafkaSource) -> list[SourceEvent]:
    """Archive rows back to SourceEvents, in table order, with exactly the archived field values."""
    names = [name for name in source.schema.model_fields if name in table.column_names]
    columns = [python_values(table.column(name)) for name in names]
    topics = table.column("topic").to_pylist()
    partitions = table.column("partition").to_pylist()
    offsets = table.column("offset").to_pylist()
    event_times = table.column("event_time").cast(pa.int64()).to_pylist()
    arrivals = table.column("arrival_time").cast(pa.int64()).to_pylist()
    rows = zip(*columns, strict=True) if columns else iter([()] * table.num_rows)
    return [
        SourceEvent(dict(zip(names, values, strict=True)), event_time, arrival, Position(topic, part, offset))
        for values, event_time, arrival, topic, part, offset in zip(
            rows, event_times, arrivals, topics, partitions, offsets, strict=True
        )
    ]


def _overlapping_groups(files: list[layout.DataFile]) -> Iterator[list[layout.DataFile]]:
    """Group one partition's files into runs whose offset ranges overlap (one flush, many dates)."""
    ordered = sorted(files, key=lambda f: (f.first_offset, f.last_offset))
    group: list[layout.DataFile] = []
    reach = -1
    for data_file in ordered:
        if group and data_file.first_offset > reach:
            yield group
            group = []
        group.append(data_file)
        reach = max(reach, data_file.last_offset)
    if group:
        yield group


def _read(
    files: Sequence[layout.DataFile],
    columns: Sequence[str] | None,
    lo: int | None,
    hi: int | None,
    offsets: tuple[int, int] | None,
    partition: int | None = None,
) -> pa.Table:
    """Read and concatenate files, then apply the exact row filters the names could not."""
    needed = None
    if columns is not None:
        needed = list(
            dict.fromkeys([*columns, *(["event_time"] if lo is not None or hi is not None else [])])
        )
        needed += ["offset"] if offsets is not None and "offset" not in needed else []
    tables = [pq.read_table(f.path, columns=needed) for f in files]
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="default")
    mask = None
    if lo is not None:
        mask = _and(mask, pc.greater_equal(table.column("event_time").cast(pa.int64()), lo))
    if hi is not None:
        mask = _and(mask, pc.less(table.column("event_time").cast(pa.int64()), hi))
    if offsets is not None:
        offset = table.column("offset")
        mask = _and(mask, pc.and_(pc.greater_equal(offset, offsets[0]), pc.less(offset, offsets[1])))
    if mask is not None:
        table = table.filter(mask)
    if columns is not None:
        table = table.select(list(columns))
    return table


def _and(mask: Any, condition: Any) -> Any:
    return condition if mask is None else pc.and_(mask, condition)


def _bound(value: TimeBound) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return datetime_to_ms(value)
