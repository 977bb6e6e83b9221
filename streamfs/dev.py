"""`streamfs dev up | down | status`: local Kafka and Redis for development, found by every command.

The processes come from streamfs.services (embedded Tansu and redis-server) or, with
`--docker`, from docker-compose.yml. `up` records them in ``<state_dir>/dev.json``
(:class:`DevState`, the one owner of that file's layout), which
:class:`streamfs.settings.Settings` reads to find the services; `up` twice reports the running
copy, and a state file left by a crash is detected and cleaned.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from streamfs.errors import ServiceError
from streamfs.services import (
    DEFAULT_TIMEOUT_S,
    HOST,
    EmbeddedKafka,
    EmbeddedRedis,
    kafka_answers,
    pid_alive,
    redis_answers,
    stop_pid,
)

STATE_FILE = "dev.json"
COMPOSE_FILE = "docker-compose.yml"


# --------------------------------------------------------------------------------------------
# the dev state file


class DevState(BaseModel):
    """What `streamfs dev up` started, as recorded in ``<state_dir>/dev.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["embedded", "docker"]
    kafka_bootstrap: str
    redis_url: str
    kafka_dev_broker: bool
    kafka_pid: int | None = None
    redis_pid: int | None = None
    started_at: datetime

    def dead_processes(self) -> list[str]:
        """Which recorded processes no longer run (empty for docker mode: compose owns those)."""
        dead = []
        if self.kafka_pid is not None and not pid_alive(self.kafka_pid, EmbeddedKafka.expect):
            dead.append(f"Kafka broker (pid {self.kafka_pid})")
        if self.redis_pid is not None and not pid_alive(self.redis_pid, EmbeddedRedis.expect):
            dead.append(f"Redis (pid {self.redis_pid})")
        return dead


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def read_state(state_dir: Path) -> DevState | None:
    """The recorded dev services, or None when there is no state file (or it is unreadable junk)."""
    path = state_path(state_dir)
    try:
        return DevState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError):
        return None


def _write_state(state_dir: Path, state: DevState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_path(state_dir).with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2) + "\n")
    os.replace(tmp, state_path(state_dir))


# --------------------------------------------------------------------------------------------
# `streamfs dev up | down | status`


class DevReport(BaseModel):
    """The outcome of a dev command: what runs now, and what was done, in words."""

    model_config = ConfigDict(frozen=True)

    state: DevState | None
    messages: tuple[str, ...]

    @property
    def running(self) -> bool:
        return self.state is not None


def _clean_stale(state_dir: Path) -> list[str]:
    """Remove a state file whose processes died (stopping any survivor); say what was done."""
    path = state_path(state_dir)
    if path.exists() and read_state(state_dir) is None:
        path.unlink()
        return [f"Removed unreadable dev state file {path}."]
    state = read_state(state_dir)
    if state is None or state.mode != "embedded":
        return []
    dead = state.dead_processes()
    if not dead:
        return []
    if state.kafka_pid is not None:
        stop_pid(state.kafka_pid, EmbeddedKafka.expect)
    if state.redis_pid is not None:
        stop_pid(state.redis_pid, EmbeddedRedis.expect)
    path.unlink(missing_ok=True)
    return [
        f"Found a stale dev state file {path} from a run that is no longer running "
        f"({', '.join(dead)} gone); stopped what was left and removed it."
    ]


def up(
    state_dir: Path,
    *,
    kafka_port: int = 0,
    redis_port: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DevReport:
    """Start the embedded broker and Redis (detached, logs in `state_dir`) unless already running."""
    messages = _clean_stale(state_dir)
    current = read_state(state_dir)
    if current is not None:
        return DevReport(state=current, messages=(*messages, "Dev services are already running."))
    kafka = EmbeddedKafka(
        kafka_port, log_path=state_dir / "kafka.log", startup_timeout_s=timeout_s, detach=True
    )
    redis = EmbeddedRedis(
        redis_port, log_path=state_dir / "redis.log", startup_timeout_s=timeout_s, detach=True
    )
    try:
        kafka.start()
        redis.start()
    except BaseException:
        redis.stop()
        kafka.stop()
        raise
    state = DevState(
        mode="embedded",
        kafka_bootstrap=kafka.address,
        redis_url=redis.address,
        kafka_dev_broker=True,
        kafka_pid=kafka.pid,
        redis_pid=redis.pid,
        started_at=datetime.now(UTC),
    )
    _write_state(state_dir, state)
    return DevReport(state=state, messages=(*messages, "Started dev services."))


def down(state_dir: Path, *, compose_file: Path = Path(COMPOSE_FILE)) -> DevReport:
    """Stop what `up` started and remove the state file; nothing running is not an error."""
    messages = _clean_stale(state_dir)
    state = read_state(state_dir)
    if state is None:
        return DevReport(state=None, messages=(*messages, "No dev services are running."))
    if state.mode == "docker":
        _docker_compose(compose_file, "down")
    else:
        if state.kafka_pid is not None:
            stop_pid(state.kafka_pid, EmbeddedKafka.expect)
        if state.redis_pid is not None:
            stop_pid(state.redis_pid, EmbeddedRedis.expect)
    state_path(state_dir).unlink(missing_ok=True)
    return DevReport(state=None, messages=(*messages, "Stopped dev services."))


def status(state_dir: Path) -> DevReport:
    """What runs, per the state file, after checking the processes are alive and answering."""
    messages = _clean_stale(state_dir)
    state = read_state(state_dir)
    if state is None:
        return DevReport(state=None, messages=(*messages, "No dev services are running."))
    for name, ok in (
        ("Kafka", kafka_answers(state.kafka_bootstrap)),
        ("Redis", redis_answers(state.redis_url)),
    ):
        if not ok:
            messages.append(f"Warning: {name} is running but does not answer yet.")
    return DevReport(state=state, messages=tuple(messages))


# --------------------------------------------------------------------------------------------
# `streamfs dev up --docker`


def docker_engine_answers(timeout_s: float = 5.0) -> bool:
    """Whether the docker CLI exists and a Docker engine answers it."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _docker_compose(compose_file: Path, *args: str) -> None:
    if not docker_engine_answers():
        raise ServiceError(
            "no Docker engine answers (is the Docker daemon running?). "
            "Run `streamfs dev up` without --docker to use the embedded broker and Redis instead."
        )
    if not compose_file.is_file():
        raise ServiceError(f"{compose_file} not found; run this from the repository root")
    result = subprocess.run(
        ["docker", "compose", "-f", str(compose_file), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceError(f"`docker compose {' '.join(args)}` failed:\n{result.stderr.strip()}")


def up_docker(state_dir: Path, *, compose_file: Path = Path(COMPOSE_FILE)) -> DevReport:
    """Start Kafka and Redis from docker-compose.yml (host ports as in that file: 9092, 6379)."""
    messages = _clean_stale(state_dir)
    current = read_state(state_dir)
    if current is not None:
        return DevReport(state=current, messages=(*messages, "Dev services are already running."))
    _docker_compose(compose_file, "up", "-d", "--wait", "kafka", "redis")
    kafka_port = os.environ.get("STREAMFS_KAFKA_HOST_PORT", "9092")
    redis_port = os.environ.get("STREAMFS_REDIS_HOST_PORT", "6379")
    state = DevState(
        mode="docker",
        kafka_bootstrap=f"{HOST}:{kafka_port}",
        redis_url=f"redis://{HOST}:{redis_port}/0",
        kafka_dev_broker=False,
        started_at=datetime.now(UTC),
    )
    _write_state(state_dir, state)
    return DevReport(state=state, messages=(*messages, f"Started kafka and redis from {compose_file}."))
