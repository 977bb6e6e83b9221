"""Partition recovery: make a partition's engine state exactly what it was at a committed offset.

Used by the worker on every assignment (streamfs.worker: Worker.assign) and so by every host of it. Steps:
delete the partition's Parquet output at or beyond the commit (it was never committed), discard
checkpoints beyond the commit, restore the newest checkpoint at or below it, and replay the
event archive from the checkpoint to the commit. Feature rows and Redis values are not produced
again: both stores already hold them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from streamfs.checkpoint import CheckpointStore
from streamfs.definitions import KafkaSource
from streamfs.engine import ViewEngine
from streamfs.errors import StateError
from streamfs.offline import OfflineWriter, archived_events
from streamfs.records import SourceEvent

log = logging.getLogger(__name__)

REPLAY_BATCH = 10_000


def recover_partition(
    source: KafkaSource,
    partition: int,
    committed: int,
    *,
    engines: list[ViewEngine],
    offline: OfflineWriter,
    checkpoints: CheckpointStore,
    data_dir: Path,
) -> int:
    """Recover `engines`' state of `source.topic[partition]` at `committed`; return events replayed."""
    topic = source.topic
    offline.truncate(topic, partition, committed)
    checkpoints.discard_after(topic, partition, committed)
    found = checkpoints.latest(topic, partition, committed)
    replay_from = 0
    for engine in engines:
        engine.drop(partition)
    if found is not None:
        replay_from, snapshots = found
        for engine in engines:
            if engine.name not in snapshots:
                replay_from = 0  # a view added since the checkpoint: rebuild everything
                continue
            try:
                engine.restore(snapshots[engine.name])
            except StateError as exc:  # the view's definition changed since the checkpoint
                log.warning("%s; rebuilding %s[%d] from the archive", exc, topic, partition)
                replay_from = 0
        if replay_from == 0:
            for engine in engines:
                engine.drop(partition)
        else:
            log.info("restored %s[%d] state from the checkpoint at offset %d", topic, partition, replay_from)
    replayed = 0
    if replay_from < committed:
        started = time.perf_counter()
        replayed = replay_archive(source, partition, replay_from, committed, engines, data_dir)
        log.info(
            "rebuilt %s[%d] state from the archive: %d events in %.2f s",
            topic, partition, replayed, time.perf_counter() - started,
        )  # fmt: skip
    for engine in engines:
        engine.take_dirty([partition])
    return replayed


def replay_archive(
    source: KafkaSource, partition: int, start: int, end: int, engines: list[ViewEngine], data_dir: Path
) -> int:
    """Feed archived events of offsets [start, end) through `engines`, in batches; return how many."""
    count = 0
    batch: list[SourceEvent] = []
    for event in archived_events(data_dir, source, partition=partition, offsets=(start, end)):
        batch.append(event)
        if len(batch) >= REPLAY_BATCH:
            count += _process(batch, engines)
            batch = []
    return count + _process(batch, engines)


def _process(batch: list[SourceEvent], engines: list[ViewEngine]) -> int:
    for engine in engines:
        engine.process(batch, rows=False)  # rows and Redis values already exist for these offsets
    return len(batch)
