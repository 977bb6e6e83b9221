"""How a worker paces itself (WorkerOptions), and the start-up check of a pipeline's keying."""

from __future__ import annotations

from dataclasses import dataclass

from streamfs.errors import ConfigError
from streamfs.gcpacing import BATCH_THRESHOLDS
from streamfs.registry import Pipeline


@dataclass(frozen=True)
class WorkerOptions:
    """How the loop paces itself. Defaults favour freshness at steady rates and big batches under load."""

    batch_size: int = 5_000
    poll_timeout_s: float = 0.02
    """How long a poll waits for a whole batch: librdkafka returns only when batch_size records
    are there or this ran out, so at a steady rate every event waits up to this long first
    (at 20,000 events/s: 50 ms gave p50 128 ms, 20 ms 77 ms, docs/worker.md)."""
    commit_interval_s: float = 2.0
    online_interval_s: float = 0.25
    """Redis is written at least this often while keys change: each write serializes every changed
    key once, so coalescing batches trades a little freshness for a lot of throughput under load."""
    adaptive_online: bool = True
    """Write Redis sooner when writes are cheap: wait min(online_interval_s, online_cost_ratio *
    the last write's duration), so a lightly loaded worker writes after every batch and a busy
    one coalesces up to online_interval_s."""
    online_cost_ratio: float = 1.0
    """(adaptive_online) At most this many seconds of Redis writes per second waited: 1 lets
    writes take up to half the loop. With serving states twice as cheap per key (2026-11-25), 4 left
    a half-idle worker at 20,000 events/s waiting ~250 ms to coalesce writes that barely
    coalesce (keys repeat little within 250 ms)."""
    backlog_online_interval_s: float = 1.0
    """While the worker is catching up (the last poll filled a whole batch), Redis is written at
    most this often instead: the events being processed are already behind by the backlog, and
    each write serializes every changed key once, so fewer writes cost fewer serializations of the
    same keys. 0 keeps the rule above under backlog too."""
    checkpoint_interval_s: float = 30.0
    background_checkpoints: bool = True
    """Write periodic checkpoints in a forked child process (Linux), off the loop; revoke and
    shutdown checkpoints are always written in the loop. See streamfs.worker.checkpointing."""
    background_parquet: bool = True
    """Write the Parquet files of periodic commits on a thread while the loop goes on; their
    offsets are committed once the files are durable (streamfs.worker.commit). Revoke and
    shutdown commits write in the loop."""
    gc_thresholds: tuple[int, int, int] | None = BATCH_THRESHOLDS
    """CPython's cyclic GC thresholds while the loop runs (None: Python's own, 700/10/10): at
    700 the collector took 16 % of the worker's time (streamfs.gcpacing says why and what)."""
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
