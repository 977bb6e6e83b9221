"""streamfs hosted in a Faust app, against the real broker and Redis, compared with the streamfs worker.

The Faust app runs in a subprocess (``python -m streamfs.integrations.faust``), so it can be
killed with SIGKILL mid-stream and restarted. Its Parquet rows, archived events and Redis values
must equal, row for row and value for value, those of a streamfs Worker run over the same topic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from fixtures.topics import TopicFactory

from pipelines.payments import generate
from streamfs.engine import Engine
from streamfs.errors import ConfigError
from streamfs.integrations.faust import broker_url, check_partitions
from streamfs.offline import archived_events, scan_archive, scan_features
from streamfs.online import FeatureClient
from streamfs.produce import EventProducer
from streamfs.registry import Pipeline, load_pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2024, 3, 1, tzinfo=UTC)
PARTITIONS = 4

PIPELINE_MODULE = """
from pipelines.payments import Payment
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource

card = Entity("card", join_keys=["card_id"])
source = KafkaSource("{name}", topic="{topic}", schema=Payment, timestamp_field="ts", allowed_lateness="5m")
view = FeatureView(
    "{name}",
    entity=card,
    source=source,
    features=[
        Aggregate(None, "count", window="10m", hop="5m"),
        Aggregate("amount", "sum", window="1h", hop="5m"),
        Aggregate("amount", "mean", window="1h"),
        Aggregate("amount", "max", window="24h", hop="1h"),
        Aggregate("merchant_id", "count_distinct", window="24h", hop="1h"),
        Aggregate("amount", "stddev", window="24h", hop="1h"),
        Aggregate("amount", "last"),
    ],
    ttl="30d",
)
"""

BAD_MESSAGES = [
    b"not json",
    b'{"card_id": "card_0000001"}',
    b"",
    b'{"card_id": "c", "ts": "2024-03-01T00:00:00"}',
]


@dataclass(frozen=True)
class Pipe:
    topic: str
    module: str
    modules: Path
    pipeline: Pipeline


@pytest.fixture
def pipe(tmp_path: Path, topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipe]:
    """A one-view pipeline on a fresh 4-partition topic, importable by name here and in subprocesses."""
    topic = topic_factory(PARTITIONS, prefix="faust")
    name = f"faustcard_{uuid.uuid4().hex[:10]}"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / f"{name}.py").write_text(PIPELINE_MODULE.format(name=name, topic=topic))
    monkeypatch.syspath_prepend(str(modules))
    yield Pipe(topic, name, modules, load_pipeline(name))
    sys.modules.pop(name, None)


def _produce(
    pipeline: Pipeline, settings: Settings, topic: str, n: int, *, start: datetime = START, bad: bool = True
) -> int:
    """Produce n payments from `start` (and the bad messages); returns how many messages."""
    producer = EventProducer(pipeline, settings.producer_config())
    producer.send_all(generate(n, keys=300, start=start, seed=7, late_fraction=0.05, events_per_second=5.0))
    producer.flush()
    if not bad:
        return n
    raw = Producer(settings.producer_config())
    for index, value in enumerate(BAD_MESSAGES):
        raw.produce(topic, value=value, key=f"bad{index}".encode())
    raw.flush(30)
    return n + len(BAD_MESSAGES)


def _db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


def _committed(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.require_kafka(), "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return sum(max(tp.offset, 0) for tp in found)
    finally:
        consumer.close()


def _faust_process(pipe: Pipe, settings: Settings, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{pipe.modules}{os.pathsep}{ROOT}",
        "STREAMFS_KAFKA_BOOTSTRAP": settings.require_kafka(),
        "STREAMFS_REDIS_URL": settings.require_redis(),
        "STREAMFS_KAFKA_DEV_BROKER": "1" if settings.kafka_dev_broker else "0",
        "STREAMFS_DATA_DIR": str(settings.data_dir),
        "STREAMFS_STATE_DIR": str(settings.state_dir),
        "STREAMFS_GROUP_ID": settings.group_id,
    }
    command = [sys.executable, "-m", "streamfs.integrations.faust", pipe.module, *extra]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=settings.state_dir
        )


def _wait_committed(
    process: subprocess.Popen[bytes],
    settings: Settings,
    topic: str,
    at_least: int,
    timeout_s: float,
    log: Path,
) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        done = _committed(settings, settings.group_id, topic)
        if done >= at_least:
            return done
        if process.poll() is not None:
            raise AssertionError(f"Faust app exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Faust committed {done} < {at_least} in {timeout_s} s:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.2)


def _rows(table: Any) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda row: (row["partition"], row["offset"]))


def test_faust_outputs_equal_the_worker_across_kill_9(pipe: Pipe, settings: Settings, tmp_path: Path) -> None:
    # Most of the stream before the Faust app is killed, the rest after: the restarted app always
    # has records to resume from (a fast first run could otherwise commit everything before the
    # SIGKILL lands, leaving nothing to recover: seen once the engine kernel made it fast).
    first_half = _produce(pipe.pipeline, settings, pipe.topic, 12_000)
    view = pipe.pipeline.views[0]

    worker_settings = settings.model_copy(
        update={"data_dir": tmp_path / "worker", "redis_url": _db(settings.require_redis(), 1)}
    )
    Worker(pipe.pipeline, worker_settings, WorkerOptions(until_caught_up=True, serve_metrics=False)).run()
    assert _committed(worker_settings, worker_settings.group_id, pipe.topic) == first_half

    faust_settings = settings.model_copy(
        update={
            "data_dir": tmp_path / "faust",
            "state_dir": tmp_path / "faust-state",
            "redis_url": _db(settings.require_redis(), 2),
            "group_id": settings.group_id + "-faust",
        }
    )
    faust_settings.state_dir.mkdir()
    log = tmp_path / "faust.log"
    options = ("--batch-size", "400", "--within", "0.2", "--checkpoint-interval", "1", "--loglevel", "info")
    first = _faust_process(pipe, faust_settings, log, *options)
    try:
        _wait_committed(first, faust_settings, pipe.topic, 1, 90, log)
        # Kill while Parquet holds output beyond the committed offsets (recovery must delete it).
        deadline = time.monotonic() + 20
        while True:
            at_kill = _committed(faust_settings, faust_settings.group_id, pipe.topic)
            flushed = len(scan_features(faust_settings.data_dir, view))
            if flushed > at_kill or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert 0 < at_kill <= first_half
    assert flushed > at_kill, "no uncommitted output at the kill"

    later = START + timedelta(seconds=12_000 / 5.0 + 3_600)  # after the first half's last event
    total = first_half + _produce(pipe.pipeline, settings, pipe.topic, 3_000, start=later, bad=False)
    Worker(pipe.pipeline, worker_settings, WorkerOptions(until_caught_up=True, serve_metrics=False)).run()
    assert _committed(worker_settings, worker_settings.group_id, pipe.topic) == total

    second = _faust_process(pipe, faust_settings, log, *options)
    try:
        _wait_committed(second, faust_settings, pipe.topic, total, 120, log)
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    finally:
        if second.poll() is None:
            second.kill()
    text = log.read_text()
    # Recovery ran: state from a checkpoint, the archive, or both (a checkpoint may land exactly
    # on the committed offset, leaving nothing to replay).
    assert "resumed" in text and ("rebuilt" in text or "restored" in text), text[-3000:]

    # The reference: every archived event through a fresh engine, one at a time.
    engine = Engine([view])
    too_late = 0
    for event in archived_events(worker_settings.data_dir, view.source):
        too_late += len(engine.process(pipe.topic, [event])[view.name].rejected)
    reference = engine.views[view.name]

    # Parquet: the feature log and the event archive, row for row.
    worker_rows = _rows(scan_features(worker_settings.data_dir, view))
    assert len(worker_rows) == total - len(BAD_MESSAGES) - too_late
    assert _rows(scan_features(faust_settings.data_dir, view)) == worker_rows
    assert _rows(scan_archive(faust_settings.data_dir, view.source)) == _rows(
        scan_archive(worker_settings.data_dir, view.source)
    )

    # Redis: the same values through the FeatureClient, both equal to the engine's serving answer.
    keys = sorted({row["card_id"] for row in worker_rows})
    newest = max(row["event_time"] for row in worker_rows)
    newest_ms = int(newest.timestamp() * 1000) if isinstance(newest, datetime) else int(newest)
    absent = dict.fromkeys(reference.feature_names)
    for as_of in (newest_ms, newest_ms + 30 * 60_000, newest_ms + 3 * 3_600_000):
        expected = [reference.serve((key,), as_of) or absent for key in keys]
        for url in (worker_settings.redis_url, faust_settings.redis_url):
            assert url is not None
            client = FeatureClient(url, [view])
            try:
                assert client.get_features(view, keys, as_of).to_dicts() == expected
            finally:
                client.close()


def test_partition_mismatch_fails_fast_with_a_clear_message(
    pipe: Pipe, settings: Settings, tmp_path: Path
) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "mismatch.log"
    started = time.monotonic()
    process = _faust_process(pipe, settings, log, "--topic-partitions", "8")
    try:
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    elapsed = time.monotonic() - started
    text = log.read_text()
    assert process.returncode not in (0, None), text[-3000:]
    assert "topic_partitions is 8" in text and "topic_partitions=4" in text, text[-3000:]
    assert elapsed < 30


def test_check_partitions_names_tables_and_missing_topics(pipe: Pipe, settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.require_kafka()})
    app = faust.App(
        "t-" + uuid.uuid4().hex[:8],
        broker=broker_url(settings.require_kafka()),
        topic_partitions=PARTITIONS,
        web_enabled=False,
        store="memory://",
    )
    assert check_partitions(app, pipe.pipeline, admin) == PARTITIONS
    app.Table("totals", default=int, partitions=8)
    with pytest.raises(ConfigError, match=r"table 'totals' has 8 partitions"):
        check_partitions(app, pipe.pipeline, admin)
    missing = Pipeline(
        (
            pipe.pipeline.views[0].model_copy(
                update={
                    "source": pipe.pipeline.views[0].source.model_copy(
                        update={"topic": "no-such-topic-" + uuid.uuid4().hex}
                    )
                }
            ),
        )
    )
    with pytest.raises(ConfigError, match="do not exist"):
        check_partitions(app, missing, admin)
