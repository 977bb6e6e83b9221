"""THE loop: poll → decode → engine → sinks → (every interval) flush everything, then commit.

One `Worker` runs every view of a pipeline over its Kafka topics in one consumer group. Start
as many workers as there are partitions; Kafka's group protocol spreads the partitions.

The commit protocol (Worker.commit = Worker.flush, then Worker.commit_offsets) is the only place
offsets advance:

  1. Redis: the serving state of every key changed since the last write is written and
     acknowledged (this also happens between commits, as often as WorkerOptions allow).
  2. Parquet: feature rows and archived events are flushed (fsync'd, renamed into place).
  3. Dead letters: the producer is flushed and every rejection acknowledged.
  4. Engine checkpoint (every `checkpoint_interval_s`, on revoke and at shutdown): a snapshot of
     each partition's state at exactly the offsets about to be committed.
  5. The offsets are committed to Kafka, synchronously, then recorded in the worker's commit
     log (CommitLog). A refused commit is retried at the next one; the output stays flushed.

A crash anywhere before 5 replays from the previous commit, and replaying changes nothing:
Redis writes are whole-value overwrites of deterministic state, Parquet files of offsets that
were never committed are deleted when the partition is assigned again (OfflineWriter.truncate),
checkpoints beyond the commit are discarded, and the engine state is rebuilt from the newest
checkpoint plus the event archive up to the committed offset. Dead letters are at-least-once.

Requirement: every view reading a topic is keyed by the same entity, and producers key the
Kafka messages by it, so one entity's events live in one partition (its order and its state are
per partition). A pipeline that breaks this is refused at start-up (see check_co_partitioning).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import redis
from confluent_kafka import KafkaException

from streamfs.checkpoint import CheckpointStore, CommitLog
from streamfs.deadletter import DeadLetterWriter
from streamfs.decode import Decoder
from streamfs.engine import Engine, Key
from streamfs.errors import ConfigError, ServiceError
from streamfs.metrics import HealthServer, WorkerMetrics
from streamfs.offline import OfflineWriter
from streamfs.online import OnlineWriter
from streamfs.records import Position, Rejected, SourceEvent
from streamfs.recovery import recover_partition
from streamfs.registry import Pipeline
from streamfs.settings import Settings
from streamfs.sources import KafkaReader, Record, TopicPartitionKey, arrival_ms
from streamfs.status import record_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """How the loop paces itself. Defaults favour freshness at steady rates and big batches under load."""

    batch_size: int = 5_000
    poll_timeout_s: float = 0.05
    commit_interval_s: float = 2.0
    online_interval_s: float = 0.25
    """Redis is written at least this often while keys change: each write serializes every changed
    key once, so coalescing batches trades a little freshness for a lot of throughput under load."""
    adaptive_online: bool = True
    """Write Redis sooner when writes are cheap: wait min(online_interval_s, online_cost_ratio *
    the last write's duration), so a lightly loaded worker writes after every batch and a busy
    one coalesces up to online_interval_s."""
    online_cost_ratio: float = 4.0
    checkpoint_interval_s: float = 30.0
    until_caught_up: bool = False
    serve_metrics: bool = True
    max_backoff_s: float = 5.0


def check_co_partitioning(pipeline: Pipeline) -> None:
    """Refuse views of one topic keyed by different entities (their events would be split by partition)."""
    for topic in pipeline.topics:
        views = pipeline.views_for_topic(topic)
        keyings = {view.entity.join_keys for view in views}
        if len(keyings) > 1:
            described = ", ".join(f"{v.name} ({'+'.join(v.entity.join_keys)})" for v in views)
            raise ConfigError(
                f"views reading topic {topic!r} are keyed by different entities: {described}. "
                "Kafka partitions a topic by one key, so one entity's events and state would be split "
                "across partitions. Give each entity its own topic keyed by that entity "
                "(streamfs does not repartition topics yet)."
            )


class Worker:
    """Consumes a pipeline's topics and keeps Redis and Parquet up to date. See the module docstring."""

    def __init__(self, pipeline: Pipeline, settings: Settings, options: WorkerOptions | None = None) -> None:
        check_co_partitioning(pipeline)
        self.pipeline = pipeline
        self.settings = settings
        self.options = options or WorkerOptions()
        self.engine = Engine(pipeline.views)
        self.decoders = {source.topic: Decoder(source) for source in pipeline.sources}
        self.metrics = WorkerMetrics()
        self.redis = redis.Redis.from_url(
            settings.require_redis(), socket_timeout=5, socket_connect_timeout=5
        )
        self.online = OnlineWriter(
            self.redis, list(self.engine.views.values()), namespace=settings.online_namespace
        )
        self.offline = OfflineWriter(settings.data_dir, pipeline.views)
        self.dead_letters = DeadLetterWriter(settings.producer_config())
        self.checkpoints = CheckpointStore(settings.data_dir / "checkpoints", settings.group_id)
        self.commit_log = CommitLog(settings.data_dir / "checkpoints", settings.group_id)
        self.reader: KafkaReader | None = None
        self.positions: dict[TopicPartitionKey, int] = {}  # next offset to read, per owned partition
        self.committed: dict[TopicPartitionKey, int] = {}
        self.targets: dict[TopicPartitionKey, int] = {}  # high watermarks for --until-caught-up
        self.unwritten: dict[str, set[Key]] = {name: set() for name in self.engine.views}
        self.arrivals: list[int] = []  # arrival times of events not yet visible in Redis
        self.stop_requested = False
        self._last_commit = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self._last_online = time.monotonic()
        self._last_write_s = 0.0  # duration of the last Redis write, for adaptive_online
        self._health: HealthServer | None = None
        self._quiet_since: float | None = None  # when consume last started returning nothing
        self._newest: dict[str, int] = {}  # newest event time per view, for `streamfs status`
        self._redis_run_id: str | None = None  # a new run_id means Redis restarted: rewrite every key
        self._rewound: set[TopicPartitionKey] = set()  # partitions whose records went below the position

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
            with _stop_signals(self):
                while not self.stop_requested:
                    consumed = self.step()
                    self._quiet_since = None if consumed else (self._quiet_since or time.monotonic())
                    if self.options.until_caught_up and self.caught_up():
                        log.info("caught up with the end offsets seen at assignment")
                        break
            committed = self.commit(checkpoint=True)
        finally:
            self.reader.close()
            self.dead_letters.flush()
            if self._health is not None:
                self._health.stop()
        if not committed:
            log.error("stopped with output flushed but the final offset commit failed; a restart replays it")
        return 0 if committed else 1

    def step(self) -> int:
        """One turn of the loop: consume a batch, process it, write Redis, commit if due."""
        assert self.reader is not None
        records = self.reader.consume(self.options.batch_size, self.options.poll_timeout_s)
        self.metrics.last_progress.set_to_current_time()
        if records:
            self.metrics.batch_size.observe(len(records))
            self.process(records)
        if time.monotonic() - self._last_online >= self.online_wait():
            self._write_online()
        if time.monotonic() - self._last_commit >= self.options.commit_interval_s:
            self.commit(checkpoint=self.checkpoint_due())
        return len(records)

    def online_wait(self) -> float:
        """Seconds between Redis writes now (see WorkerOptions.adaptive_online)."""
        interval = self.options.online_interval_s
        if not self.options.adaptive_online:
            return interval
        return min(interval, self.options.online_cost_ratio * self._last_write_s)

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self._last_checkpoint >= self.options.checkpoint_interval_s

    def caught_up(self) -> bool:
        assert self.reader is not None
        if not self.reader.assignment or self._quiet_since is None:
            return False
        if time.monotonic() - self._quiet_since < 0.5:
            return False  # the fetcher may still deliver records past a stale end offset
        if any(self.positions.get(tp, 0) < self.targets.get(tp, 0) for tp in self.reader.assignment):
            return False
        # Confirm with fresh end offsets: a broker may report a stale high watermark at assignment
        # (seen on the embedded broker for partitions it had not served yet).
        try:
            for tp in self.reader.assignment:
                self.targets[tp] = max(self.targets.get(tp, 0), self.reader.watermarks(tp)[1])
        except KafkaException as exc:
            log.warning("cannot read end offsets (broker unavailable?): %s", exc)
            return False
        return all(self.positions.get(tp, 0) >= self.targets[tp] for tp in self.reader.assignment)

    # ------------------------------------------------------------------ data path

    def process(self, records: Sequence[Record]) -> None:
        """Decode and aggregate records of owned partitions (see `assign`); output waits for `flush`.

        Records of partitions not owned are ignored (late records of a revoked partition), and so
        are records below a partition's position: they were processed already, and a broker only
        sends them again after an offset reset (e.g. a restarted in-memory broker whose topic was
        re-created); they are counted in streamfs_records_skipped and logged once per partition.
        """
        by_topic: dict[str, tuple[list[SourceEvent], list[Rejected]]] = {}
        for record in records:
            topic, partition, offset = record.topic, record.partition, record.offset
            position = self.positions.get((topic, partition))
            if position is None:
                continue  # a late record of a partition revoked during this consume call
            if offset < position:
                self._skip_below_position((topic, partition), offset, position)
                continue
            decoded = self.decoders[topic].decode(
                record.value, arrival_time=arrival_ms(record), position=Position(topic, partition, offset)
            )
            events, rejected = by_topic.setdefault(topic, ([], []))
            if isinstance(decoded, Rejected):
                rejected.append(decoded)
            else:
                events.append(decoded)
            self.positions[(topic, partition)] = offset + 1
        for topic, (events, rejected) in by_topic.items():
            self.metrics.consumed.labels(topic).inc(len(events) + len(rejected))
            self.offline.add_events(self.pipeline.source(topic), events)
            for engine in self.engine.for_topic(topic):
                result = engine.process(events)
                self.offline.add_rows(result.rows)
                if result.rows:
                    newest = max(row.event_time for row in result.rows)
                    self._newest[engine.name] = max(newest, self._newest.get(engine.name, newest))
                rejected.extend(result.rejected)
                self.metrics.accepted.labels(engine.name).inc(len(result.rows))
                if result.filtered:
                    self.metrics.filtered.labels(engine.name).inc(result.filtered)
            for item in rejected:
                self.metrics.rejected.labels(item.reason, item.view or "").inc()
            self.dead_letters.add(topic, rejected)
            self.arrivals.extend(event.arrival_time for event in events)

    def _skip_below_position(self, tp: TopicPartitionKey, offset: int, position: int) -> None:
        self.metrics.skipped.labels(tp[0], str(tp[1])).inc()
        if tp not in self._rewound:
            self._rewound.add(tp)
            log.error(
                "%s[%d]: the broker sent offset %d below this worker's position %d (offsets reset: topic "
                "re-created or broker data lost?); skipping records below %d, committed output untouched",
                tp[0],
                tp[1],
                offset,
                position,
                position,
            )

    def _write_online(self) -> None:
        """Write every changed key's serving state to Redis; on failure pause, back off, retry."""
        self._last_online = time.monotonic()
        for engine in self.engine.views.values():
            self.unwritten[engine.name].update(engine.take_dirty())
        if not any(self.unwritten.values()):
            self.arrivals.clear()
            return
        backoff = 0.1
        paused = False
        while True:
            try:
                started = time.perf_counter()
                self._check_redis_restart()
                progress: dict[str, dict[str, Any]] = {}
                for name, keys in self.unwritten.items():
                    if keys:
                        engine = self.engine.views[name]
                        self.online.write(engine, keys)
                        keys.clear()
                        progress[name] = {
                            "max_event_time": self._newest.get(name, 0),
                            "written_ms": int(time.time() * 1000),
                            "keys": engine.key_count(),
                        }
                record_progress(self.redis, self.settings.online_namespace, self.settings.group_id, progress)
                self._last_write_s = time.perf_counter() - started
                self.metrics.sink_seconds.labels("redis").observe(self._last_write_s)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.metrics.sink_errors.labels("redis").inc()
                if self.stop_requested and not self.options.until_caught_up:
                    raise ServiceError(f"Redis unavailable at shutdown: {exc}") from exc
                if not paused and self.reader is not None:
                    log.warning("Redis unavailable (%s); pausing consumption and retrying", exc)
                    self.reader.pause()
                    self.metrics.paused.set(1)
                    paused = True
                self._idle(backoff)
                backoff = min(backoff * 2, self.options.max_backoff_s)
        if paused and self.reader is not None:
            log.info("Redis is back; resuming consumption")
            self.reader.resume()
            self.metrics.paused.set(0)
        now = time.time() * 1000
        for arrival in self.arrivals:
            self.metrics.freshness.observe(max(0.0, (now - arrival) / 1000))
        self.arrivals.clear()

    def _check_redis_restart(self) -> None:
        """A Redis that restarted (new run_id: a restart, or a failover) may have lost keys: rewrite all.

        That is the view metadata (`<ns>:views`, which FeatureClient reads) and every key's state.
        """
        run_id = str(self.redis.info("server")["run_id"])
        if self._redis_run_id is not None and run_id != self._redis_run_id:
            log.warning("Redis restarted (run_id changed); writing view metadata and every owned key again")
            self.online.register()
            for engine in self.engine.views.values():
                self.unwritten[engine.name].update(engine.keys())
        self._redis_run_id = run_id

    def _idle(self, seconds: float) -> None:
        """Wait while keeping the group membership alive (consume on paused partitions returns nothing)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.reader is not None:
                self.reader.consume(1, min(0.1, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(min(0.1, seconds))

    def flush(
        self, *, checkpoint: bool = False, partitions: Sequence[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, int]:
        """Steps 1-4 of the commit protocol: make everything processed durable; return the offsets to commit.

        Writes Redis, flushes Parquet and the dead letters, optionally checkpoints the engine, and
        returns the next offset to read of each partition (all owned, or `partitions`) that moved
        since its last commit. A host that commits offsets itself (Faust) commits these.
        """
        self._write_online()
        started = time.perf_counter()
        self.offline.flush()
        self.metrics.sink_seconds.labels("parquet").observe(time.perf_counter() - started)
        self.dead_letters.flush()
        owned = (
            list(self.positions) if partitions is None else [tp for tp in partitions if tp in self.positions]
        )
        if checkpoint:
            for tp in owned:
                self._save_checkpoint(tp)
            self._last_checkpoint = time.monotonic()
        return {tp: self.positions[tp] for tp in owned if self.positions[tp] != self.committed.get(tp)}

    def commit_offsets(self, offsets: dict[TopicPartitionKey, int]) -> bool:
        """Step 5: commit flushed offsets to Kafka, then to the commit log. False if Kafka refused.

        A failed commit (broker down, rebalance in progress) is logged and counted, and retried
        with larger offsets at the next commit; nothing is lost because the output is flushed.
        """
        if not offsets or self.reader is None:
            return True
        try:
            self.reader.commit(offsets)
        except KafkaException as exc:
            self.metrics.sink_errors.labels("kafka").inc()
            log.warning("offset commit failed, retried at the next commit: %s", exc)
            return False
        self.commit_log.record(offsets)
        self.committed.update(offsets)
        self.metrics.commits.inc()
        return True

    def commit(
        self, *, checkpoint: bool = False, partitions: Sequence[TopicPartitionKey] | None = None
    ) -> bool:
        """The commit protocol (module docstring): `flush`, then `commit_offsets`."""
        done = self.commit_offsets(self.flush(checkpoint=checkpoint, partitions=partitions))
        self._last_commit = time.monotonic()
        self._update_lag()
        return done

    def _save_checkpoint(self, tp: TopicPartitionKey) -> None:
        topic, partition = tp
        snapshots = {engine.name: engine.snapshot(partition) for engine in self.engine.for_topic(topic)}
        self.checkpoints.save(topic, partition, self.positions[tp], snapshots)

    def _update_lag(self) -> None:
        if self.reader is None:
            return
        for tp, position in self.positions.items():
            target = self.targets.get(tp)
            if target is not None:
                self.metrics.lag.labels(tp[0], str(tp[1])).set(max(0, target - position))

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """KafkaReader's callback: recover each new partition at its resume offset; return the offsets."""
        assert self.reader is not None
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
                self.metrics.resume_beyond_end.labels(*map(str, tp)).inc()
                log.error(
                    "%s[%d]: resuming at offset %d beyond the end offset %d: the broker lost records or "
                    "the topic was re-created (an in-memory broker restarted?). Records it now holds below "
                    "%d will not be processed; committed output is kept (docs/worker.md, broker restarts)",
                    tp[0], tp[1], starts[tp], high, starts[tp],
                )  # fmt: skip
            self.assign(tp, starts[tp], high)
        self.metrics.ready = True
        log.info("assigned %s", ", ".join(f"{t}[{p}]@{starts[(t, p)]}" for t, p in partitions))
        return starts

    def resume_offset(self, tp: TopicPartitionKey, kafka_committed: int | None, low: int = 0) -> int:
        """Where to resume: the larger of Kafka's committed offset and the commit log's, else `low`."""
        known = [o for o in (kafka_committed, self.commit_log.offset(*tp)) if o is not None]
        return max(known) if known else low

    def assign(self, tp: TopicPartitionKey, committed: int, high: int | None = None) -> None:
        """Take a partition whose output is committed up to `committed`: recover its state there.

        After this, `process` accepts the partition's records from offset `committed` on. `high`
        (the end offset seen now) is the target of until_caught_up.
        """
        self.recover(tp, committed)
        self.positions[tp] = committed
        self.committed[tp] = committed
        self._rewound.discard(tp)
        if high is not None:
            self.targets[tp] = high

    def recover(self, tp: TopicPartitionKey, committed: int) -> None:
        """Make the state of one partition exactly what it was at `committed` (streamfs.recovery)."""
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
        owned = [tp for tp in partitions if tp in self.positions]
        if owned:
            try:
                self.commit(checkpoint=True, partitions=owned)
            except (ServiceError, redis.RedisError, OSError) as exc:
                log.warning("could not commit revoked partitions (their new owner replays): %s", exc)
        self._forget(owned)

    def _on_lost(self, partitions: list[TopicPartitionKey]) -> None:
        log.warning("partitions lost without revoke: %s", partitions)
        self._forget(partitions)

    def _forget(self, partitions: Sequence[TopicPartitionKey]) -> None:
        for tp in partitions:
            self.offline.discard(*tp)
            for engine in self.engine.for_topic(tp[0]):
                engine.drop(tp[1])
            self.positions.pop(tp, None)
            self.committed.pop(tp, None)
            self.targets.pop(tp, None)


@contextmanager
def _stop_signals(worker: Worker) -> Iterator[None]:
    """SIGTERM/SIGINT ask the loop to stop after the current batch; it then flushes and commits."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after this batch", signum)
        worker.stop_requested = True

    try:
        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: the caller stops the worker itself
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_worker(spec: str, settings: Settings | None = None, options: WorkerOptions | None = None) -> int:
    """`streamfs run`: load a pipeline by import string and run a worker until stopped."""
    from streamfs.registry import load_pipeline

    return Worker(load_pipeline(spec), settings or Settings.load(), options).run()
