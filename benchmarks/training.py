"""Point-in-time training sets: labels x archived events, against DuckDB's ASOF JOIN.

Generates an event archive (and the feature log the worker would have written) with the real
OfflineWriter and engine for pipelines.payments:card_activity, then, each in a fresh process so
peak RSS is its own:

  train   streamfs.training.training_set(labels, "card_activity", mode=..., workers=...)
          (engine replay; buckets of keys in `workers` forked processes, default: the CPUs)
  asof    DuckDB: labels ASOF LEFT JOIN the feature log ON card_id AND label time >= event_time
          (the "physical limit": a columnar as-of lookup of precomputed rows; it is not
          window-exact between events, which is why streamfs replays the engine instead)

Target (issue 5): 1,000,000 labels vs 10,000,000 events (100,000 cards, 30 days) in < 60 s and
< 4 GB. Peak RSS of the train phase is reported for the main process and for the largest
worker process; their bound "total" (main + workers x largest worker) counts pages the workers
share with the main process copy-on-write once per process, so it overstates the real peak.
--profile profiles the main process only: use it with --workers 1. Usage:

  python benchmarks/training.py --events 1000000 --labels 100000 [--keys 100000] [--days 30]
         [--mode as_served|event_time] [--workers N] [--root DIR] [--reuse] [--profile]

Generating the full-size archive (engine with offline rows, written by the real OfflineWriter)
takes tens of minutes; keep it with --root DIR and rerun with --reuse.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.payments import card_activity, payments
from streamfs.durations import ms_to_datetime
from streamfs.engine import ViewEngine
from streamfs.offline import OfflineWriter
from streamfs.records import Position, SourceEvent
from streamfs.training import Mode

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
PARTITIONS = 4
CHUNK = 500_000


def generate(
    root: Path, events: int, labels: int, keys: int, days: int, feature_log: bool
) -> dict[str, float]:
    """Archive (and feature log) of `events` payments in arrival order, flushed every CHUNK events."""
    rng = np.random.default_rng(7)
    arrival = np.sort(rng.integers(0, days * DAY_MS, events)) + START_MS
    delay = rng.exponential(2_000, events).astype(np.int64)
    late = rng.random(events) < 0.01
    delay[late] += rng.integers(0, 240_000, int(late.sum()))  # within the source's 5 min lateness
    event_time = arrival - delay
    card = rng.integers(0, keys, events)
    partition = card % PARTITIONS
    offset = np.zeros(events, dtype=np.int64)
    for p in range(PARTITIONS):
        mask = partition == p
        offset[mask] = np.arange(int(mask.sum()))
    amount = np.round(rng.lognormal(3.3, 1.1, events), 2)
    merchant = rng.integers(0, 5_000, events)

    writer = OfflineWriter(root, [card_activity])
    engine = ViewEngine(card_activity)
    build = write = replay = 0.0
    for lo in range(0, events, CHUNK):
        hi = min(events, lo + CHUNK)
        started = time.perf_counter()
        chunk = [
            SourceEvent(
                {
                    "card_id": f"card_{c:07d}",
                    "merchant_id": f"m_{m:05d}",
                    "amount": a,
                    "currency": "EUR",
                    "country": "DE",
                    "ts": ms_to_datetime(t),
                },
                t,
                r,
                Position("payments", p, o),
            )
            for c, m, a, t, r, p, o in zip(
                card[lo:hi].tolist(),
                merchant[lo:hi].tolist(),
                amount[lo:hi].tolist(),
                event_time[lo:hi].tolist(),
                arrival[lo:hi].tolist(),
                partition[lo:hi].tolist(),
                offset[lo:hi].tolist(),
                strict=True,
            )
        ]
        build += time.perf_counter() - started
        started = time.perf_counter()
        rows = engine.process(chunk).rows if feature_log else []
        replay += time.perf_counter() - started
        started = time.perf_counter()
        writer.add_events(payments, chunk)
        writer.add_rows(rows)
        writer.flush()
        write += time.perf_counter() - started
        print(f"  generated {hi:,}/{events:,} events", file=sys.stderr)

    label_rng = np.random.default_rng(11)
    label_times = label_rng.integers(START_MS, START_MS + days * DAY_MS, labels)
    table = pa.table(
        {
            "card_id": [f"card_{c:07d}" for c in label_rng.integers(0, keys, labels).tolist()],
            "timestamp": pa.array(label_times, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "is_fraud": label_rng.random(labels) < 0.01,
        }
    )
    pq.write_table(table, root / "labels.parquet")
    return {"build_events_s": build, "engine_feature_log_s": replay, "write_s": write}


def train(root: Path, mode: Mode, profile: bool, workers: int | None) -> dict[str, float]:
    from streamfs.training import training_set
    from streamfs.training.buckets import default_workers

    started = time.perf_counter()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    result = training_set(
        root / "labels.parquet",
        "card_activity",
        root=root,
        pipeline=[card_activity],
        mode=mode,
        workers=workers,
    )
    if profiler:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    seconds = time.perf_counter() - started
    filled = result.column("count_1h").null_count
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # reaped pool workers
    used = (workers or default_workers()) if worker_mb else 0
    return {
        "seconds": seconds,
        "rows": result.num_rows,
        "null_rows": filled,
        "peak_rss_mb": _peak_mb(),
        "worker_peak_rss_mb": worker_mb,
        "workers": used,
    }


def asof(root: Path) -> dict[str, float]:
    import duckdb

    glob = str(root / "features" / "card_activity" / "*" / "*.parquet")
    labels = str(root / "labels.parquet")
    started = time.perf_counter()
    with duckdb.connect() as connection:
        connection.execute("SET threads = 1")  # like the engine replay: one core
        rows = connection.execute(
            f"""
            SELECT count(*), count(f.count_1h) FROM read_parquet('{labels}') l
            ASOF LEFT JOIN read_parquet('{glob}') f
              ON l.card_id = f.card_id AND l.timestamp >= f.event_time
            """
        ).fetchone()
    assert rows is not None
    return {"seconds": time.perf_counter() - started, "rows": rows[0], "peak_rss_mb": _peak_mb()}


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(phase: str, args: argparse.Namespace, root: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--mode", args.mode]
    if args.profile:
        command.append("--profile")
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--mode", default="as_served", choices=["as_served", "event_time"])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep the archive already under --root")
    parser.add_argument("--workers", type=int, default=None, help="training_set(workers=); default: the CPUs")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--phase", default="all", choices=["all", "train", "asof"])
    args = parser.parse_args()

    if args.phase == "train":
        print(json.dumps(train(args.root, args.mode, args.profile, args.workers)))
        return
    if args.phase == "asof":
        print(json.dumps(asof(args.root)))
        return

    root = args.root or Path(tempfile.mkdtemp(prefix="streamfs-training-bench-"))
    print(f"{args.events:,} events, {args.keys:,} cards, {args.days} days, {args.labels:,} labels; {root}")
    if not args.reuse:
        started = time.perf_counter()
        parts = generate(root, args.events, args.labels, args.keys, args.days, feature_log=True)
        detail = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        print(f"generate (archive + feature log): {time.perf_counter() - started:.1f} s ({detail})")
    trained = _child("train", args, root)
    reference = _child("asof", args, root)
    main_mb, worker_mb, workers = trained["peak_rss_mb"], trained["worker_peak_rss_mb"], trained["workers"]
    rss = f"peak RSS {main_mb:.0f} MB"
    if workers:
        rss += f" main + {workers:.0f} workers x {worker_mb:.0f} MB = {main_mb + workers * worker_mb:.0f} MB"
    print(
        f"training_set {args.mode}: {trained['seconds']:.1f} s, {rss}, "
        f"{trained['rows']:,} rows ({trained['null_rows']:,} without features)"
    )
    print(
        f"DuckDB ASOF JOIN (1 thread): {reference['seconds']:.2f} s, peak RSS {reference['peak_rss_mb']:.0f} MB"
    )
    print(f"ratio: {trained['seconds'] / reference['seconds']:.0f}x")


if __name__ == "__main__":
    main()
