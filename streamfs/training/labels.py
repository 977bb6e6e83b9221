"""Label tables in, validated: join-key columns typed like the archive, times as UTC epoch ms.

Every problem a user can fix in their labels is raised here as OfflineError, before any archive
is read: a missing column, a null, naive or unparsable timestamp. Labels may be a Parquet or CSV
path, a pyarrow Table, or a pandas or Polars DataFrame; they become one Arrow table whose
columns are returned untouched in the training set.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from streamfs.durations import datetime_to_ms
from streamfs.errors import OfflineError

__all__ = ["LabelsLike", "label_keys", "label_times", "read_labels"]

LabelsLike: TypeAlias = Any
"""A Parquet or CSV path, a pyarrow Table, or a pandas / Polars DataFrame."""

_UNIT_TO_MS = {"s": (1_000, 1), "ms": (1, 1), "us": (1, 1_000), "ns": (1, 1_000_000)}


def read_labels(labels: LabelsLike, *, text_columns: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Any accepted label input as a pyarrow Table.

    `text_columns` gives CSV columns their types up front (join keys read as text stay text:
    "0042" must not become 42), and every other CSV column keeps pyarrow's inference.
    """
    if isinstance(labels, pa.Table):
        return labels
    if isinstance(labels, str | Path):
        path = Path(labels)
        if not path.exists():
            raise OfflineError(f"labels file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path)
        if suffix == ".csv":
            options = pa_csv.ConvertOptions(column_types=dict(text_columns or {}))
            try:
                return pa_csv.read_csv(path, convert_options=options)
            except pa.ArrowInvalid as exc:
                raise OfflineError(f"labels file {path} could not be read as CSV: {exc}") from None
        raise OfflineError(f"labels file {path} must be .parquet or .csv")
    module = type(labels).__module__.split(".")[0]
    if module == "polars":
        return labels.to_arrow()
    if module == "pandas":
        return pa.Table.from_pandas(labels, preserve_index=False)
    raise OfflineError(
        f"labels must be a Parquet/CSV path, a pyarrow Table or a pandas/Polars DataFrame, "
        f"not {type(labels).__name__}"
    )


def label_times(table: pa.Table, column: str) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The label time column as UTC epoch milliseconds (floor); naive or null times are errors.

    Accepted: tz-aware timestamps of any unit, ISO 8601 strings with an offset ("Z" or "+02:00"),
    aware datetime objects, or integers taken as epoch milliseconds.
    """
    if column not in table.column_names:
        raise OfflineError(
            f"labels have no timestamp column {column!r} (columns: {', '.join(table.column_names)}); "
            "pass time_column= to name it"
        )
    values = table.column(column)
    if values.null_count:
        raise OfflineError(f"label timestamp column {column!r} has {values.null_count} null value(s)")
    kind = values.type
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            raise OfflineError(
                f"label timestamp column {column!r} is naive ({kind}); streamfs needs aware UTC times: "
                "localize it (pandas: .dt.tz_localize('UTC'), Polars: .dt.replace_time_zone('UTC'))"
            )
        multiply, divide = _UNIT_TO_MS[kind.unit]
        raw = values.cast(pa.int64()).to_numpy()
        return np.asarray(np.floor_divide(raw * multiply, divide), dtype=np.int64)
    if pa.types.is_integer(kind):
        return np.asarray(values.cast(pa.int64()).to_numpy(), dtype=np.int64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.fromiter(
            (_parse(text, column) for text in values.to_pylist()), dtype=np.int64, count=len(values)
        )
    raise OfflineError(
        f"label timestamp column {column!r} has type {kind}; use aware timestamps, ISO 8601 strings "
        "with an offset, or epoch milliseconds"
    )


def _parse(text: str, column: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OfflineError(f"label timestamp {text!r} in column {column!r} is not ISO 8601") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise OfflineError(
            f"label timestamp {text!r} in column {column!r} has no UTC offset; write it like "
            "2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00"
        )
    return datetime_to_ms(moment)


def label_keys(
    table: pa.Table, join_keys: tuple[str, ...], types: Mapping[str, pa.DataType]
) -> list[pa.Array]:
    """The join-key columns, cast to the archive's key types so they compare equal to it."""
    missing = [key for key in join_keys if key not in table.column_names]
    if missing:
        raise OfflineError(
            f"labels lack join-key column(s) {missing} (columns: {', '.join(table.column_names)})"
        )
    arrays = []
    for key in join_keys:
        column = table.column(key).combine_chunks()
        target = types[key]
        if column.type != target:
            try:
                column = column.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise OfflineError(
                    f"label join-key column {key!r} of type {column.type} does not convert to the "
                    f"archive's {target}: {exc}"
                ) from None
        arrays.append(column)
    return arrays
