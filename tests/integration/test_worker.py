"""The worker against the real broker and Redis: end to end, bad input, and kill -9 + restart.

Every output is compared with the engine's own evaluation over the same events: the Parquet
rows with a fresh ViewEngine fed each partition's events in offset order, and Redis (through the
FeatureClient) with ViewEngine.serve at the same read time.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import orjson
import pytest
from worker_checks import (
    assert_online_matches,
    expected_rows,
    load_pipe,
    parquet_rows,
    produce,
    read_topic,
    worker_process,
)

from streamfs.durable import TEMP_SUFFIX
from streamfs.registry import Pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings
from streamfs.worker import datapath


@pytest.fixture
def pipe(topic_factory: Any) -> Any:
    return load_pipe(topic_factory(3, prefix="txns"))


def test_worker_end_to_end_with_bad_input(
    pipe: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # decode around bad records however dense (here 6 of a few hundred), so that path is checked
    monkeypatch.setattr(datapath, "SALVAGE_DENSITY", 1)
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
        Pipeline(pipe.VIEWS), settings, WorkerOptions(until_caught_up=True, serve_metrics=False)
    )
    assert worker.run() == 0

    engine, expected = expected_rows(pipe, settings)
    got = parquet_rows(settings, pipe)
    if got != expected:
        print(sorted(str(p.relative_to(settings.data_dir)) for p in settings.data_dir.rglob("*")))
    assert got == expected
    assert_online_matches(settings, pipe, engine)

    # the bad records' batches were decoded around them, their good records as columns
    decoded = {
        path: worker.metrics.registry.get_sample_value(
            "streamfs_events_decoded_total", {"topic": pipe.TOPIC, "path": path}
        )
        or 0
        for path in ("columnar", "columnar_salvaged", "per_event")
    }
    assert decoded["columnar_salvaged"] > len(bad), decoded
    assert decoded["per_event"] == 0, decoded
    assert sum(decoded.values()) == len(events) + len(bad), decoded

    dead = read_topic(settings, pipe.TOPIC + ".dlq", expect=len(bad) + 1, timeout=20)
    reasons = sorted(dict(m.headers())["streamfs.reason"].decode() for m in dead)
    too_late = len(events) - len(expected)
    assert too_late > 0, "the generator is meant to produce some too-late events"
    assert reasons.count("too_late") == too_late * len(pipe.VIEWS)  # each view rejects it
    for reason in ("undecodable", "missing_timestamp", "naive_timestamp", "schema_violation", "oversized"):
        assert reason in reasons
    assert len(dead) == len(bad) + too_late * len(pipe.VIEWS)
    headers = dict(dead[0].headers())
    assert {"streamfs.topic", "streamfs.partition", "streamfs.offset", "streamfs.detail"} <= set(headers)


def test_kill_9_and_restart_changes_nothing(pipe: Any, settings: Settings) -> None:
    events = list(pipe.generate(40_000, seed=3))
    produce(pipe, settings, events)

    first = worker_process(settings, pipe.TOPIC)
    deadline = time.monotonic() + 60
    features = settings.data_dir / "features"
    while time.monotonic() < deadline and not (features.exists() and any(features.rglob("*.parquet"))):
        time.sleep(0.05)
    time.sleep(0.5)  # let it commit a few times and have uncommitted work in flight
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    restart_and_check_exact(pipe, settings)


def restart_and_check_exact(pipe: Any, settings: Settings) -> None:
    """After a kill: a new worker runs to the end, and the output equals the engine's own."""
    second = worker_process(settings, pipe.TOPIC)
    output, _ = second.communicate(timeout=180)
    assert second.returncode == 0, output.decode()[-3000:]

    engine, expected = expected_rows(pipe, settings)
    got = parquet_rows(settings, pipe)
    if got != expected:
        print(output.decode()[-5000:])
        print(sorted(str(p.relative_to(settings.data_dir)) for p in settings.data_dir.rglob("*")))
    assert got == expected
    assert_online_matches(settings, pipe, engine)


def test_kill_9_during_a_background_parquet_write_changes_nothing(pipe: Any, settings: Settings) -> None:
    """Periodic commits write their Parquet files on a thread while the loop goes on, and commit
    the offsets only once the files are durable. Kill -9 while such a write is in flight (one of
    its temporary files exists: some files of that commit may be renamed already, others not,
    its offsets are not committed), restart: the output is still exact, nothing twice."""
    events = list(pipe.generate(40_000, seed=5))
    produce(pipe, settings, events)

    first = worker_process(settings, pipe.TOPIC)
    features = settings.data_dir / "features"
    in_flight: list[str] = []
    deadline = time.monotonic() + 90
    while not in_flight and time.monotonic() < deadline and first.poll() is None:
        if features.exists() and any(features.rglob("*.parquet")):  # past the first commit
            in_flight = [p.name for p in features.rglob(f"*{TEMP_SUFFIX}")]
            if in_flight:
                first.send_signal(signal.SIGKILL)
    output, _ = first.communicate(timeout=10)
    assert in_flight, "no Parquet write was seen in flight: " + output.decode()[-2000:]
    assert first.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    restart_and_check_exact(pipe, settings)


def test_a_message_too_big_for_the_dead_letter_topic_is_truncated(pipe: Any, settings: Settings) -> None:
    """An oversized message bigger than a Kafka message may be by default (1 MB) cannot go to the
    dead-letter topic whole: its head goes, with its size and position, and the worker goes on."""
    from confluent_kafka import Producer

    huge = b'{"account": "a001", "pad": "' + b"x" * 1_500_000 + b'"}'
    raw = Producer({**settings.producer_config(), "message.max.bytes": 4_000_000})
    raw.produce(pipe.TOPIC, key=b"a001", value=huge)
    assert raw.flush(30) == 0
    produce(pipe, settings, list(pipe.generate(200, seed=11)))
    worker = Worker(
        Pipeline(pipe.VIEWS), settings, WorkerOptions(until_caught_up=True, serve_metrics=False)
    )
    assert worker.run() == 0
    _, expected = expected_rows(pipe, settings)
    assert parquet_rows(settings, pipe) == expected
    dead = read_topic(settings, pipe.TOPIC + ".dlq", expect=10, timeout=10)
    [oversized] = [m for m in dead if dict(m.headers())["streamfs.reason"] == b"oversized"]
    headers = dict(oversized.headers())
    assert headers["streamfs.original_bytes"] == str(len(huge)).encode()
    assert headers["streamfs.truncated"] == b"1"
    assert huge.startswith(oversized.value()) and 0 < len(oversized.value()) < 1_000_000
