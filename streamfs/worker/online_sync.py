"""Keeping Redis current: which keys changed, when to write them, and what to do when Redis fails.

Step 1 of the commit protocol, and the writes between commits. Every view's changed keys are
collected per partition (a key changed by many events is written once), and written at most
every `wait()` seconds. Each partition's keys are written under its ownership fence
(ownership.py), so a worker that lost a partition without being told yet cannot overwrite the
new owner's entries with older states; a partition found claimed by another worker is handed
to `on_fenced` (the worker drops it) and its keys are not written. A failed write pauses
consumption and is retried with backoff while the group membership is kept alive; a Redis that
restarted (new run_id) gets the view metadata and every owned key again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

import numpy as np
import redis

from streamfs.engine import Engine, Key
from streamfs.errors import ServiceError
from streamfs.metrics import WorkerMetrics, observe_many
from streamfs.offline.writer import PartitionGuard
from streamfs.online import OnlineWriter
from streamfs.sources import TopicPartitionKey
from streamfs.status import record_progress
from streamfs.worker.options import WorkerOptions

log = logging.getLogger(__name__)

RESTART_CHECK_S = 1.0
"""How often Redis's run_id is compared with the last one seen (see OnlineSync._check_restart)."""


class OnlineSync:
    """The changed keys of every view, and their writes to Redis."""

    def __init__(
        self,
        engine: Engine,
        client: redis.Redis,
        writer: OnlineWriter,
        *,
        namespace: str,
        group_id: str,
        options: WorkerOptions,
        metrics: WorkerMetrics,
        guard: PartitionGuard | None = None,
        on_fenced: Callable[[list[TopicPartitionKey]], None] = lambda partitions: None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.writer = writer
        self.namespace = namespace
        self.group_id = group_id
        self.options = options
        self.metrics = metrics
        self.guard = guard  # held around each partition's writes (None: no fence)
        self.on_fenced = on_fenced
        # view -> partition -> keys changed and not written yet
        self.unwritten: dict[str, dict[int, set[Key]]] = {name: {} for name in engine.views}
        self._topics = {name: view.view.source.topic for name, view in engine.views.items()}
        self.arrivals: list[int] = []  # arrival times of events not yet visible in Redis
        self.newest: dict[str, int] = {}  # newest event time per view, for `streamfs status`
        self._last_write = time.monotonic()
        self._last_write_s = 0.0  # duration of the last write, for adaptive_online
        self._run_id: str | None = None  # a new run_id means Redis restarted: rewrite every key
        self._checked_at = 0.0  # when the run_id was last asked for

    def wait(self, backlogged: bool = False) -> float:
        """Seconds between writes now (see WorkerOptions.adaptive_online, backlog_online_interval_s)."""
        options = self.options
        if backlogged and options.backlog_online_interval_s > 0:
            return options.backlog_online_interval_s
        interval = options.online_interval_s
        if not options.adaptive_online:
            return interval
        return min(interval, options.online_cost_ratio * self._last_write_s)

    def due(self, backlogged: bool = False) -> bool:
        """Whether to write now; `backlogged`: the last poll filled a whole batch."""
        return time.monotonic() - self._last_write >= self.wait(backlogged)

    def processed(self, view: str, newest_event_time: int) -> None:
        """Note the newest event time a view has accepted (reported with each write)."""
        known = self.newest.get(view)
        if known is None or newest_event_time > known:
            self.newest[view] = newest_event_time

    def arrived(self, arrival_times: Iterable[int]) -> None:
        """Arrival times of processed events: freshness is observed when they are written."""
        self.arrivals.extend(arrival_times)

    def write(
        self,
        *,
        pause: Callable[[], None],
        resume: Callable[[], None],
        idle: Callable[[float], None],
        give_up: Callable[[], bool],
    ) -> None:
        """Write every changed key's serving state; on failure pause, back off and retry.

        `pause`/`resume` stop and restart consumption, `idle(s)` waits while keeping the group
        membership alive, and `give_up()` says the worker is stopping and must not wait for Redis
        (the write then raises ServiceError).
        """
        self._last_write = time.monotonic()
        for engine in self.engine.views.values():
            self._note(engine.name, engine.take_dirty_by_partition())
        if not any(any(parts.values()) for parts in self.unwritten.values()):
            self.arrivals.clear()
            return
        backoff = 0.1
        paused = False
        while True:
            try:
                self._write_once()
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.metrics.sink_errors.labels("redis").inc()
                self.check_restart_next()  # it may come back empty
                if give_up():
                    raise ServiceError(f"Redis unavailable at shutdown: {exc}") from exc
                if not paused:
                    log.warning("Redis unavailable (%s); pausing consumption and retrying", exc)
                    pause()
                    self.metrics.paused.set(1)
                    paused = True
                idle(backoff)
                backoff = min(backoff * 2, self.options.max_backoff_s)
        if paused:
            log.info("Redis is back; resuming consumption")
            resume()
            self.metrics.paused.set(0)
        now = time.time() * 1000
        ages = np.maximum(0.0, (now - np.asarray(self.arrivals, dtype=np.float64)) / 1000)
        observe_many(self.metrics.freshness, ages)
        self.arrivals.clear()

    def check_restart_next(self) -> None:
        """Ask Redis for its run_id at the next write, however recent the last check."""
        self._checked_at = -RESTART_CHECK_S

    def forget(self, tp: TopicPartitionKey) -> None:
        """Drop a partition's unwritten keys (it was given up: its new owner writes them)."""
        for name, parts in self.unwritten.items():
            if self._topics[name] == tp[0]:
                parts.pop(tp[1], None)

    def _note(self, view: str, keys: dict[int, list[Key]]) -> None:
        parts = self.unwritten[view]
        for partition, changed in keys.items():
            parts.setdefault(partition, set()).update(changed)

    def _write_once(self) -> None:
        started = time.perf_counter()
        self._check_restart()
        progress: dict[str, dict[str, Any]] = {}
        touched = sorted(
            {
                (self._topics[name], p)
                for name, parts in self.unwritten.items()
                for p, keys in parts.items()
                if keys
            }
        )
        with ExitStack() as held:  # every touched partition's fence, held while its keys are written
            allowed = {tp: self.guard is None or held.enter_context(self.guard(tp)) for tp in touched}
            for name, parts in self.unwritten.items():
                topic = self._topics[name]
                keys = [key for p, changed in parts.items() if allowed.get((topic, p)) for key in changed]
                if keys:
                    engine = self.engine.views[name]
                    self.writer.write(engine, keys)
                    progress[name] = {
                        "max_event_time": self.newest.get(name, 0),
                        "written_ms": int(time.time() * 1000),
                        "keys": engine.key_count(),
                    }
        for parts in self.unwritten.values():
            parts.clear()
        fenced = [tp for tp, mine in allowed.items() if not mine]
        if fenced:  # another worker claimed them: this one lost them without being told yet
            self.on_fenced(fenced)
        record_progress(self.client, self.namespace, self.group_id, progress)
        self._last_write_s = time.perf_counter() - started
        self.metrics.sink_seconds.labels("redis").observe(self._last_write_s)

    def _check_restart(self) -> None:
        """A Redis that restarted (new run_id: a restart, or a failover) may have lost keys: rewrite all.

        That is the view metadata (`<ns>:views`, which FeatureClient reads) and every key's state.
        Asked at most every RESTART_CHECK_S: INFO is a round trip and a reply parsed in Python,
        ~7 % of a worker's time at 5,000 events/s when asked before every write. A failed write
        and the final commit ask at once (check_restart_next).
        """
        now = time.monotonic()
        if self._run_id is not None and now - self._checked_at < RESTART_CHECK_S:
            return
        self._checked_at = now
        run_id = str(self.client.info("server")["run_id"])
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted (run_id changed); writing view metadata and every owned key again")
            self.writer.register()
            for engine in self.engine.views.values():
                self._note(engine.name, {p: engine.keys(p) for p in engine.partitions})
        self._run_id = run_id
