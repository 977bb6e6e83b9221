"""The worker's observability endpoints, scraped over HTTP from a worker on the real broker and
Redis: counters per topic, view and rejection reason, lag per partition, freshness, health."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

import orjson
import pytest
from worker_checks import load_pipe, produce

from streamfs.errors import ConfigError
from streamfs.metrics import HealthServer, WorkerMetrics
from streamfs.registry import Pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings


@pytest.fixture
def pipe(topic_factory: Any) -> Any:
    return load_pipe(topic_factory(3, prefix="metrics"))


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    want = ",".join(f'{key}="{value}"' for key, value in labels.items())
    line_start = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def lags(text: str, topic: str) -> list[float]:
    return [sample(text, "streamfs_consumer_lag", topic=topic, partition=str(p)) for p in range(3)]


def test_metrics_health_and_readiness_of_a_running_worker(pipe: Any, settings: Settings) -> None:
    events = list(pipe.generate(1_200, seed=9))
    bad = [(b"a001", b"not json"), (b"a002", orjson.dumps({"account": "a002", "amount": 1.0}))]
    produce(pipe, settings, events, bad)
    total = len(events) + len(bad)
    worker = Worker(
        Pipeline(pipe.VIEWS),
        settings.model_copy(update={"metrics_port": 0}),  # a free port
        WorkerOptions(serve_metrics=True, online_interval_s=0.05),
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while worker.metrics_port is None and time.monotonic() < deadline:
            time.sleep(0.05)
        port = worker.metrics_port
        assert port is not None, "the worker never served its endpoints"
        text = ""
        while time.monotonic() < deadline:
            _, text = scrape(port, "/metrics")
            consumed = sample(text, "streamfs_events_consumed_total", topic=pipe.TOPIC)
            fresh = sample(text, "streamfs_freshness_seconds_count") > 0
            if consumed >= total and fresh and lags(text, pipe.TOPIC) == [0] * 3:
                break
            time.sleep(0.2)
        assert sample(text, "streamfs_events_consumed_total", topic=pipe.TOPIC) == total
        accepted = sample(text, "streamfs_events_accepted_total", view="account_activity")
        too_late = sample(text, "streamfs_events_rejected_total", reason="too_late", view="account_activity")
        assert accepted > 0 and too_late > 0 and accepted + too_late == len(events)
        assert sample(text, "streamfs_events_rejected_total", reason="undecodable", view="") == 1
        assert sample(text, "streamfs_events_rejected_total", reason="missing_timestamp", view="") == 1
        assert lags(text, pipe.TOPIC) == [0] * 3
        assert sample(text, "streamfs_freshness_seconds_count") > 0
        assert sample(text, "streamfs_batch_size_count") > 0
        assert sample(text, "streamfs_sink_seconds_count", sink="redis") > 0
        assert scrape(port, "/healthz")[0] == 200
        assert scrape(port, "/readyz")[0] == 200
        assert scrape(port, "/nothing")[0] == 404
    finally:
        worker.request_stop()
        thread.join(timeout=60)
    assert result == [0]


def test_a_taken_metrics_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port}.*STREAMFS_METRICS_PORT.*--no-metrics"):
            HealthServer(WorkerMetrics(), port)
