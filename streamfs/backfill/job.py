"""One view's backfill: its engine, its staged feature rows and its resumable checkpoint.

Everything lives under ``<data_dir>/backfill/<view>/``:

    state.json       what the run is (parameters, bounds) and how far it got, per partition:
                     the next offset, whether the partition is done, and the engine snapshot of
                     every partition in progress
    staging/         feature rows in the offline layout (staging/features/<view>/date=.../...)
    next/, old/      used while the staged rows are installed (install.py)
    lock             held (flock) while a backfill of the view runs

The checkpoint follows the worker's commit protocol: flush the staged Parquet, then write
state.json (atomically, streamfs.durable). A resumed run deletes staged files past each
partition's checkpointed offset (the same `truncate_files` the worker uses), restores the
snapshots and continues, so an interrupted run ends with exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import redis

from streamfs import durable
from streamfs.definitions import FeatureView
from streamfs.engine import ViewEngine
from streamfs.engine import snapshot as snapshots_json
from streamfs.errors import OfflineError
from streamfs.offline import OfflineWriter, layout
from streamfs.offline.writer import truncate_files
from streamfs.online import OnlineWriter
from streamfs.records import SourceEvent

__all__ = ["ViewJob", "backfill_dir"]

STATE_FORMAT = 1


def backfill_dir(root: Path, view: str) -> Path:
    return root / "backfill" / view


@dataclass
class JobCounters:
    events: int = 0
    rows: int = 0
    online_keys: int = 0


class ViewJob:
    """Replays events into one view's engine, stages its rows in [start, end), checkpoints."""

    def __init__(
        self,
        root: Path,
        view: FeatureView,
        params: dict[str, Any],
        bounds: dict[int, int],
        *,
        start: int | None,
        end: int | None,
        redis_client: redis.Redis | None = None,
        namespace: str = "sfs",
    ) -> None:
        self.root = root
        self.view = view
        self.dir = backfill_dir(root, view.name)
        self.staging = self.dir / "staging"
        self.state_path = self.dir / "state.json"
        self.engine = ViewEngine(view)
        self.params = {**params, "view": view.name, "fingerprint": self.engine.fingerprint()}
        self.bounds = dict(bounds)
        self.start, self.end = start, end
        self.online = (
            None if redis_client is None else OnlineWriter(redis_client, [self.engine], namespace=namespace)
        )
        self.positions: dict[int, int] = {}
        self.done: set[int] = set()
        self.counters = JobCounters()
        self.resumed = False
        self.events_before = 0
        """Events an interrupted run had already replayed (counters are cumulative)."""
        self.phase = "replay"
        self.days: list[str] = []
        """The date directories being installed (phase "swap"; see install.py)."""
        self._lock: int | None = None
        self.writer = OfflineWriter(self.staging, [view])

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> str | None:
        """Lock the view's backfill dir and resume a matching unfinished run; return a note or None."""
        durable.make_dirs(self.dir)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            message = f"another backfill of view {self.view.name!r} is running ({self.dir})"
            raise OfflineError(message) from None
        self._lock = fd
        state = self._read_state()
        if state is None:
            self._reset()
            return None
        if state.get("format") != STATE_FORMAT or state.get("params") != self.params:
            self._reset()
            return f"{self.view.name}: an unfinished backfill with other parameters was discarded"
        self.bounds = {int(p): int(o) for p, o in state["bounds"].items()}
        self.positions = {int(p): int(o) for p, o in state["positions"].items()}
        self.done = {int(p) for p in state["done"]}
        self.counters = JobCounters(**state["counters"])
        self.events_before = self.counters.events
        self.phase = state.get("phase", "replay")
        self.days = list(state.get("days", []))
        self.resumed = True
        staged = [layout.features_dir(self.staging, self.view.name)]
        for partition, position in self.positions.items():
            truncate_files(staged, partition, position)
        for snapshot in state["snapshots"].values():
            self.engine.restore(snapshot)
        return (
            f"{self.view.name}: resumed an interrupted backfill "
            f"({self.counters.events:,} events already replayed)"
        )

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _reset(self) -> None:
        for name in ("staging", "next", "old"):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        self.state_path.unlink(missing_ok=True)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = snapshots_json.from_json(self.state_path.read_bytes())
            return data
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ replay

    def position(self, partition: int, default: int) -> int:
        return self.positions.get(partition, default)

    def process(self, events: list[SourceEvent]) -> None:
        """Feed events (one or more partitions, each in offset order); stage the rows in range."""
        positions = self.positions
        fresh = [
            e
            for e in events
            if e.position is not None
            and e.position.offset >= positions.get(e.position.partition, 0)
            and e.position.partition not in self.done
        ]
        if not fresh:
            return
        lo, hi = self.start, self.end
        if lo is None and hi is None:
            rows = self.engine.process(fresh).rows
        else:
            # Rows only for events in [lo, hi) (a row's time is its event's): the others update
            # the state alone, which skips most of their cost. Batching never changes results.
            rows = []
            for wanted, run in groupby(
                fresh, key=lambda e: (lo is None or e.event_time >= lo) and (hi is None or e.event_time < hi)
            ):
                result = self.engine.process(list(run), rows=wanted)
                rows += result.rows
        self.writer.add_rows(rows)
        for event in fresh:
            assert event.position is not None
            positions[event.position.partition] = event.position.offset + 1
        self.counters.events += len(fresh)
        self.counters.rows += len(rows)

    def finish_partition(self, partition: int) -> None:
        """The partition reached its bound: write its serving state (--online), forget it, checkpoint."""
        if partition in self.done:
            return
        if self.online is not None:
            self.counters.online_keys += self.online.write(self.engine, self.engine.keys(partition))
        self.engine.drop(partition)
        self.positions[partition] = self.bounds.get(partition, self.positions.get(partition, 0))
        self.done.add(partition)
        self.checkpoint()

    @property
    def finished(self) -> bool:
        return all(p in self.done for p in self.bounds)

    def checkpoint(self, phase: str | None = None) -> None:
        """Flush the staged rows, then record positions and snapshots (the worker's order)."""
        self.writer.flush()
        if phase is not None:
            self.phase = phase
        snapshots = {str(p): self.engine.snapshot(p) for p in self.engine.partitions if p not in self.done}
        state = {
            "format": STATE_FORMAT,
            "params": self.params,
            "phase": self.phase,
            "days": self.days,
            "bounds": {str(p): o for p, o in self.bounds.items()},
            "positions": {str(p): o for p, o in self.positions.items()},
            "done": sorted(self.done),
            "counters": vars(self.counters),
            "snapshots": snapshots,
        }
        durable.write_bytes(self.state_path, snapshots_json.to_json(state))

    def remove(self) -> None:
        """The run is installed: delete its staging and state (keep the lock file's directory)."""
        self._reset()
