"""training_set: label rows in, the same rows out with point-in-time feature columns added.

Every label row comes back, in its original order, with its own columns untouched; a feature
column is named after the feature, or `<view>__<feature>` when that name is requested from two
views or is already a label column (then every occurrence of it is prefixed, so a column's name
is stable for a given request).

Everything a user can get wrong is checked before the archive is read: the mode, feature refs,
label columns and timestamps, and that the archive has events at or before the latest label.
See docs/training.md for the two modes and the boundary.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from streamfs.definitions import FeatureView
from streamfs.engine import Key
from streamfs.errors import OfflineError
from streamfs.offline import layout
from streamfs.offline.scan import archive_files
from streamfs.offline.writer import write_atomic
from streamfs.registry import Pipeline, load_pipeline
from streamfs.training.buckets import point_in_time
from streamfs.training.labels import LabelsLike, label_keys, label_times, read_labels
from streamfs.training.replay import Mode, Replay

__all__ = ["TrainingSetReport", "training_set", "training_set_command"]

FeatureRefs = str | FeatureView | Sequence[str | FeatureView]
"""'view:feature', 'view' (all its features), a FeatureView, or a list of these."""


def training_set(
    labels: LabelsLike,
    features: FeatureRefs,
    *,
    root: Path | str,
    pipeline: Pipeline | str | Sequence[FeatureView],
    mode: Mode = "as_served",
    time_column: str = "timestamp",
    inclusive: bool = True,
    events_per_bucket: int = 2_000_000,
    workers: int | None = None,
) -> pa.Table:
    """Point-in-time feature values for every label row, recomputed from the event archive.

    `mode="as_served"`: what the online store answered at the label time (events that had
    *arrived* by then). `mode="event_time"`: every accepted event with event time ≤ label time,
    however late it arrived. `inclusive=True` includes events at exactly the label time (the
    window is [start(t), t]); `inclusive=False` answers from just before t (as at t - 1 ms),
    which event-triggered labels (scoring the payment that is itself an event) need.
    `events_per_bucket` bounds the archive rows a process holds in memory at once. `workers`
    is how many processes replay buckets of keys in parallel (forked; default: the CPUs this
    process may use, or 1 for archives under 200,000 events); 1 replays in this process.
    """
    table, _ = _build(
        labels, features, root, pipeline, mode, time_column, inclusive, events_per_bucket, workers
    )
    return table


def _build(
    labels: LabelsLike,
    features: FeatureRefs,
    root: Path | str,
    pipeline: Pipeline | str | Sequence[FeatureView],
    mode: Mode,
    time_column: str,
    inclusive: bool,
    events_per_bucket: int,
    workers: int | None = None,
) -> tuple[pa.Table, list[str]]:
    """training_set, also returning the names of the feature columns it added."""
    if mode not in get_args(Mode):
        raise OfflineError(f"mode must be one of {get_args(Mode)}, not {mode!r}")
    if workers is not None and workers < 1:
        raise OfflineError(f"workers must be at least 1 (or None for one per CPU), not {workers}")
    root = Path(root)
    views = _views(pipeline)
    requests = _resolve(features, views)
    key_types = {
        key: layout.key_type(view.source, key) for view, _ in requests for key in view.entity.join_keys
    }
    text_columns = {time_column: pa.string(), **{k: t for k, t in key_types.items() if t == pa.string()}}
    table = read_labels(labels, text_columns=text_columns)
    times = label_times(table, time_column)
    eval_times = times if inclusive else times - 1
    names = _column_names(requests, table.column_names)

    replays = []
    for view, wanted in requests:
        keys = _keys(label_keys(table, view.entity.join_keys, key_types))
        files = archive_files(root, view.source)
        _check_archive(root, view, files, eval_times)
        replays.append(Replay(view, files, keys, eval_times, wanted, mode, events_per_bucket, workers))

    for replay in replays:
        columns = point_in_time(replay)
        for feature, values in zip(replay.features, columns, strict=True):
            table = table.append_column(pa.field(names[(replay.view.name, feature)], values.type), values)
    return table, list(names.values())


@dataclass(frozen=True, slots=True)
class TrainingSetReport:
    """What training_set_command wrote."""

    path: Path
    rows: int
    features: int
    seconds: float


def training_set_command(
    labels_path: Path | str,
    refs: Sequence[str],
    out_path: Path | str,
    pipeline: str | Pipeline | Sequence[FeatureView],
    mode: Mode = "as_served",
    *,
    root: Path | str | None = None,
    time_column: str = "timestamp",
    inclusive: bool = True,
) -> TrainingSetReport:
    """`streamfs training-set`: read labels (.parquet/.csv), write the training set (.parquet/.csv).

    `root` defaults to the settings' data_dir. The output appears atomically (temp + rename).
    """
    if root is None:
        from streamfs.settings import Settings

        root = Settings().data_dir
    out = Path(out_path)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise OfflineError(f"output {out} must end in .parquet or .csv")
    started = time.perf_counter()
    table, added = _build(labels_path, list(refs), root, pipeline, mode, time_column, inclusive, 2_000_000)
    if out.suffix.lower() == ".parquet":
        write_atomic(table, out)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
        try:
            pa_csv.write_csv(table, temp)
            os.replace(temp, out)
        finally:
            temp.unlink(missing_ok=True)
    return TrainingSetReport(out, table.num_rows, len(added), time.perf_counter() - started)


# ---------------------------------------------------------------------- resolution and checks


def _views(pipeline: Pipeline | str | Sequence[FeatureView]) -> dict[str, FeatureView]:
    if isinstance(pipeline, str):
        pipeline = load_pipeline(pipeline)
    if not isinstance(pipeline, Pipeline):
        pipeline = Pipeline(tuple(pipeline))
    return {view.name: view for view in pipeline.views}


def _resolve(features: FeatureRefs, views: dict[str, FeatureView]) -> list[tuple[FeatureView, list[str]]]:
    """Feature refs to (view, feature names), in request order, each feature once."""
    refs = [features] if isinstance(features, str | FeatureView) else list(features)
    if not refs:
        raise OfflineError("no features requested")
    chosen: dict[str, tuple[FeatureView, list[str]]] = {}
    for ref in refs:
        if isinstance(ref, FeatureView):
            view, names = ref, ref.feature_names
        else:
            view_name, _, feature = ref.partition(":")
            if view_name not in views:
                raise OfflineError(
                    f"unknown feature view {view_name!r} in {ref!r} (views: {', '.join(views)})"
                )
            view = views[view_name]
            if feature and feature not in view.feature_names:
                raise OfflineError(
                    f"view {view_name!r} has no feature {feature!r} "
                    f"(features: {', '.join(view.feature_names)})"
                )
            names = [feature] if feature else view.feature_names
        entry = chosen.setdefault(view.name, (view, []))
        if entry[0] != view:
            raise OfflineError(f"two different definitions of view {view.name!r} requested")
        entry[1].extend(name for name in names if name not in entry[1])
    return list(chosen.values())


def _column_names(
    requests: list[tuple[FeatureView, list[str]]], label_columns: Sequence[str]
) -> dict[tuple[str, str], str]:
    """`feature`, or `view__feature` for names requested from two views or already in the labels."""
    seen: dict[str, int] = {}
    for _, names in requests:
        for name in names:
            seen[name] = seen.get(name, 0) + 1
    taken = set(label_columns)
    out: dict[tuple[str, str], str] = {}
    for view, names in requests:
        for name in names:
            column = name if seen[name] == 1 and name not in taken else f"{view.name}__{name}"
            if column in taken:
                raise OfflineError(f"labels already have a column {column!r}; rename it")
            out[(view.name, name)] = column
    return out


def _keys(arrays: list[pa.Array]) -> list[Key | None]:
    """Per label row its key tuple, or None when a join-key value is null (that row gets nulls)."""
    parts = [array.to_pylist() for array in arrays]
    return [None if None in key else key for key in zip(*parts, strict=True)]


def _check_archive(root: Path, view: FeatureView, files: list[layout.DataFile], times: Any) -> None:
    where = layout.archive_dir(root, view.source.name)
    if not files:
        raise OfflineError(
            f"no archived events of source {view.source.name!r} (view {view.name!r}) under {where}; "
            "run the worker (it archives what it consumes) or a backfill first"
        )
    if len(times) and files[0].day > layout.day_of(int(np.max(times))):
        raise OfflineError(
            f"the archive of source {view.source.name!r} starts on {layout.date_dir_name(files[0].day)}, "
            "after the latest label time; no label can have features"
        )
