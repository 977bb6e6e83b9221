"""Point-in-time replays of many keys: buckets of keys, in worker processes.

Out of core and in parallel, the labels' distinct keys are split into buckets (round robin);
each bucket reads only its keys' archive rows (a vectorised `index_in` per file, only the
columns the view uses), replays them and returns typed Arrow columns. With `workers` > 1 the
buckets run in forked worker processes (they inherit the request; only the result columns
travel back), at least one bucket per worker. Memory per process is one bucket's archive rows
as Arrow columns (~50 bytes per event), the engine state of one bucket's keys and a 64k-event
window of Python objects.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamfs.engine import Key
from streamfs.offline import layout
from streamfs.training.replay import Replay, replay_bucket

__all__ = ["default_workers", "point_in_time"]

PARALLEL_MIN_EVENTS = 200_000
"""With the default worker count, smaller archives replay in-process (forking costs more)."""


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def point_in_time(request: Replay) -> list[pa.Array]:
    """One typed column per requested feature, in label order (null for null-key labels)."""
    n = len(request.keys)
    kinds = [layout.feature_type(request.view, feature) for feature in request.features]
    distinct: dict[Key, None] = {key: None for key in request.keys if key is not None}
    if not distinct:
        return [pa.nulls(n, kind) for kind in kinds]
    total = sum(pq.ParquetFile(f.path).metadata.num_rows for f in request.files)
    workers = _worker_count(request.workers, total)
    if request.view.transform is not None:
        buckets = 1
    else:
        buckets = max(1, math.ceil(total / request.events_per_bucket))
        buckets = math.ceil(buckets / workers) * workers  # every worker gets a share
        buckets = min(buckets, len(distinct))
    bucket_of = {key: index % buckets for index, key in enumerate(distinct)}
    keys: list[list[Key]] = [[] for _ in range(buckets)]
    for known, bucket in bucket_of.items():
        keys[bucket].append(known)
    members: list[list[int]] = [[] for _ in range(buckets)]
    for index, key in enumerate(request.keys):
        if key is not None:
            members[bucket_of[key]].append(index)
    plan = _Plan(request, kinds, keys, members)
    processes = min(workers, buckets)
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    if processes > 1 and can_fork and not multiprocessing.current_process().daemon:  # daemons can't fork
        results = _in_processes(plan, processes)
    else:
        results = [plan.run(bucket) for bucket in range(buckets)]
    return _assemble(n, kinds, results)


def _worker_count(workers: int | None, total: int) -> int:
    if workers is None:
        return default_workers() if total >= PARALLEL_MIN_EVENTS else 1
    return max(1, workers)


BucketResult = tuple[np.ndarray[Any, np.dtype[np.int64]], list[pa.Array]]
"""A bucket's label indices and, per feature, its values for those labels."""


@dataclass(slots=True)
class _Plan:
    request: Replay
    kinds: list[pa.DataType]
    keys: list[list[Key]]
    members: list[list[int]]

    def run(self, bucket: int) -> BucketResult:
        request = self.request
        labels = np.asarray(self.members[bucket], dtype=np.int64)
        columns: list[list[Any]] = [[None] * len(labels) for _ in request.features]
        replay_bucket(request, self.keys[bucket], labels, columns)
        arrays = [pa.array(values, kind) for values, kind in zip(columns, self.kinds, strict=True)]
        return labels, arrays


_FORKED: _Plan | None = None
"""The plan forked workers inherit (set just before the pool starts)."""


def _run_forked(bucket: int) -> BucketResult:
    assert _FORKED is not None
    return _FORKED.run(bucket)


def _in_processes(plan: _Plan, processes: int) -> list[BucketResult]:
    global _FORKED
    _FORKED = plan
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(processes, maxtasksperchild=1) as pool:
            return pool.map(_run_forked, range(len(plan.keys)), chunksize=1)
    finally:
        _FORKED = None


def _assemble(n: int, kinds: list[pa.DataType], results: list[BucketResult]) -> list[pa.Array]:
    labels = np.concatenate([indices for indices, _ in results])
    where = np.full(n, -1, dtype=np.int64)
    where[labels] = np.arange(len(labels), dtype=np.int64)
    take = pa.array(where, mask=where < 0)
    out = []
    for position, kind in enumerate(kinds):
        chunks = [arrays[position] for _, arrays in results]
        values = pa.concat_arrays(chunks) if chunks else pa.array([], kind)
        out.append(values.take(take))
    return out
