"""The Parquet layout of the offline store, in one place: directories, file names, column types.

    <root>/features/<view>/date=YYYY-MM-DD/p0003-o000000000120-000000000349.parquet
    <root>/archive/<source>/date=YYYY-MM-DD/p0003-o000000000120-000000000349.parquet

`date` is the UTC date of each row's event time (Hive partitioning, so DuckDB, Polars, Spark and
pyarrow datasets all prune by it). A file holds the rows of one source partition from one flush;
its name is the partition and the first and last offset it holds, so a file is identified by the
data in it: rewriting the same offsets after a crash replaces the file instead of duplicating
it, and `truncate` can find uncommitted data from names alone (see writer.py).

Column types follow the definitions, never the data, so every file of a view or source has the
same schema whatever values a flush happened to see (an all-null batch is still float64).
See docs/storage-offline.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamfs.definitions import FeatureView, KafkaSource

__all__ = [
    "DAY_MS",
    "TIMESTAMP",
    "VALUE_TIMESTAMP",
    "DataFile",
    "archive_dir",
    "archive_schema",
    "day_of",
    "feature_schema",
    "feature_type",
    "features_dir",
    "file_name",
    "list_files",
    "topic_partition_columns",
]

FEATURES = "features"
ARCHIVE = "archive"
DAY_MS = 86_400_000
TIMESTAMP = pa.timestamp("ms", tz="UTC")
"""event_time and arrival_time: streamfs keeps time in epoch milliseconds."""
VALUE_TIMESTAMP = pa.timestamp("us", tz="UTC")
"""Datetime fields and features: Python's full precision, so stored values equal served ones."""
POSITION_COLUMNS = ("topic", "partition", "offset")
_FILE = re.compile(r"^p(\d{4,})-o(\d{12,})-(\d{12,})\.parquet$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_EPOCH_DATE = date(1970, 1, 1)

_ARROW_TYPES: dict[type, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    datetime: VALUE_TIMESTAMP,
    bytes: pa.binary(),
    date: pa.date32(),
}


def features_dir(root: Path, view: str) -> Path:
    return root / FEATURES / view


def archive_dir(root: Path, source: str) -> Path:
    return root / ARCHIVE / source


def day_of(ms: int) -> int:
    """Days since the epoch of a UTC epoch-millisecond time (floor, so 1969 works too)."""
    return ms // DAY_MS


def date_dir_name(day: int) -> str:
    return f"date={(_EPOCH_DATE + timedelta(days=day)).isoformat()}"


def file_name(partition: int, first_offset: int, last_offset: int) -> str:
    """p0003-o000000000120-000000000349.parquet: zero-padded so names sort in offset order."""
    return f"p{partition:04d}-o{first_offset:012d}-{last_offset:012d}.parquet"


@dataclass(frozen=True, slots=True, order=True)
class DataFile:
    """One Parquet file of the layout, described by its path alone."""

    day: int
    partition: int
    first_offset: int
    last_offset: int
    path: Path


def list_files(
    directory: Path, *, start_day: int | None = None, end_day: int | None = None
) -> list[DataFile]:
    """The data files under a view or source directory, by date then partition then offset.

    Temporary files (dot-prefixed) and anything not named by the layout are ignored.
    """
    files: list[DataFile] = []
    if not directory.is_dir():
        return files
    for date_path in directory.iterdir():
        match = _DATE_DIR.match(date_path.name)
        if match is None or not date_path.is_dir():
            continue
        day = (date.fromisoformat(match.group(1)) - _EPOCH_DATE).days
        if (start_day is not None and day < start_day) or (end_day is not None and day > end_day):
            continue
        for path in date_path.iterdir():
            name = _FILE.match(path.name)
            if name is not None:
                files.append(DataFile(day, int(name.group(1)), int(name.group(2)), int(name.group(3)), path))
    files.sort()
    return files


def arrow_type(python_type: type | None) -> pa.DataType | None:
    """The Arrow type of a schema field's base type; None when the schema does not say."""
    if python_type is None:
        return None
    for base, arrow in _ARROW_TYPES.items():
        if python_type is base:
            return arrow
    return None


def field_type(source: KafkaSource, name: str) -> pa.DataType:
    """Arrow type of a source field; types the layout cannot express exactly are an error."""
    arrow = arrow_type(source.field_type(name))
    if arrow is None:
        raise TypeError(
            f"source {source.name!r} field {name!r} has type "
            f"{source.schema.model_fields[name].annotation!r}, which the offline store "
            "cannot archive (use bool, int, float, str, bytes, date or datetime)"
        )
    return arrow


def feature_type(view: FeatureView, feature: str) -> pa.DataType:
    """The Arrow type of one feature's values, from its function and input field type."""
    aggregate = view.feature(feature)
    function = aggregate.function
    if function in ("count", "count_distinct"):
        return pa.int64()
    if aggregate.field is None:  # only count has no field
        return pa.int64()
    base = view.field_type(aggregate.field)
    if function == "sum":
        return pa.int64() if base is int else pa.float64()
    if function in ("mean", "stddev", "stddev_pop", "variance", "variance_pop"):
        return pa.float64()
    arrow = arrow_type(base)
    if arrow is None:  # an annotation more complex than one type (a union of several, say)
        return pa.string()
    return arrow


def feature_schema(view: FeatureView, fingerprint: str, version: str) -> pa.Schema:
    """Join keys, event_time, arrival_time, topic, partition, offset, then one column per feature."""
    fields = [pa.field(key, key_type(view.source, key)) for key in view.entity.join_keys]
    fields += _position_fields()
    fields += [pa.field(name, feature_type(view, name)) for name in view.feature_names]
    metadata = {"streamfs.view": view.name, "streamfs.fingerprint": fingerprint, "streamfs.version": version}
    return pa.schema(fields, metadata=metadata)


def archive_schema(source: KafkaSource, version: str) -> pa.Schema:
    """topic, partition, offset, arrival_time, event_time, then every field of the source schema."""
    fields = [
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("arrival_time", TIMESTAMP),
        pa.field("event_time", TIMESTAMP),
    ]
    fields += [pa.field(name, field_type(source, name)) for name in source.schema.model_fields]
    metadata = {
        "streamfs.source": source.name,
        "streamfs.topic": source.topic,
        "streamfs.schema": source.schema.__name__,
        "streamfs.version": version,
    }
    return pa.schema(fields, metadata=metadata)


def key_type(source: KafkaSource, key: str) -> pa.DataType:
    return arrow_type(source.field_type(key)) or pa.string()


def _position_fields() -> list[pa.Field]:
    return [
        pa.field("event_time", TIMESTAMP),
        pa.field("arrival_time", TIMESTAMP),
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
    ]


def topic_partition_columns(topic: str, partition: int, count: int) -> tuple[pa.Array, pa.Array]:
    """The `topic` and `partition` columns of `count` rows of one topic-partition (their types
    as in the feature and archive schemas). pa.repeat: ~2 ns per row, where a list of `count`
    references to the topic cost ~180 (0.18 µs of a worker's decode per event)."""
    return pa.repeat(pa.scalar(topic, pa.string()), count), pa.array(np.full(count, partition, np.int32))


def metadata_of(schema: pa.Schema) -> dict[str, str]:
    """The streamfs.* key-value metadata of a file's schema, decoded."""
    raw: dict[Any, Any] = schema.metadata or {}
    return {key.decode(): value.decode() for key, value in raw.items() if key.startswith(b"streamfs.")}
