"""`streamfs verify` against a real worker's Redis and Parquet: clean, then deliberately corrupted."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from streamfs.cli import main
from streamfs.engine import GroupSteps, ServingState, ViewEngine
from streamfs.keys import encode_key
from streamfs.offline import archived_events, layout
from streamfs.offline.writer import write_atomic
from streamfs.online.layout import encode_entry, entry_key, short_fingerprint
from streamfs.produce import EventProducer
from streamfs.registry import Pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings
from streamfs.verify import verify


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch, topic_factory: Any) -> Any:
    topic = topic_factory(3, prefix="vf")
    monkeypatch.setenv("WORKER_TEST_TOPIC", topic)
    import worker_pipeline

    return importlib.reload(worker_pipeline)


@pytest.fixture
def served(
    pipe: Any,
    settings: Settings,
    redis_client: redis.Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """A worker has consumed 2,000 events; the environment points the CLI at its outputs."""
    settings = settings.model_copy(update={"online_namespace": redis_prefix + "w"})
    producer = EventProducer(Pipeline((pipe.account_activity,)), settings.producer_config())
    producer.send_all(pipe.generate(2_000, seed=7))
    producer.flush()
    worker = Worker(Pipeline(pipe.VIEWS), settings, WorkerOptions(until_caught_up=True, serve_metrics=False))
    assert worker.run() == 0
    for name, value in {
        "STREAMFS_DATA_DIR": str(settings.data_dir),
        "STREAMFS_REDIS_URL": settings.require_redis(),
        "STREAMFS_KAFKA_BOOTSTRAP": settings.require_kafka(),
        "STREAMFS_GROUP_ID": settings.group_id,
        "STREAMFS_ONLINE_NAMESPACE": settings.online_namespace,
    }.items():
        monkeypatch.setenv(name, value)
    return settings


def replayed(pipe: Any, root: Path) -> ViewEngine:
    engine = ViewEngine(pipe.account_activity)
    engine.process(list(archived_events(root, pipe.txns)))
    return engine


def test_clean_stream_verifies_at_100_percent(served: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "worker_pipeline", "--sample", "20"]) == 0
    out = capsys.readouterr().out
    assert "online@newest account_activity: 20 keys compared, missing 0, extra 0" in out
    assert "online@now account_activity: 20 keys compared" in out
    assert "offline account_activity:" in out and "missing 0, extra 0" in out
    assert "largest differences" not in out
    assert "OK: lowest match rate 100.00%" in out


def test_corrupted_online_value_is_caught(
    pipe: Any, served: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = replayed(pipe, served.data_dir)
    key = sorted(engine.keys())[3]
    state = engine.serving_state(key)
    assert state is not None
    first = state.groups[0]  # the 10m window group: count_10m
    wrong = GroupSteps(first.starts, tuple((value[0] + 7, *value[1:]) for value in first.values))
    corrupted = ServingState(key, state.max_time, state.events, (wrong, *state.groups[1:]))
    name = entry_key(served.online_namespace, "account", encode_key(key), "account_activity")
    redis_client.set(name, encode_entry(corrupted, short_fingerprint(engine.fingerprint()), 0))

    assert main(["verify", "worker_pipeline", "--sample", "50"]) == 1
    out = capsys.readouterr().out
    assert f"online@newest account_activity:count_10m key={key[0]}" in out
    assert "FAILED: lowest match rate 98.00%" in out
    # A threshold the damage stays above passes.
    assert main(["verify", "worker_pipeline", "--sample", "50", "--threshold", "0.95"]) == 0


def test_deleted_and_altered_parquet_rows_are_caught(pipe: Any, served: Settings) -> None:
    files = layout.list_files(layout.features_dir(served.data_dir, "account_activity"))
    files.sort(key=lambda f: f.last_offset - f.first_offset, reverse=True)
    table = pq.read_table(files[0].path)
    amounts = table.column("amount_sum_1h").to_pylist()
    amounts[5] += 1.5
    altered = table.set_column(
        table.schema.get_field_index("amount_sum_1h"), "amount_sum_1h", pa.array(amounts, pa.float64())
    )
    write_atomic(altered.replace_schema_metadata(table.schema.metadata), files[0].path)
    altered_key = table.column("account")[5].as_py()
    other = pq.read_table(files[-1].path)
    deleted = other.slice(0, 1).to_pylist()[0]
    write_atomic(other.slice(1), files[-1].path)

    report = verify("worker_pipeline", served, sample=10)
    assert not report.ok
    offline = next(c for c in report.checks if c.check == "offline")
    assert offline.missing == 1 and offline.extra == 0
    assert offline.rate("amount_sum_1h") < offline.rate("count_10m") < 1.0
    text = report.render()
    assert f"offline account_activity:amount_sum_1h key={altered_key}" in text
    assert "|diff| 1.5" in text
    assert (
        f"offline account_activity:* key={deleted['account']} p{deleted['partition']}@{deleted['offset']}"
        in text
    )
    online = [c for c in report.checks if c.check.startswith("online")]
    assert all(c.rate(f) == 1.0 for c in online for f in c.features)
