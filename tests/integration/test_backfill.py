"""Backfill against a real worker, broker and Redis: the same rows and the same serving state.

The worker (runner.Worker) consumes a 3-partition topic; backfills then recompute its view into
separate data dirs and Redis namespaces, from its archive and from Kafka, and every feature row
(keys, times, topic, partition, offset, values) and every Redis entry (bar its write time) must
be identical. Also: re-runs replace, --from/--to write only their range, an interrupted run
resumes to the same output, a new view goes live without a gap, and bad requests fail first.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import redis

from streamfs.backfill import backfill
from streamfs.definitions import Aggregate, FeatureView
from streamfs.engine import ViewEngine
from streamfs.errors import OfflineError
from streamfs.offline import archived_events, layout, scan_features
from streamfs.online import FeatureClient
from streamfs.produce import EventProducer
from streamfs.registry import Pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings

MIDNIGHT = 1_767_225_600_000  # 2026-01-01T00:00Z: the generated events straddle two dates
START = MIDNIGHT - 20 * 60_000


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch, topic_factory: Any) -> Any:
    topic = topic_factory(3, prefix="bf")
    monkeypatch.setenv("WORKER_TEST_TOPIC", topic)
    import worker_pipeline

    return importlib.reload(worker_pipeline)


@pytest.fixture
def worker_settings(settings: Settings, redis_client: redis.Redis, redis_prefix: str) -> Settings:
    return settings.model_copy(update={"online_namespace": redis_prefix + "w"})


def produce(pipe: Any, settings: Settings, n: int, *, seed: int = 1, start_ms: int = START) -> None:
    producer = EventProducer(Pipeline((pipe.account_activity,)), settings.producer_config())
    producer.send_all(pipe.generate(n, seed=seed, start_ms=start_ms))
    producer.flush()


def run_worker(pipeline: Pipeline, settings: Settings) -> None:
    assert Worker(pipeline, settings, WorkerOptions(until_caught_up=True, serve_metrics=False)).run() == 0


def elsewhere(settings: Settings, tmp_path: Path, name: str, prefix: str, *, archive: bool) -> Settings:
    """Another data dir (with a copy of the worker's archive) and Redis namespace, same group."""
    other = settings.model_copy(update={"data_dir": tmp_path / name, "online_namespace": prefix + name})
    if archive:
        shutil.copytree(settings.data_dir / "archive", other.data_dir / "archive")
    return other


def rows(root: Path, view: str) -> dict[tuple[int, int], dict[str, Any]]:
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for row in scan_features(root, view).to_pylist():
        position = (row["partition"], row["offset"])
        assert position not in out, f"duplicate row at {position}"
        out[position] = row
    return out


def entries(client: redis.Redis, namespace: str, view: str) -> dict[bytes, Any]:
    """Every Redis entry of a view, key without the namespace, value without its write time."""
    found = {}
    for name in client.scan_iter(match=f"{namespace}:*}}:{view}", count=1000):
        entry = orjson.loads(client.get(name))  # type: ignore[arg-type]
        del entry[3]  # written_ms
        found[name[len(namespace) :]] = entry
    return found


def test_backfill_reproduces_the_worker_from_archive_and_kafka(
    pipe: Any, worker_settings: Settings, redis_client: redis.Redis, redis_prefix: str, tmp_path: Path
) -> None:
    produce(pipe, worker_settings, 3_000)
    pipeline = Pipeline((pipe.account_activity,))
    run_worker(pipeline, worker_settings)
    expected = rows(worker_settings.data_dir, "account_activity")
    assert len(expected) > 2_900
    assert len({layout.day_of(r["event_time"].timestamp() * 1000) for r in expected.values()}) == 2
    served = entries(redis_client, worker_settings.online_namespace, "account_activity")
    assert len(served) == 50

    from_archive = elsewhere(worker_settings, tmp_path, "a", redis_prefix, archive=True)
    report = backfill(pipeline, from_archive, source="archive", online=True)
    assert (report.events, report.rows, report.online_keys) == (3_000, len(expected), 50)
    assert not report.interrupted
    assert rows(from_archive.data_dir, "account_activity") == expected
    assert entries(redis_client, from_archive.online_namespace, "account_activity") == served
    assert not (from_archive.data_dir / "backfill" / "account_activity" / "state.json").exists()

    from_kafka = elsewhere(worker_settings, tmp_path, "k", redis_prefix, archive=False)
    report = backfill(pipeline, from_kafka, source="kafka", online=True, batch_size=500)
    assert (report.events, report.rows) == (3_000, len(expected))
    assert rows(from_kafka.data_dir, "account_activity") == expected
    assert entries(redis_client, from_kafka.online_namespace, "account_activity") == served

    # Re-running replaces the output: same rows, no duplicates, no stray files.
    files = sorted(p.name for p in (from_archive.data_dir / "features").rglob("*.parquet"))
    backfill(pipeline, from_archive, source="archive")
    assert rows(from_archive.data_dir, "account_activity") == expected
    assert sorted(p.name for p in (from_archive.data_dir / "features").rglob("*.parquet")) == files


def test_range_rerun_and_resume_write_exactly_the_worker_rows(pipe: Any, worker_settings: Settings) -> None:
    produce(pipe, worker_settings, 2_000, seed=2)
    pipeline = Pipeline((pipe.account_activity,))
    run_worker(pipeline, worker_settings)
    root = worker_settings.data_dir
    expected = rows(root, "account_activity")

    # Lose the whole feature log, then backfill a range that cuts both dates in two.
    shutil.rmtree(root / "features")
    lo, hi = MIDNIGHT - 10 * 60_000, MIDNIGHT + 10 * 60_000
    report = backfill(pipeline, worker_settings, start=lo, end=hi)
    in_range = {p: r for p, r in expected.items() if lo <= r["event_time"].timestamp() * 1000 < hi}
    assert report.rows == len(in_range) and 0 < len(in_range) < len(expected)
    assert rows(root, "account_activity") == in_range

    # The rest; then the range again over complete output: rows outside it are kept as they were.
    backfill(pipeline, worker_settings)
    assert rows(root, "account_activity") == expected
    backfill(pipeline, worker_settings, start=lo, end=hi)
    assert rows(root, "account_activity") == expected

    # Interrupted mid-partition (after 3 batches of 200 events), then resumed by the same call.
    shutil.rmtree(root / "features")
    batches = iter(range(10**6))
    report = backfill(pipeline, worker_settings, batch_size=200, stop=lambda: next(batches) >= 2)
    assert report.interrupted and report.events == 600
    state = orjson.loads((root / "backfill" / "account_activity" / "state.json").read_bytes())
    assert state["snapshots"], "the partition in progress is checkpointed with its engine state"
    assert not (root / "features").exists() or not rows(root, "account_activity"), "nothing installed yet"
    report = backfill(pipeline, worker_settings, batch_size=200)
    assert report.resumed and not report.interrupted
    assert report.events == 2_000 - 600
    assert rows(root, "account_activity") == expected


def test_new_view_goes_live_without_a_gap(
    pipe: Any, worker_settings: Settings, redis_client: redis.Redis
) -> None:
    produce(pipe, worker_settings, 2_000, seed=4)
    run_worker(Pipeline((pipe.account_activity,)), worker_settings)

    recent = FeatureView(
        "account_recent",
        entity=pipe.account,
        source=pipe.txns,
        features=[
            Aggregate(None, "count", window="5m", hop="1m"),
            Aggregate("amount", "sum", window="30m", hop="5m"),
            Aggregate("amount", "min"),
        ],
    )
    v2 = Pipeline((pipe.account_activity, recent))
    # Workers stopped (here: caught up and returned); backfill the new view up to the commit.
    report = backfill(v2, worker_settings, views=["account_recent"], online=True)
    assert report.events == 2_000
    # More events arrive; the worker, now running v2, recovers and continues from the commit.
    produce(pipe, worker_settings, 1_000, seed=5, start_ms=START + 3 * 3_600_000)
    run_worker(v2, worker_settings)

    engine = ViewEngine(recent)
    reference: dict[tuple[int, int], tuple[Any, ...]] = {}
    for event in archived_events(worker_settings.data_dir, pipe.txns):
        for row in engine.process([event]).rows:
            assert row.position is not None
            reference[(row.position.partition, row.position.offset)] = row.values
    got = rows(worker_settings.data_dir, "account_recent")
    assert max(offset for _, offset in got) > 0 and len(got) == len(reference)
    assert {p: tuple(r[f] for f in recent.feature_names) for p, r in got.items()} == reference
    client = FeatureClient(redis_client, [recent], namespace=worker_settings.online_namespace)
    keys = sorted(engine.keys())
    as_of = START + 5 * 3_600_000
    result = client.get_features("account_recent", [k[0] for k in keys], as_of=as_of).to_dicts()
    assert result == [engine.serve(k, as_of) for k in keys]
    # Rows of the view carry the current definition's fingerprint everywhere.
    fingerprint = engine.fingerprint()
    for path in (worker_settings.data_dir / "features" / "account_recent").rglob("*.parquet"):
        assert layout.metadata_of(pq.read_schema(path))["streamfs.fingerprint"] == fingerprint


def test_bad_requests_fail_before_any_work(pipe: Any, worker_settings: Settings) -> None:
    produce(pipe, worker_settings, 500, seed=6)
    pipeline = Pipeline((pipe.account_activity,))
    run_worker(pipeline, worker_settings)
    root = worker_settings.data_dir
    expected = rows(root, "account_activity")

    with pytest.raises(OfflineError, match=r"unknown feature view\(s\) 'nope'.*account_activity"):
        backfill(pipeline, worker_settings, views=["nope"])
    with pytest.raises(OfflineError, match="has no events between 2020-01-01T00:00:00Z"):
        backfill(pipeline, worker_settings, start=1_577_836_800_000, end=1_577_923_200_000)
    with pytest.raises(OfflineError, match="must be before"):
        backfill(pipeline, worker_settings, start=MIDNIGHT, end=MIDNIGHT)

    changed = FeatureView(
        "account_activity",
        entity=pipe.account,
        source=pipe.txns,
        features=[Aggregate("amount", "sum", window="2h", hop="10m")],
    )
    changed_pipeline = Pipeline((changed,))
    with pytest.raises(OfflineError, match=r"different definition.*--replace"):
        backfill(changed_pipeline, worker_settings)
    with pytest.raises(OfflineError, match="cannot be combined with --from/--to"):
        backfill(changed_pipeline, worker_settings, replace=True, start=MIDNIGHT)
    assert rows(root, "account_activity") == expected, "a refused backfill changes nothing"
    assert not (root / "backfill" / "account_activity" / "state.json").exists()

    backfill(changed_pipeline, worker_settings, replace=True)
    got = rows(root, "account_activity")
    assert set(got) == set(expected)
    assert all(set(r) >= {"amount_sum_2h"} and "count_10m" not in r for r in got.values())
    backfill(changed_pipeline, worker_settings)  # now consistent: no --replace needed
