"""The commit protocol: make everything processed durable (`flush`), then commit the offsets.

Offsets advance only here, and only after steps 1-4 (see the package docstring):
Redis acknowledged, Parquet fsync'd, dead letters acknowledged, a checkpoint when due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from confluent_kafka import KafkaException

from streamfs.checkpoint import CommitLog
from streamfs.deadletter import DeadLetterWriter
from streamfs.metrics import WorkerMetrics
from streamfs.offline import OfflineWriter
from streamfs.offline.writer import PartitionGuard, SealedOutput
from streamfs.sources import KafkaReader, TopicPartitionKey
from streamfs.worker.checkpointing import Checkpointer
from streamfs.worker.partitions import PartitionTable
from streamfs.worker.priority import lower_priority

log = logging.getLogger(__name__)

RELEASE_PER_TURN = 64
"""Written Arrow tables freed per turn of the loop (~15 µs each: ~1 ms per turn)."""


class PendingWrite(NamedTuple):
    """A commit whose Parquet files are being written on the writer thread."""

    sealed: SealedOutput
    written: Future[list[TopicPartitionKey]]
    offsets: dict[TopicPartitionKey, int]


class Committer:
    """Steps 2-5 of the protocol, after `write_online` (step 1, given by the worker).

    `flush` + `commit_offsets` do them in order. The worker's periodic commits use
    `flush_in_background` + `finish` instead: the Parquet files are written on a thread (pyarrow
    encodes, compresses and writes without the GIL) while the loop goes on, and the offsets are
    committed by `finish` once they are durable; a flush in the loop stalled it 50-100 ms every
    commit at 20,000 events/s. One such write at a time; every other commit finishes it first.
    """

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
        self._thread: ThreadPoolExecutor | None = None
        self._pending: PendingWrite | None = None
        self._written: list[SealedOutput] = []  # written, to be freed (release_written)

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
        fenced = self._write_parquet(self.offline.flush)
        if fenced:  # another worker claimed them: this one lost them without being told yet
            self.on_fenced(fenced)
        return self._dead_letters_and_checkpoint(partitions, checkpoint, background)

    def _write_parquet(
        self, write: Callable[[PartitionGuard | None], list[TopicPartitionKey]]
    ) -> list[TopicPartitionKey]:
        """Step 2, timed: `write` (a flush, or a sealed batch's write) under the ownership fence."""
        started = time.perf_counter()
        fenced = write(self.guard)
        self.metrics.sink_seconds.labels("parquet").observe(time.perf_counter() - started)
        return fenced

    def _dead_letters_and_checkpoint(
        self, partitions: Sequence[TopicPartitionKey] | None, checkpoint: bool, background: bool
    ) -> dict[TopicPartitionKey, int]:
        """Steps 3-4; the offsets to commit of the owned (or given) partitions that moved."""
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

    # ------------------------------------------------------------------ Parquet off the loop

    def flush_in_background(self, *, checkpoint: bool = False, background: bool = False) -> None:
        """Steps 1-4 with the Parquet write on the writer thread: Redis, dead letters and the
        checkpoint (when asked) now, the sealed rows and events while the loop goes on. Their
        offsets are committed by `finish`. Call `finish(block=True)` before this."""
        assert self._pending is None, "finish the previous background write first"
        self.write_online()
        sealed = self.offline.seal()
        offsets = self._dead_letters_and_checkpoint(None, checkpoint, background)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(
                1, thread_name_prefix="streamfs-parquet", initializer=lower_priority
            )
        self._pending = PendingWrite(sealed, self._thread.submit(self._write_sealed, sealed), offsets)

    def _write_sealed(self, sealed: SealedOutput) -> list[TopicPartitionKey]:
        """The writer thread's job: write the sealed output (the loop frees it: release_written)."""
        return self._write_parquet(sealed.write)

    def release_written(self, limit: int = RELEASE_PER_TURN) -> None:
        """Free up to `limit` tables of the oldest background write that is done
        (SealedOutput.release says why a few at each turn of the loop)."""
        if self._written and self._written[0].release(limit):
            self._written.pop(0)

    def finish(self, reader: KafkaReader | None, *, block: bool) -> bool | None:
        """Commit the offsets of the background write once its files are durable.

        None when there is none (or, without `block`, it is still writing); else whether Kafka
        took the commit. If the write failed, its rows and events go back to the writer's
        buffers (the next flush writes them; their offsets stay uncommitted) and the error is
        raised. Offsets of partitions given up meanwhile are not committed.
        """
        pending = self._pending
        if pending is None or (not block and not pending.written.done()):
            return None
        self._pending = None
        try:
            fenced = pending.written.result()
        except BaseException:
            self.offline.put_back(pending.sealed)
            raise
        self._written.append(pending.sealed)
        owned = self.table.positions
        if fenced and (still := [tp for tp in fenced if tp in owned]):
            self.on_fenced(still)
        offsets = {tp: offset for tp, offset in pending.offsets.items() if tp in owned and tp not in fenced}
        return self.commit_offsets(reader, offsets)

    def close(self) -> None:
        """Stop the writer thread (after `finish`)."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
