"""Shared checks for worker tests: produce, run a worker process, and compare its outputs exactly.

The reference is the engine's own evaluation: the source topic read back partition by partition
in offset order into a fresh ViewEngine (`expected_rows`). The worker's Parquet rows must equal
it row for row with no duplicates (`parquet_rows`), and Redis, read through the FeatureClient,
must equal ViewEngine.serve at the same read time (`assert_online_matches`).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streamfs.decode import Decoder
from streamfs.engine import ViewEngine
from streamfs.offline import scan_features
from streamfs.online import FeatureClient
from streamfs.produce import EventProducer
from streamfs.records import Position, SourceEvent
from streamfs.registry import Pipeline
from streamfs.settings import Settings

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
Rows = dict[tuple[Any, ...], tuple[Any, ...]]


def load_pipe(topic: str) -> ModuleType:
    """tests/integration/worker_pipeline.py with its source reading `topic`."""
    os.environ["WORKER_TEST_TOPIC"] = topic
    import worker_pipeline

    return importlib.reload(worker_pipeline)


def produce(
    pipe: Any,
    settings: Settings,
    events: Iterable[dict[str, Any]],
    extra: Sequence[tuple[bytes | None, bytes | None]] = (),
) -> None:
    """Publish events keyed by account (EventProducer), then raw (key, value) messages."""
    producer = EventProducer(Pipeline((pipe.account_activity,)), settings.producer_config())
    producer.send_all(events)
    producer.flush()
    if extra:
        raw = Producer(settings.producer_config())
        for key, value in extra:
            raw.produce(pipe.TOPIC, key=key, value=value)
        raw.flush(30)


def read_topic(settings: Settings, topic: str, *, expect: int, timeout: float = 30.0) -> list[Any]:
    consumer = Consumer(settings.consumer_config(group_id=f"reader-{time.monotonic_ns()}"))
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < expect and time.monotonic() < deadline:
        messages.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
    consumer.close()
    return messages


def end_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer(settings.consumer_config(group_id=f"ends-{time.monotonic_ns()}"))
    try:
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1])
            for p in range(partitions)
        }
    finally:
        consumer.close()


def committed_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (-1 where none)."""
    consumer = Consumer(settings.consumer_config(group_id=settings.group_id))
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def expected_rows(
    pipe: Any, settings: Settings, *, total: int | None = None
) -> tuple[list[ViewEngine], Rows]:
    """Replay the source topic partition by partition into fresh engines: the reference output.

    Rows are keyed by (partition, offset) and hold every view's values (pipe.VIEWS, in order):
    the views share their source, key and lateness, so they accept the same events."""
    if total is None:
        read_topic(settings, pipe.TOPIC, expect=1)  # wait for visibility
        messages = read_topic(settings, pipe.TOPIC, expect=10**9, timeout=8)
    else:
        messages = read_topic(settings, pipe.TOPIC, expect=total, timeout=60)
        assert len(messages) == total, f"read {len(messages)} of {total} records back"
    decoder = Decoder(pipe.txns)
    engines = [ViewEngine(view) for view in pipe.VIEWS]
    per_view: list[Rows] = [{} for _ in engines]
    for partition in sorted({m.partition() for m in messages}):
        events = []
        for m in sorted((m for m in messages if m.partition() == partition), key=lambda m: m.offset()):
            decoded = decoder.decode(
                m.value(), arrival_time=m.timestamp()[1], position=Position(m.topic(), partition, m.offset())
            )
            if isinstance(decoded, SourceEvent):
                events.append(decoded)
        for engine, rows in zip(engines, per_view, strict=True):
            for row in engine.process(events).rows:
                assert row.position is not None
                rows[(row.position.partition, row.position.offset)] = row.values
    return engines, _merged(per_view)


def _merged(per_view: list[Rows]) -> Rows:
    """Rows of several views by position, their values concatenated in view order; a position
    some view has no row for holds a marker, so it never equals a complete row."""
    positions = set().union(*per_view)
    return {
        position: tuple(v for rows in per_view for v in rows.get(position, ("<no row>",)))
        for position in positions
    }


def parquet_rows(settings: Settings, pipe: Any) -> Rows:
    """The worker's feature rows of every view by (partition, offset); fails on a duplicate."""
    per_view: list[Rows] = []
    for view in pipe.VIEWS:
        table = scan_features(settings.data_dir, view).to_pylist()
        names = view.feature_names
        out: Rows = {}
        for row in table:
            position = (row["partition"], row["offset"])
            assert position not in out, f"duplicate {view.name} row for {position}"
            out[position] = tuple(row[name] for name in names)
        per_view.append(out)
    return _merged(per_view)


def assert_rows_equal(got: Rows, expected: Rows) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {len(missing)} {missing[:5]}, extra {len(extra)} {extra[:5]}"
    wrong = [p for p in expected if got[p] != expected[p]]
    assert not wrong, f"{len(wrong)} rows differ, first {wrong[0]}: {got[wrong[0]]} != {expected[wrong[0]]}"


def assert_online_matches(settings: Settings, pipe: Any, engines: Sequence[ViewEngine]) -> None:
    client = FeatureClient(settings.require_redis(), list(pipe.VIEWS), namespace=settings.online_namespace)
    try:
        for engine in engines:
            keys = sorted(engine.keys())
            as_of = max(engine.watermark(k) or 0 for k in keys) + 30 * 60_000
            result = client.get_features(engine.name, [k[0] for k in keys], as_of=as_of).to_dicts()
            for key, got in zip(keys, result, strict=True):
                assert got == engine.serve(key, as_of), (engine.name, key)
    finally:
        client.close()


def assert_outputs_exact(pipe: Any, settings: Settings, *, total: int | None = None) -> Rows:
    """Parquet rows and Redis values equal the engine's evaluation of the whole topic."""
    engine, expected = expected_rows(pipe, settings, total=total)
    assert_rows_equal(parquet_rows(settings, pipe), expected)
    assert_online_matches(settings, pipe, engine)
    return expected


def worker_env(settings: Settings, topic: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}",
        "WORKER_TEST_TOPIC": topic,
        "STREAMFS_KAFKA_BOOTSTRAP": settings.require_kafka(),
        "STREAMFS_REDIS_URL": settings.require_redis(),
        "STREAMFS_KAFKA_DEV_BROKER": "1" if settings.kafka_dev_broker else "0",
        "STREAMFS_DATA_DIR": str(settings.data_dir),
        "STREAMFS_GROUP_ID": settings.group_id,
        "STREAMFS_ONLINE_NAMESPACE": settings.online_namespace,
        "STREAMFS_LOG_LEVEL": "INFO",
    }


def worker_process(
    settings: Settings, topic: str, *options: str, log: Path | None = None, until_caught_up: bool = True
) -> subprocess.Popen[bytes]:
    """`streamfs run worker_pipeline` in a subprocess (small batches, frequent commits)."""
    command = [
        sys.executable, "-m", "streamfs.cli", "run", "worker_pipeline", "--no-metrics",
        "--batch-size", "200", "--commit-interval", "0.3", *options,
    ]  # fmt: skip
    if until_caught_up:
        command.append("--until-caught-up")
    if log is None:
        return subprocess.Popen(
            command, env=worker_env(settings, topic), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, env=worker_env(settings, topic), stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a worker process that is still running (test cleanup)."""
    if process.poll() is None:
        process.kill()
        process.wait(10)
