"""The worker under faults, against real services: SIGTERM, Redis and broker restarts, and load.

Redis and the broker of the restart tests are this test's own processes (redis-server and Tansu
on free ports), stopped and started again on the same port while a worker subprocess runs.
Every test ends by comparing Parquet rows and Redis values with the engine's evaluation of the
whole topic (worker_checks.assert_outputs_exact).
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from fixtures.topics import TOPIC_CONFIG, unique_name
from worker_checks import (
    assert_outputs_exact,
    committed_offsets,
    expected_rows,
    load_pipe,
    parquet_rows,
    produce,
    stop,
    worker_process,
)

from streamfs.online import FeatureClient
from streamfs.registry import Pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.services import HOST, free_port, kafka_answers, redis_binary, tansu_binary
from streamfs.settings import Settings


def _wait(condition: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def _done(settings: Settings, topic: str, partitions: int) -> int:
    return sum(max(o, 0) for o in committed_offsets(settings, topic, partitions).values())


@contextmanager
def _process(command: list[str], ready: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A service process of this test; waits until `ready()`, always stopped afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: process.poll() is None and ready(), 30, " ".join(command[:2]))
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _redis_server(port: int, workdir: str) -> Any:
    command = [redis_binary(), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
               "--dir", workdir]  # fmt: skip

    def ready() -> bool:
        try:
            return bool(redis.Redis(host=HOST, port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    return _process(command, ready)


def _tansu(port: int) -> Any:
    url = f"tcp://{HOST}:{port}"
    command = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
    return _process(command, lambda: kafka_answers(f"{HOST}:{port}"))


def _create_topic(bootstrap: str, partitions: int, name: str | None = None) -> str:
    name = name or unique_name("faults")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=TOPIC_CONFIG)]
    )[name].result(15)
    deadline = time.monotonic() + 15
    while len(getattr(admin.list_topics(name, timeout=10).topics.get(name), "partitions", {})) != partitions:
        assert time.monotonic() < deadline, "topic not visible"
        time.sleep(0.05)
    return name


def test_sigterm_flushes_commits_and_a_restart_does_only_the_rest(
    topic_factory: Any, settings: Settings, tmp_path: Path
) -> None:
    pipe = load_pipe(topic_factory(3, prefix="sigterm"))
    events = list(pipe.generate(20_000, seed=5))
    produce(pipe, settings, events)
    log = tmp_path / "worker.log"
    first = worker_process(settings, pipe.TOPIC, log=log, until_caught_up=False)
    try:
        _wait(lambda: _done(settings, pipe.TOPIC, 3) >= 2_000, 60, "the first commits", log)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0, log.read_text()[-3000:]
    finally:
        stop(first)
    committed = {p: max(o, 0) for p, o in committed_offsets(settings, pipe.TOPIC, 3).items()}
    assert 0 < sum(committed.values()) < len(events), "the worker finished before SIGTERM"

    # Everything up to the commit is flushed, and nothing beyond it.
    _, expected = expected_rows(pipe, settings, total=len(events))
    got = parquet_rows(settings, pipe)
    assert got == {pos: row for pos, row in expected.items() if pos[1] < committed[pos[0]]}

    log.write_text("")
    second = worker_process(settings, pipe.TOPIC, log=log)
    try:
        assert second.wait(120) == 0, log.read_text()[-3000:]
    finally:
        stop(second)
    text = log.read_text()
    resumed = {int(p): int(o) for p, o in re.findall(r"\[(\d+)\]@(\d+)", text)}
    assert resumed == committed, text[-3000:]
    assert "rebuilt" not in text, "the shutdown checkpoint should make the restart replay nothing"
    assert_outputs_exact(pipe, settings, total=len(events))


def test_redis_restart_pauses_and_resumes_without_loss(
    topic_factory: Any, settings: Settings, tmp_path: Path
) -> None:
    pipe = load_pipe(topic_factory(3, prefix="redis"))
    events = list(pipe.generate(20_000, seed=6))
    produce(pipe, settings, events)
    port, workdir = free_port(), tempfile.mkdtemp(dir=tmp_path)
    own = settings.model_copy(update={"redis_url": f"redis://{HOST}:{port}/0"})
    log = tmp_path / "worker.log"
    with _redis_server(port, workdir) as server:
        worker = worker_process(own, pipe.TOPIC, log=log)
        try:
            _wait(lambda: _done(own, pipe.TOPIC, 3) >= 2_000, 60, "the first commits", log)
            server.terminate()  # Redis goes away mid-stream (and comes back empty: no persistence)
            server.wait(10)
            _wait(lambda: "pausing consumption" in log.read_text(), 20, "the worker to pause", log)
            stalled = _done(own, pipe.TOPIC, 3)
            time.sleep(2)
            assert worker.poll() is None, log.read_text()[-3000:]
            assert _done(own, pipe.TOPIC, 3) == stalled, "offsets advanced while Redis was down"
            assert stalled < len(events)
            with _redis_server(port, workdir):
                assert worker.wait(120) == 0, log.read_text()[-3000:]
                text = log.read_text()
                assert "Redis is back" in text and "Redis restarted" in text, text[-3000:]
                assert_outputs_exact(pipe, own, total=len(events))
                # FeatureClient without views reads the view metadata, which was lost with Redis too.
                stored = FeatureClient(own.require_redis(), namespace=own.online_namespace)
                try:
                    as_of = datetime.fromisoformat(events[-1]["ts"])
                    row = stored.get_features("account_activity", [events[-1]["account"]], as_of).to_dicts()[
                        0
                    ]
                    assert row["amount_last"] is not None
                finally:
                    stored.close()
        finally:
            stop(worker)


def test_broker_restart_loses_topics_the_worker_resumes_from_its_commit_log(
    settings: Settings, tmp_path: Path
) -> None:
    """Tansu keeps everything in memory: a restart loses topics, records and committed offsets.

    The worker must survive the outage, must not touch committed Parquet, and, once the topic is
    re-created and its producers publish the stream again, resume from its own commit log
    (Kafka's committed offsets are gone) and process only what it had not committed.
    """
    port = free_port()
    bootstrap = f"{HOST}:{port}"
    own = settings.model_copy(update={"kafka_bootstrap": bootstrap, "kafka_dev_broker": True})
    log = tmp_path / "worker.log"
    with _tansu(port) as broker:
        pipe = load_pipe(_create_topic(bootstrap, 2))
        events = list(pipe.generate(12_000, seed=8))
        produce(pipe, own, events[:6_000])
        worker = worker_process(own, pipe.TOPIC, log=log, until_caught_up=False)
        try:
            _wait(lambda: _done(own, pipe.TOPIC, 2) == 6_000, 60, "the first half committed", log)
            rows_before = parquet_rows(own, pipe)
            before = committed_offsets(own, pipe.TOPIC, 2)
            broker.terminate()
            broker.wait(10)
            time.sleep(3)
            assert worker.poll() is None, log.read_text()[-3000:]
            with _tansu(port):
                _create_topic(bootstrap, 2, pipe.TOPIC)
                produce(pipe, own, events)  # the producers publish the stream again, then the rest
                _wait(lambda: _done(own, pipe.TOPIC, 2) == len(events), 90, "every record committed", log)
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(30) == 0, log.read_text()[-3000:]
                resumed = re.findall(r"\[(\d+)\]@(\d+)", log.read_text())[-2:]
                assert {int(p): int(o) for p, o in resumed} == before, "not resumed from the commit log"
                after = parquet_rows(own, pipe)
                assert {pos: after[pos] for pos in rows_before} == rows_before
                assert_outputs_exact(pipe, own, total=len(events))
        finally:
            stop(worker)


def test_load_100k_events_exact(topic_factory: Any, settings: Settings) -> None:
    pipe = load_pipe(topic_factory(4, prefix="load"))
    events = list(pipe.generate(100_000, accounts=2_000, seed=9))
    produce(pipe, settings, events)
    worker = Worker(
        Pipeline(pipe.VIEWS), settings, WorkerOptions(until_caught_up=True, serve_metrics=False)
    )
    started, cpu = time.perf_counter(), time.process_time()
    assert worker.run() == 0
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"\n100k events through one worker: {wall:.1f} s wall, {len(events) / wall:,.0f} events/s, "
          f"{cpu / len(events) * 1e6:.0f} µs CPU per event (includes the ~3 s group join)")  # fmt: skip
    assert sum(committed_offsets(settings, pipe.TOPIC, 4).values()) == len(events)
    assert_outputs_exact(pipe, settings, total=len(events))


class _IdlesAfterFirstBatch(Worker):
    """A worker that, after its first batch, waits for Redis the way OnlineSync.write does.

    The first wait has its partitions not paused: that is the state after an assignment made
    while the worker was paused for Redis (a rebalance callback during `_idle`), when librdkafka
    hands queued records to the waiting loop. The second is the ordinary paused wait.
    """

    waited = False

    def step(self) -> int:
        count = super().step()
        if count and not self.waited:
            self.waited = True
            self._idle(1.0)
            self._pause()
            self._idle(0.5)
            self._resume()
        return count


def test_records_consumed_while_waiting_for_redis_are_fetched_again(
    topic_factory: Any, settings: Settings
) -> None:
    pipe = load_pipe(topic_factory(2, prefix="idle"))
    events = list(pipe.generate(12_000, seed=12))
    produce(pipe, settings, events)
    options = WorkerOptions(until_caught_up=True, serve_metrics=False, batch_size=500)
    worker = _IdlesAfterFirstBatch(Pipeline(pipe.VIEWS), settings, options)
    # A record lost in the wait leaves its partition short of the end forever: stop, then fail.
    deadline = threading.Timer(90, worker.request_stop)
    deadline.start()
    try:
        assert worker.run() == 0
    finally:
        deadline.cancel()
    assert worker.waited
    assert sum(committed_offsets(settings, pipe.TOPIC, 2).values()) == len(events)
    assert_outputs_exact(pipe, settings, total=len(events))
