"""Background checkpoints (a forked child writes each periodic checkpoint) against the real broker
and Redis: a worker killed with -9 while checkpoints are being written, often, restarts exactly.

The restart must recover from whatever checkpoint files the killed worker and its children left
(at most one per offset, written atomically) plus the archive, and produce the same outputs as
an uninterrupted run.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from worker_checks import (
    assert_online_matches,
    expected_rows,
    load_pipe,
    parquet_rows,
    produce,
    worker_process,
)

from streamfs.settings import Settings


@pytest.fixture
def pipe(topic_factory: Any) -> Any:
    return load_pipe(topic_factory(3, prefix="ckpt"))


def test_kill_9_during_background_checkpoints_changes_nothing(pipe: Any, settings: Settings) -> None:
    events = list(pipe.generate(40_000, seed=5))
    produce(pipe, settings, events)
    checkpoints = settings.data_dir / "checkpoints"

    first = worker_process(settings, pipe.TOPIC, "--checkpoint-interval", "0.2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(checkpoints.rglob("o*.json"))) < 3:
        time.sleep(0.02)
    time.sleep(0.3)  # more checkpoints in flight
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    assert list(checkpoints.rglob("o*.json")), "no background checkpoint was written"

    second = worker_process(settings, pipe.TOPIC, "--checkpoint-interval", "0.2")
    output, _ = second.communicate(timeout=180)
    assert second.returncode == 0, output.decode()[-3000:]
    assert b"background checkpoint" not in output, output.decode()[-3000:]  # none failed

    engine, expected = expected_rows(pipe, settings)
    assert parquet_rows(settings, pipe) == expected
    assert_online_matches(settings, pipe, engine)
