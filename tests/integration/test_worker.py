"""The worker against the real broker and Redis: end to end, bad input, and kill -9 + restart.

Every output is compared with the engine's own evaluation over the same events: the Parquet
rows with a fresh ViewEngine fed each partition's events in offset order, and Redis (through the
FeatureClient) with ViewEngine.serve at the same read time.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from streamfs.engine import ViewEngine
from streamfs.offline import scan_features
from streamfs.online import FeatureClient
from streamfs.produce import EventProducer
from streamfs.records import Position, SourceEvent
from streamfs.registry import Pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch, topic_factory: Any) -> Any:
    topic = topic_factory(3, prefix="txns")
    monkeypatch.setenv("WORKER_TEST_TOPIC", topic)
    import worker_pipeline

    return importlib.reload(worker_pipeline)


def produce(
    pipe: Any, settings: Settings, events: list[dict[str, Any]], extra: list[tuple[bytes | None, bytes]] = ()
) -> None:  # type: ignore[assignment]
    producer = EventProducer(Pipeline((pipe.account_activity,)), settings.producer_config())
    producer.send_all(events)
    producer.flush()
    if extra:
        from confluent_kafka import Producer

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


def expected_rows(pipe: Any, settings: Settings) -> tuple[ViewEngine, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Replay the source topic partition by partition into a fresh engine: the reference output."""
    from streamfs.decode import Decoder

    messages = read_topic(settings, pipe.TOPIC, expect=1)  # wait for visibility
    messages = read_topic(settings, pipe.TOPIC, expect=10**9, timeout=8)
    decoder = Decoder(pipe.txns)
    engine = ViewEngine(pipe.account_activity)
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for partition in sorted({m.partition() for m in messages}):
        events = []
        for m in sorted((m for m in messages if m.partition() == partition), key=lambda m: m.offset()):
            decoded = decoder.decode(
                m.value(), arrival_time=m.timestamp()[1], position=Position(m.topic(), partition, m.offset())
            )
            if isinstance(decoded, SourceEvent):
                events.append(decoded)
        for row in engine.process(events).rows:
            assert row.position is not None
            rows[(row.position.partition, row.position.offset)] = row.values
    return engine, rows


def parquet_rows(settings: Settings, pipe: Any) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    table = scan_features(settings.data_dir, pipe.account_activity).to_pylist()
    names = pipe.account_activity.feature_names
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in table:
        position = (row["partition"], row["offset"])
        assert position not in out, f"duplicate feature row for {position}"
        out[position] = tuple(row[name] for name in names)
    return out


def assert_online_matches(settings: Settings, pipe: Any, engine: ViewEngine) -> None:
    client = FeatureClient(
        settings.require_redis(), [pipe.account_activity], namespace=settings.online_namespace
    )
    keys = sorted(engine.keys())
    as_of = max(engine.watermark(k) or 0 for k in keys) + 30 * 60_000
    result = client.get_features("account_activity", [k[0] for k in keys], as_of=as_of).to_dicts()
    for key, got in zip(keys, result, strict=True):
        assert got == engine.serve(key, as_of), key


def test_worker_end_to_end_with_bad_input(pipe: Any, settings: Settings) -> None:
    events = list(pipe.generate(1_500))
    bad = [
        (b"a001", b"not json"),
        (b"a001", orjson.dumps({"account": "a001", "shop": "s1", "amount": 1.0})),  # no timestamp
        (
            b"a001",
            orjson.dumps({"account": "a001", "shop": "s1", "amount": 1.0, "ts": "2026-01-01T00:00:00"}),
        ),
        (
            b"a001",
            orjson.dumps({"account": "a001", "shop": "s1", "amount": "x", "ts": "2026-01-01T00:00:00Z"}),
        ),
        (b"a001", b"x" * 20_000),
        (b"a001", None),
    ]
    produce(pipe, settings, events, bad)
    worker = Worker(
        Pipeline((pipe.account_activity,)), settings, WorkerOptions(until_caught_up=True, serve_metrics=False)
    )
    assert worker.run() == 0

    engine, expected = expected_rows(pipe, settings)
    got = parquet_rows(settings, pipe)
    if got != expected:
        print(sorted(str(p.relative_to(settings.data_dir)) for p in settings.data_dir.rglob("*")))
    assert got == expected
    assert_online_matches(settings, pipe, engine)

    dead = read_topic(settings, pipe.TOPIC + ".dlq", expect=len(bad) + 1, timeout=20)
    reasons = sorted(dict(m.headers())["streamfs.reason"].decode() for m in dead)
    too_late = len(events) - len(expected)
    assert too_late > 0, "the generator is meant to produce some too-late events"
    assert reasons.count("too_late") == too_late
    for reason in ("undecodable", "missing_timestamp", "naive_timestamp", "schema_violation", "oversized"):
        assert reason in reasons
    assert len(dead) == len(bad) + too_late
    headers = dict(dead[0].headers())
    assert {"streamfs.topic", "streamfs.partition", "streamfs.offset", "streamfs.detail"} <= set(headers)


def _worker_process(settings: Settings, topic: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}",
        "WORKER_TEST_TOPIC": topic,
        "STREAMFS_KAFKA_BOOTSTRAP": settings.require_kafka(),
        "STREAMFS_REDIS_URL": settings.require_redis(),
        "STREAMFS_KAFKA_DEV_BROKER": "1" if settings.kafka_dev_broker else "0",
        "STREAMFS_DATA_DIR": str(settings.data_dir),
        "STREAMFS_GROUP_ID": settings.group_id,
        "STREAMFS_ONLINE_NAMESPACE": settings.online_namespace,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamfs.cli",
            "run",
            "worker_pipeline",
            "--until-caught-up",
            "--no-metrics",
            "--batch-size",
            "200",
            "--commit-interval",
            "0.3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_kill_9_and_restart_changes_nothing(pipe: Any, settings: Settings) -> None:
    events = list(pipe.generate(40_000, seed=3))
    produce(pipe, settings, events)

    first = _worker_process(settings, pipe.TOPIC)
    deadline = time.monotonic() + 60
    features = settings.data_dir / "features"
    while time.monotonic() < deadline and not (features.exists() and any(features.rglob("*.parquet"))):
        time.sleep(0.05)
    time.sleep(0.5)  # let it commit a few times and have uncommitted work in flight
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL, "the worker finished before it could be killed"

    second = _worker_process(settings, pipe.TOPIC)
    output, _ = second.communicate(timeout=180)
    assert second.returncode == 0, output.decode()[-3000:]

    engine, expected = expected_rows(pipe, settings)
    got = parquet_rows(settings, pipe)
    if got != expected:
        print(output.decode()[-5000:])
        print(sorted(str(p.relative_to(settings.data_dir)) for p in settings.data_dir.rglob("*")))
    assert got == expected
    assert_online_matches(settings, pipe, engine)
