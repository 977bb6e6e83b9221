"""`streamfs backfill`: recompute views' feature rows (and serving state) from the archive or Kafka.

The same Decoder (Kafka source), the same engine and the same OfflineWriter/OnlineWriter as the
worker, fed the same events in the same per-partition order, so the rows are the worker's rows:
same keys, times, positions and values (tests/integration/test_backfill.py checks it against a
real worker). See docs/backfill.md for the procedures.

Order of work, per source (views reading one topic share one replay):

1. plan.make_plan checks the request and fixes the bounds (the group's committed offsets).
2. Each view's ViewJob resumes an interrupted run or starts clean; the replay starts, per
   partition, at the lowest position any job still needs.
3. Batches go through every job; each stages its rows in [start, end). At a partition's bound
   the job writes that partition's serving state to Redis (--online), drops it and checkpoints.
   Every `checkpoint_events` events, and on SIGINT/SIGTERM, every job checkpoints.
4. When every partition is done, each view's staged days are swapped into the feature log
   (install.py) and its backfill directory is removed.

`start`/`end` restrict the *rows written*, never the replay: a window's value at `start` needs
the events before it (up to the longest window, all of them for lifetime features), and
whether an event is accepted or too late depends on every earlier event of its key. So every
replay starts at the first archived offset; rows outside the range are discarded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

import redis

from streamfs.backfill.install import build_days, swap_days
from streamfs.backfill.job import ViewJob
from streamfs.backfill.plan import Plan, SourceKind, SourcePlan, make_plan
from streamfs.backfill.replay import Batch, archive_batches, kafka_batches
from streamfs.offline import layout
from streamfs.progress import Progress
from streamfs.registry import Pipeline, load_pipeline
from streamfs.settings import Settings

__all__ = ["BackfillReport", "backfill"]


@dataclass
class BackfillReport:
    views: list[str]
    source: str
    events: int = 0
    """Events replayed by this call (a resumed run counts only what it replayed)."""
    rows: int = 0
    """Feature rows written (a resumed run includes those staged before the interruption)."""
    online_keys: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    resumed: bool = False
    bounds: dict[str, dict[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.interrupted:
            head = f"backfill interrupted after {self.events:,} events; run the same command again to resume"
        else:
            head = (
                f"backfilled {', '.join(self.views)} from the {self.source}: {self.events:,} events, "
                f"{self.rows:,} rows in {self.seconds:.1f} s ({self.rate:,.0f} events/s)"
            )
            if self.online_keys:
                head += f", {self.online_keys:,} keys written to Redis"
        lines = [head]
        for topic, bounds in self.bounds.items():
            stops = ", ".join(f"[{p}]<{o}" for p, o in sorted(bounds.items()))
            lines.append(f"  {topic}: up to offsets {stops}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def backfill(
    pipeline: Pipeline | str,
    settings: Settings | None = None,
    *,
    views: Sequence[str] | None = None,
    source: SourceKind = "archive",
    start: int | None = None,
    end: int | None = None,
    online: bool = False,
    replace: bool = False,
    quiet: bool = True,
    checkpoint_events: int = 500_000,
    batch_size: int = 10_000,
    stop: Callable[[], bool] | None = None,
) -> BackfillReport:
    """Recompute the offline rows (and with `online` the Redis state) of `views`; see the module doc.

    `start`/`end` are epoch ms (inclusive/exclusive) on event time. `stop` is polled after every
    batch (as are SIGINT/SIGTERM): the run checkpoints and returns with `interrupted=True`, and
    the same call resumes it.
    """
    settings = settings or Settings.load()
    if isinstance(pipeline, str):
        pipeline = load_pipeline(pipeline)
    plan = make_plan(
        pipeline, settings, views=views, kind=source, start=start, end=end, online=online, replace=replace
    )
    report = BackfillReport([v.name for v in plan.views], source, notes=list(plan.notes))
    started = time.perf_counter()
    client = redis.Redis.from_url(settings.require_redis(), socket_timeout=30) if online else None
    jobs: list[ViewJob] = []
    try:
        for source_plan in plan.sources:
            report.bounds[source_plan.source.topic] = dict(source_plan.bounds)
            for view in source_plan.views:
                job = ViewJob(
                    settings.data_dir,
                    view,
                    _params(plan),
                    source_plan.bounds,
                    start=start,
                    end=end,
                    redis_client=client,
                    namespace=settings.online_namespace,
                )
                jobs.append(job)
                note = job.open()
                if note:
                    report.notes.append(note)
                report.resumed |= job.resumed
        progress = Progress(_total(plan, jobs), label="backfill", quiet=quiet)
        with _stop_signals() as signalled:
            stopping = lambda: signalled[0] or (stop is not None and stop())  # noqa: E731
            for source_plan in plan.sources:
                group = [j for j in jobs if j.view.source.topic == source_plan.source.topic]
                if not _replay(
                    plan, settings, source_plan, group, progress, checkpoint_events, batch_size, stopping
                ):
                    report.interrupted = True
                    break
        progress.close()
        if not report.interrupted:
            for job in jobs:
                _install(job, plan)
    finally:
        for job in jobs:
            job.close()
        if client is not None:
            client.close()
    for source_plan in plan.sources:  # views of one source share its events: count them once
        group = [j for j in jobs if j.view.source.topic == source_plan.source.topic]
        report.events += max((j.counters.events - j.events_before for j in group), default=0)
    report.rows = sum(j.counters.rows for j in jobs)
    report.online_keys = sum(j.counters.online_keys for j in jobs)
    report.seconds = time.perf_counter() - started
    return report


def _params(plan: Plan) -> dict[str, object]:
    return {
        "source": plan.kind,
        "start": plan.start,
        "end": plan.end,
        "online": plan.online,
        "replace": plan.replace,
    }


def _replay(
    plan: Plan,
    settings: Settings,
    source_plan: SourcePlan,
    jobs: list[ViewJob],
    progress: Progress,
    checkpoint_events: int,
    batch_size: int,
    stopping: Callable[[], bool],
) -> bool:
    """Run one source's events through its jobs; False if stopped (after checkpointing)."""
    pending = [j for j in jobs if not j.finished]
    if not pending:
        return True
    bounds = source_plan.bounds
    starts = {
        p: min(j.position(p, source_plan.starts.get(p, 0) if plan.kind == "archive" else 0) for j in pending)
        for p in bounds
    }
    batches: Iterator[Batch]
    if plan.kind == "archive":
        batches = archive_batches(settings.data_dir, source_plan.source, starts, bounds, size=batch_size)
    else:
        batches = kafka_batches(settings, source_plan.source, starts, bounds, size=batch_size)
    since_checkpoint = 0
    for batch in batches:
        for job in pending:
            job.process(batch.events)
            for partition in batch.finished:
                job.finish_partition(partition)
        progress.update(len(batch.events) + batch.skipped)
        since_checkpoint += len(batch.events)
        if stopping():
            for job in pending:
                job.checkpoint()
            return False
        if since_checkpoint >= checkpoint_events:
            for job in pending:
                job.checkpoint()
            since_checkpoint = 0
    for job in pending:
        for partition in bounds:
            job.finish_partition(partition)
    return True


