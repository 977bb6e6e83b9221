"""THE loop: poll → decode → engine → sinks → (every interval) flush everything, then commit.

`Worker` wires the parts (each in its own module) and runs the consume loop; it is also the
API of hosts that consume Kafka themselves (docs/worker.md, hosts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis
from confluent_kafka import KafkaException

from streamfs import decode_batch
from streamfs.checkpoint import CheckpointStore, CommitLog
from streamfs.deadletter import DeadLetterWriter
from streamfs.engine import Engine
from streamfs.errors import ServiceError
from streamfs.gcpacing import batch_pacing
from streamfs.metrics import HealthServer, WorkerMetrics
from streamfs.offline import OfflineWriter
from streamfs.online import OnlineWriter
from streamfs.recovery import recover_partition
from streamfs.registry import Pipeline
from streamfs.settings import Settings
from streamfs.sources import KafkaReader, PartitionRun, Record, TopicPartitionKey
from streamfs.worker.checkpointing import Checkpointer
from streamfs.worker.commit import Committer
from streamfs.worker.datapath import DataPath
from streamfs.worker.online_sync import OnlineSync
from streamfs.worker.options import WorkerOptions, check_co_partitioning
from streamfs.worker.ownership import PartitionOwnership
from streamfs.worker.partitions import PartitionTable
from streamfs.worker.signals import stop_signals

log = logging.getLogger(__name__)


class Worker:
    """Consumes a pipeline's topics and keeps Redis and Parquet up to date. See streamfs.worker."""

    def __init__(self, pipeline: Pipeline, settings: Settings, options: WorkerOptions | None = None) -> None:
        check_co_partitioning(pipeline)
        self.pipeline = pipeline
        self.settings = settings
        self.options = options = options or WorkerOptions()
        self.engine = Engine(pipeline.views)
        self.metrics = WorkerMetrics()
        self.redis = redis.Redis.from_url(
            settings.require_redis(), socket_timeout=5, socket_connect_timeout=5
        )
        self.offline = OfflineWriter(settings.data_dir, pipeline.views)
        self.dead_letters = DeadLetterWriter(settings.producer_config())
        self.checkpoints = CheckpointStore(settings.data_dir / "checkpoints", settings.group_id)
        self.commit_log = CommitLog(settings.data_dir / "checkpoints", settings.group_id)
        self.ownership = PartitionOwnership(self.checkpoints)
        self.partitions = PartitionTable(self.commit_log, self.metrics)
        self.online = OnlineSync(
            self.engine,
            self.redis,
            OnlineWriter(self.redis, list(self.engine.views.values()), namespace=settings.online_namespace),
            namespace=settings.online_namespace,
            group_id=settings.group_id,
            options=options,
            metrics=self.metrics,
            guard=self.ownership.writing_online,
            on_fenced=self._fenced,
        )
        self.data_path = DataPath(
            pipeline,
            self.engine,
            table=self.partitions,
            offline=self.offline,
            online=self.online,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
        )
        self.checkpointer = Checkpointer(self.engine, self.checkpoints, options.checkpoint_interval_s)
        self.committer = Committer(
            write_online=self._write_online,
            offline=self.offline,
            dead_letters=self.dead_letters,
            checkpointer=self.checkpointer,
            commit_log=self.commit_log,
            table=self.partitions,
            metrics=self.metrics,
            guard=self.ownership.writing,
            on_fenced=self._fenced,
        )
        self.reader: KafkaReader | None = None
        self.stop_requested = False
        self._last_commit = time.monotonic()
        self._health: HealthServer | None = None
        self._quiet_since: float | None = None  # when consume last started returning nothing

    @property
    def positions(self) -> dict[TopicPartitionKey, int]:
        """The next offset to read of each owned partition."""
        return self.partitions.positions

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Consume until stopped (SIGTERM/SIGINT) or, with until_caught_up, until caught up.

        Returns 0, or 1 when the final offset commit failed (the output is flushed; a restart
        replays from the previous commit, which changes nothing).
        """
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.require_kafka()})
        self.dead_letters.ensure_topics(admin, self.pipeline.topics)
        if self.options.serve_metrics:
            self._health = HealthServer(self.metrics, self.settings.metrics_port).start()
            log.info("serving /metrics, /healthz and /readyz on port %d", self._health.port)
        self.warm_up()
        self.reader = KafkaReader(
            self.settings.consumer_config(),
            self.pipeline.topics,
            on_assign=self._on_assign,
            on_revoke=self.release,
            on_lost=self._on_lost,
        )
        log.info(
            "worker started: pipeline %s, topics %s, group %s",
            self.pipeline.name,
            ", ".join(self.pipeline.topics),
            self.settings.group_id,
        )
        try:
            with stop_signals(self.request_stop), batch_pacing(self.options.gc_thresholds):
                while not self.stop_requested:
                    consumed = self.step()
                    self._quiet_since = None if consumed else (self._quiet_since or time.monotonic())
                    if self.options.until_caught_up and self.caught_up():
                        log.info("caught up with the end offsets seen at assignment")
                        break
            self.online.check_restart_next()  # (the last write must not miss a Redis restart)
            committed = self.commit(checkpoint=True)
        finally:
            self.committer.close()
            self.reader.close()
            self.checkpointer.reap(block=True)
            self.dead_letters.flush()
            if self._health is not None:
                self._health.stop()
        if not committed:
            log.error("stopped with output flushed but the final offset commit failed; a restart replays it")
        return 0 if committed else 1

    def warm_up(self) -> None:
        """Start-up work the first batches would otherwise stall on: loading the compiled
        kernel's functions (engine/kernel/warmup.py) and pyarrow's time zones (decode_batch)."""
        decode_batch.warm_up()
        for view in self.engine.views.values():
            view.warm_up()

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics, /healthz and /readyz are served on (None when not serving)."""
        return None if self._health is None else self._health.port

    def request_stop(self) -> None:
        """Stop after the current batch (then flush and commit): what SIGTERM/SIGINT do."""
        self.stop_requested = True

    def step(self) -> int:
        """One turn of the loop: consume a batch, process it, write Redis, commit if due."""
        assert self.reader is not None
        self._finish_background_write(block=False)
        self.committer.release_written()
        count, runs = self.reader.consume(self.options.batch_size, self.options.poll_timeout_s)
        self.metrics.last_progress.set_to_current_time()
        if count:
            self.metrics.batch_size.observe(count)
            self.process_runs(runs)
        if self.online.due(backlogged=count >= self.options.batch_size):
            self._write_online()
        if time.monotonic() - self._last_commit >= self.options.commit_interval_s:
            if self.options.background_parquet:
                self.commit_in_background()
            else:
                self.commit(checkpoint=self.checkpoint_due(), background=self.options.background_checkpoints)
        return count

    def checkpoint_due(self) -> bool:
        return self.checkpointer.due()

    def caught_up(self) -> bool:
        assert self.reader is not None
        if not self.reader.assignment or self._quiet_since is None:
            return False
        if time.monotonic() - self._quiet_since < 0.5:
            return False  # the fetcher may still deliver records past a stale end offset
        positions, targets = self.partitions.positions, self.partitions.targets
        if any(positions.get(tp, 0) < targets.get(tp, 0) for tp in self.reader.assignment):
            return False
        # Confirm with fresh end offsets: a broker may report a stale high watermark at assignment
        # (seen on the embedded broker for partitions it had not served yet).
        try:
            for tp in self.reader.assignment:
                targets[tp] = max(targets.get(tp, 0), self.reader.watermarks(tp)[1])
        except KafkaException as exc:
            log.warning("cannot read end offsets (broker unavailable?): %s", exc)
            return False
        return all(positions.get(tp, 0) >= targets[tp] for tp in self.reader.assignment)

    # ------------------------------------------------------------------ data path and commits

    def process(self, records: Sequence[Record]) -> None:
        """Decode and aggregate records of owned partitions (see `assign`); output waits for `flush`."""
        self.data_path.process(records)

    def process_runs(self, runs: Sequence[PartitionRun]) -> None:
        """`process` for records already grouped by partition (what KafkaReader.consume returns)."""
        self.data_path.process_runs(runs)

    def flush(
        self, *, checkpoint: bool = False, partitions: Sequence[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, int]:
        """Steps 1-4 of the commit protocol; the offsets to commit (a host such as Faust commits them)."""
        return self.committer.flush(checkpoint=checkpoint, partitions=partitions)

    def commit_offsets(self, offsets: dict[TopicPartitionKey, int]) -> bool:
        """Step 5: commit flushed offsets to Kafka, then to the commit log. False if Kafka refused."""
        return self.committer.commit_offsets(self.reader, offsets)

    def commit(
        self,
        *,
        checkpoint: bool = False,
        partitions: Sequence[TopicPartitionKey] | None = None,
        background: bool = False,
    ) -> bool:
        """The commit protocol (streamfs.worker): `flush`, then `commit_offsets`.

        `background`: a checkpoint is written by a child process (periodic ones, see checkpointing).
        """
        self.committer.finish(self.reader, block=True)  # (its offsets first, in order)
        flushed = self.committer.flush(checkpoint=checkpoint, partitions=partitions, background=background)
        done = self.commit_offsets(flushed)
        self._last_commit = time.monotonic()
        if self.reader is not None:
            self.partitions.update_lag()
        return done

    def commit_in_background(self) -> None:
        """A periodic commit with its Parquet files written on the writer thread: Redis and the
        checkpoint now, the offsets at a later step once the files are durable (Committer)."""
        self._finish_background_write(block=True)
        self.committer.flush_in_background(
            checkpoint=self.checkpoint_due(), background=self.options.background_checkpoints
        )
        self._last_commit = time.monotonic()

    def _finish_background_write(self, *, block: bool) -> None:
        """Commit a background Parquet write's offsets once its files are durable (Committer.finish)."""
        if self.committer.finish(self.reader, block=block) is not None:
            self.partitions.update_lag()

    def _write_online(self) -> None:
        self.online.write(
            pause=self._pause,
            resume=self._resume,
            idle=self._idle,
            give_up=lambda: self.stop_requested and not self.options.until_caught_up,
        )

    def _pause(self) -> None:
        if self.reader is not None:
            self.reader.pause()

    def _resume(self) -> None:
        if self.reader is not None:
            self.reader.resume()

    def _idle(self, seconds: float) -> None:
        """Wait while keeping the group membership alive. A record may still come back here: a
        partition assigned by a rebalance during the wait is not paused (pausing does hold back
        what librdkafka had queued for the partitions it paused). It is not processed now, so
        its partition is sought back to it and fetches it again after the resume (dropping it
        would lose it, since the records after it move the partition's position past it)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.reader is not None:
                _count, runs = self.reader.consume(1, min(0.1, max(0.0, deadline - time.monotonic())))
                for run in runs:
                    self.reader.seek((run.topic, run.partition), min(run.offsets))
            else:
                time.sleep(min(0.1, seconds))

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """KafkaReader's callback: recover each new partition at its resume offset; return the offsets."""
        assert self.reader is not None
        # A background Parquet write still running may hold rows of a partition lost and now
        # given back: let it end (fenced or not) before this claim and truncation.
        self.committer.finish(self.reader, block=True)
        try:
            committed = self.reader.committed(partitions)
        except KafkaException as exc:
            log.warning("cannot read the group's committed offsets (%s); resuming from the commit log", exc)
            committed = {}
        starts = {}
        for tp in partitions:
            try:
                low, high = self.reader.watermarks(tp)
            except KafkaException as exc:
                log.warning("cannot read %s[%d] watermarks: %s", tp[0], tp[1], exc)
                low, high = 0, 0
            starts[tp] = self.resume_offset(tp, committed.get(tp), low)
            if starts[tp] > high:
                self.partitions.warn_beyond_end(tp, starts[tp], high)
            self.assign(tp, starts[tp], high)
        self.metrics.ready = True
        log.info("assigned %s", ", ".join(f"{t}[{p}]@{starts[(t, p)]}" for t, p in partitions))
        return starts

    def resume_offset(self, tp: TopicPartitionKey, kafka_committed: int | None, low: int = 0) -> int:
        """Where to resume: the larger of Kafka's committed offset and the commit log's, else `low`."""
        return self.partitions.resume_offset(tp, kafka_committed, low)

    def assign(self, tp: TopicPartitionKey, committed: int, high: int | None = None) -> None:
        """Take a partition whose output is committed up to `committed`: recover its state there.

        After this, `process` accepts the partition's records from offset `committed` on. `high`
        (the end offset seen now) is the target of until_caught_up.
        """
        self.ownership.claim(tp)  # before recover truncates: a previous owner's flushes stop
        self.recover(tp, committed)
        self.partitions.take(tp, committed, high)

    def recover(self, tp: TopicPartitionKey, committed: int) -> None:
        """Make the state of one partition exactly what it was at `committed` (streamfs.recovery)."""
        self.checkpointer.forget(tp)
        recover_partition(
            self.pipeline.source(tp[0]),
            tp[1],
            committed,
            engines=self.engine.for_topic(tp[0]),
            offline=self.offline,
            checkpoints=self.checkpoints,
            data_dir=self.settings.data_dir,
        )

    def release(self, partitions: Sequence[TopicPartitionKey]) -> None:
        """Give partitions up (revoke): flush, checkpoint and commit them, then drop their state.

        If that fails (Redis or the broker down), their new owner replays from the last commit.
        """
        owned = self.partitions.owned(partitions)
        if owned:
            try:
                self.commit(checkpoint=True, partitions=owned)
            except (ServiceError, redis.RedisError, OSError) as exc:
                log.warning("could not commit revoked partitions (their new owner replays): %s", exc)
        self._forget(owned)

    def _on_lost(self, partitions: list[TopicPartitionKey]) -> None:
        log.warning("partitions lost without revoke: %s", partitions)
        self._forget(partitions)
        self.committer.finish(self.reader, block=True)  # (commits only partitions still owned)

    def _fenced(self, partitions: list[TopicPartitionKey]) -> None:
        log.warning(
            "partitions claimed by another worker before this one was told (unflushed output "
            "dropped; their new owner replays it): %s",
            partitions,
        )
        self._forget(partitions)

    def _forget(self, partitions: Sequence[TopicPartitionKey]) -> None:
        for tp in partitions:
            self.ownership.release(tp)
            self.offline.discard(*tp)
            self.online.forget(tp)
            for engine in self.engine.for_topic(tp[0]):
                engine.drop(tp[1])
            self.partitions.forget(tp)
            self.checkpointer.forget(tp)


def run_worker(spec: str, settings: Settings | None = None, options: WorkerOptions | None = None) -> int:
    """`streamfs run`: load a pipeline by import string and run a worker until stopped."""
    from streamfs.registry import load_pipeline

    return Worker(load_pipeline(spec), settings or Settings.load(), options).run()
