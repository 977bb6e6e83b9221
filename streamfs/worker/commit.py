"""The commit protocol: make everything processed durable (`flush`), then commit the offsets.

Offsets advance only here, and only after steps 1-4 (see the package docstring):
Redis acknowledged, Parquet fsync'd, dead letters acknowledged, a checkpoint when due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaException

from streamfs.checkpoint import CommitLog
from streamfs.deadletter import DeadLetterWriter
from streamfs.metrics import WorkerMetrics
from streamfs.offline import OfflineWriter
from streamfs.offline.writer import PartitionGuard
from streamfs.sources import KafkaReader, TopicPartitionKey
from streamfs.worker.checkpointing import Checkpointer
from streamfs.worker.partitions import PartitionTable

log = logging.getLogger(__name__)


class Committer:
    """Steps 2-5 of the protocol, after `write_online` (step 1, given by the worker)."""

    def __init__(
        self,
        *,
        write_online: Callable[[], None],
        offline: OfflineWriter,
        dead_letters: DeadLetterWriter,
        checkpointer: Checkpointer,
        commit_log: CommitLog,
        table: PartitionTable,
        metrics: WorkerMetrics,
        guard: PartitionGuard | None = None,
        on_fenced: Callable[[list[TopicPartitionKey]], None] = lambda partitions: None,
    ) -> None:
        self.guard = guard
        self.on_fenced = on_fenced
        self.write_online = write_online
        self.offline = offline
        self.dead_letters = dead_letters
        self.checkpointer = checkpointer
        self.commit_log = commit_log
        self.table = table
        self.metrics = metrics

    def flush(
        self,
        *,
        checkpoint: bool = False,
        partitions: Sequence[TopicPartitionKey] | None = None,
        background: bool = False,
    ) -> dict[TopicPartitionKey, int]:
        """Steps 1-4: make everything processed durable; return the offsets to commit.

        Writes Redis, flushes Parquet and the dead letters, optionally checkpoints the engine (in
        a child process with `background`, see checkpointing), and returns the next offset to
        read of each partition (all owned, or `partitions`) that moved since its last commit.
        """
        self.write_online()
        started = time.perf_counter()
        fenced = self.offline.flush(self.guard)
        self.metrics.sink_seconds.labels("parquet").observe(time.perf_counter() - started)
        if fenced:  # another worker claimed them: this one lost them without being told yet
            self.on_fenced(fenced)
        self.dead_letters.flush()
        owned = self.table.owned(partitions)
        if checkpoint:
            positions = self.table.positions
            self.checkpointer.save([(tp, positions[tp]) for tp in owned], background=background)
        return self.table.moved(owned)

    def commit_offsets(self, reader: KafkaReader | None, offsets: dict[TopicPartitionKey, int]) -> bool:
        """Step 5: commit flushed offsets to Kafka, then to the commit log. False if Kafka refused.

        A failed commit (broker down, rebalance in progress) is logged and counted, and retried
        with larger offsets at the next commit; nothing is lost because the output is flushed.
        """
        if not offsets or reader is None:
            return True
        try:
            reader.commit(offsets)
        except KafkaException as exc:
            self.metrics.sink_errors.labels("kafka").inc()
            log.warning("offset commit failed, retried at the next commit: %s", exc)
            return False
        self.commit_log.record(offsets)
        self.table.committed.update(offsets)
        self.metrics.commits.inc()
        return True