def _install(job: ViewJob, plan: Plan) -> None:
    live = layout.features_dir(job.root, job.view.name)
    if job.phase != "swap":
        names = build_days(
            live,
            layout.features_dir(job.staging, job.view.name),
            job.dir,
            start=plan.start,
            end=plan.end,
            bounds=job.bounds,
            fingerprint=job.engine.fingerprint(),
            replace=plan.replace,
        )
        job.days = names
        job.checkpoint(phase="swap")
    swap_days(live, job.dir, job.days)
    job.remove()


def _total(plan: Plan, jobs: list[ViewJob]) -> int | None:
    """Events left to replay (from file metadata or offsets), for the progress bar's ETA."""
    total = 0
    for source_plan in plan.sources:
        group = [j for j in jobs if j.view.source.topic == source_plan.source.topic]
        for p, bound in source_plan.bounds.items():
            start = min((j.position(p, 0) for j in group), default=0)
            total += max(0, bound - max(start, source_plan.starts.get(p, 0)))
    return total or None


@contextmanager
def _stop_signals() -> Iterator[list[bool]]:
    """SIGINT/SIGTERM set a flag the replay polls after each batch (it then checkpoints and returns)."""
    flag = [False]

    def request_stop(signum: int, frame: FrameType | None) -> None:
        flag[0] = True

    try:
        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
