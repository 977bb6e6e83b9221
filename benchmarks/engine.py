"""Engine throughput and state size: N events, K keys, one view of 3 windows x 5 aggregations.

Prints events/s through ViewEngine.process (ingest, state update and one offline row per event;
with --state-only the state update alone, as replays run it),
the RSS growth of the state per key and per window-aggregation pair, and a profile summary with
--profile. With --columnar the events go in as Arrow columns and the rows come out as an Arrow
table (ViewEngine.process_table: the kernel's columnar path, no Python object per event).
Usage: python benchmarks/engine.py [--events 1000000] [--keys 10000] [--columnar] [--profile]

State size is measured a second way, with tracemalloc, on a smaller run of the same per-key
density (--memory-keys keys, events scaled to match): the bytes still allocated once the events
and rows are gone, i.e. exactly what the engine retains (including the event values it keeps).
Running the same stream through the view without its count_distinct features separates the
tiled pairs' bytes from count_distinct's, which is reported per distinct value held.

Last, the checkpoint cost of the state the last run built: snapshot + JSON and JSON + restore,
in the kernel's own format (its arrays) and in the portable one (per-key partials).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import resource
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.durations import label, to_ms
from streamfs.engine import ViewEngine
from streamfs.engine.snapshot import from_json, to_json
from streamfs.records import Position, SourceEvent


class Payment(BaseModel):
    card_id: str
    merchant_id: str
    amount: float
    ts: datetime


def build_view(distinct: bool = True, lateness: str = "0s") -> FeatureView:
    source = KafkaSource(
        "payments", topic="payments", schema=Payment, timestamp_field="ts", allowed_lateness=lateness
    )
    features = []
    for window, hop in (("10m", "5m"), ("1h", "5m"), ("24h", "1h")):
        features += [
            Aggregate("amount", "count", window=window, hop=hop),
            Aggregate("amount", "sum", window=window, hop=hop),
            Aggregate("amount", "mean", window=window, hop=hop),
            Aggregate("amount", "max", window=window, hop=hop),
        ]
        if distinct:
            features.append(Aggregate("merchant_id", "count_distinct", window=window, hop=hop))
    return FeatureView(
        "card_activity", entity=Entity("card", join_keys=["card_id"]), source=source, features=features
    )


def make_events(n: int, keys: int, seed: int = 7) -> list[SourceEvent]:
    rng = random.Random(seed)
    start = 1_700_000_000_000
    span = 24 * 3_600_000  # one day of traffic
    events = []
    for i in range(n):
        t = start + i * span // n
        card = f"c{rng.randrange(keys)}"
        fields = {
            "card_id": card,
            "merchant_id": f"m{rng.randrange(500)}",
            "amount": round(rng.uniform(1, 500), 2),
        }
        events.append(SourceEvent(fields, t, t + 5, Position("payments", 0, i)))
    return events


def events_table(events: list[SourceEvent]) -> pa.Table:
    """The events as the columns a columnar decoder (or the archive) hands the engine."""
    return pa.table(
        {
            "card_id": [e.fields["card_id"] for e in events],
            "merchant_id": [e.fields["merchant_id"] for e in events],
            "amount": pa.array([e.fields["amount"] for e in events], pa.float64()),
            "event_time": pa.array([e.event_time for e in events], pa.timestamp("ms", tz="UTC")),
            "arrival_time": pa.array([e.arrival_time for e in events], pa.timestamp("ms", tz="UTC")),
            "partition": pa.array([e.position.partition if e.position else 0 for e in events], pa.int32()),
            "offset": pa.array([e.position.offset if e.position else 0 for e in events], pa.int64()),
        }
    )


def payments_view(lateness: str | None) -> FeatureView:
    """The worker benchmark's view (pipelines.payments.card_activity), its source's allowed
    lateness replaced when one is given."""
    from pipelines.payments import card_activity

    if lateness is None:
        return card_activity
    source = card_activity.source.model_copy(update={"allowed_lateness": to_ms(lateness)})
    return card_activity.model_copy(update={"source": source})


def payments_table(n: int, keys: int) -> pa.Table:
    """The worker benchmark's stream as archive columns: n payments over `keys` Zipf-popular
    cards, 1 % of them late (pipelines.payments.generate with the worker benchmark's seed)."""
    from pipelines.payments import generate

    start = datetime(2026, 1, 1, tzinfo=UTC)
    payments = list(generate(n, keys=keys, start=start, seed=1, late_fraction=0.01))
    times = [datetime.fromisoformat(p["ts"]) for p in payments]
    return pa.table(
        {
            **{
                name: [p[name] for p in payments]
                for name in ("card_id", "merchant_id", "currency", "country")
            },
            "amount": pa.array([p["amount"] for p in payments], pa.float64()),
            "event_time": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "arrival_time": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "partition": pa.array([0] * n, pa.int32()),
            "offset": pa.array(range(n), pa.int64()),
        }
    )


def time_kernel_calls() -> list[float]:
    """Time every call of the compiled loop (kernel/batch.process, as kernel/run.py calls it):
    the returned cell adds up its wall time."""
    from streamfs.engine.kernel import batch

    spent = [0.0]
    process = batch.process

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return process(*args)
        finally:
            spent[0] += time.perf_counter() - started

    batch.process = timed  # type: ignore[assignment]
    return spent


def traced_state(view: FeatureView, events: int, keys: int, batch: int) -> tuple[int, ViewEngine]:
    """Bytes the engine retains after processing the stream (tracemalloc; events built inside)."""
    gc.collect()
    tracemalloc.start()
    stream = make_events(events, keys)
    engine = ViewEngine(view)
    for i in range(0, len(stream), batch):
        engine.process(stream[i : i + batch])
    del stream
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return retained, engine


def memory_report(events: int, keys: int, memory_keys: int, batch: int) -> None:
    memory_keys = min(memory_keys, keys)
    scaled = events * memory_keys // keys
    full_view, tiled_view = build_view(), build_view(distinct=False)
    for view in (full_view, tiled_view):  # the row path's compiled code loaded (or compiled)
        ViewEngine(view).process(make_events(2_000, 100))  # untraced: it is not state
    full, engine = traced_state(full_view, scaled, memory_keys, batch)
    tiled, _ = traced_state(tiled_view, scaled, memory_keys, batch)
    pairs, tiled_pairs = len(full_view.features), len(tiled_view.features)
    distinct_names = [f.name for f in full_view.features if f.function == "count_distinct"]
    values = 0
    keys_held = engine.keys()
    for key in keys_held:
        watermark = engine.watermark(key)
        assert watermark is not None
        state = engine.evaluate(key, watermark)
        assert state is not None
        values += sum(state[name] for name in distinct_names)
    print(
        f"  state (tracemalloc, {scaled:,} events over {memory_keys:,} keys, same density): "
        f"{full / memory_keys:,.0f} B/key = {full / memory_keys / pairs:,.0f} B per key per pair; "
        f"tiled pairs {tiled / memory_keys / tiled_pairs:,.0f} B per key per pair; count_distinct "
        f"{(full - tiled) / max(values, 1):,.0f} B per distinct value held "
        f"({values / memory_keys / len(distinct_names):,.1f} values per key per window)"
    )


def snapshot_report(view: FeatureView, engine: ViewEngine, partition: int = 0, repeat: int = 3) -> None:
    """Checkpoint cost of the state just built: snapshot + JSON, and JSON + restore, in the
    kernel's own format and in the portable one (medians of `repeat`)."""
    keys = len(engine.keys(partition))
    formats = [("kernel", engine.snapshot)] if engine.uses_kernel else []
    formats.append(("portable", engine.portable_snapshot))
    for name, take in formats:
        saves, loads = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            raw = to_json(take(partition))
            t1 = time.perf_counter()
            fresh = ViewEngine(view)
            t2 = time.perf_counter()
            fresh.restore(from_json(raw))
            t3 = time.perf_counter()
            saves.append(t1 - t0)
            loads.append(t3 - t2)
        assert fresh.uses_kernel == engine.uses_kernel and len(fresh.keys(partition)) == keys
        print(
            f"  checkpoint of {keys:,} keys, {name} format: snapshot+JSON "
            f"{statistics.median(saves) * 1e3:,.0f} ms, JSON+restore {statistics.median(loads) * 1e3:,.0f} ms, "
            f"{len(raw) / 1e6:.1f} MB"
        )


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--columnar",
        action="store_true",
        help="ViewEngine.process_table: the events as Arrow columns (built before timing), rows as an Arrow table",
    )
    parser.add_argument(
        "--lateness",
        default=None,
        help="the source's allowed_lateness, e.g. 5m (buffers recent events per key); default 0s, "
        "or the payments source's own 5m with --payments",
    )
    parser.add_argument(
        "--payments",
        action="store_true",
        help="the worker's stream and view instead: pipelines.payments.generate (Zipf-popular cards, "
        "1 %% late) through card_activity (15 features); needs --columnar",
    )
    parser.add_argument(
        "--memory-keys", type=int, default=1_000, help="keys in the tracemalloc run (0: skip)"
    )
    parser.add_argument(
        "--state-only",
        action="store_true",
        help="process(rows=False): the state update alone, what recovery, backfills and training sets replay",
    )
    args = parser.parse_args()
    if args.columnar and args.state_only:
        parser.error("--columnar produces rows: drop --state-only")
    if args.payments and not args.columnar:
        parser.error("--payments runs the columnar path: add --columnar")

    events: list[SourceEvent] = []
    if args.payments:
        view = payments_view(args.lateness)
        table = payments_table(args.events, args.keys)
        stream = "payments stream (pipelines.payments, card_activity)"
    else:
        view = build_view(lateness=args.lateness or "0s")
        events = make_events(args.events, args.keys)
        stream = "synthetic stream"
    pairs = len(view.features)
    mode = "state only (rows=False)" if args.state_only else "with offline rows"
    if args.columnar:
        mode += ", columnar (process_table: Arrow batches in, an Arrow table of rows out)"
        if not args.payments:
            table = events_table(events)
        del events[:]  # the columnar run reads the table: 1 M live SourceEvents would only slow
        # the garbage collector's passes, which a worker (no such list) does not pay
    print(
        f"engine benchmark: {stream}, {args.events:,} events, {args.keys:,} keys, {pairs} window-aggregation "
        f"pairs, lateness {label(view.source.allowed_lateness)}, {mode}"
    )
    kernel_time = time_kernel_calls()
    rates = []
    for run in range(args.repeat):
        gc.collect()
        before = rss_mb()
        engine = ViewEngine(view)
        profiler = cProfile.Profile() if args.profile and run == 0 else None
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        rows = 0
        kernel_time[0] = 0.0
        for i in range(0, args.events, args.batch):
            if args.columnar:
                result = engine.process_table(table.slice(i, args.batch))
                assert result is not None, engine.kernel_refusal
                rows += result.rows.num_rows
                continue
            rows += len(engine.process(events[i : i + args.batch], rows=not args.state_only).rows)
        if profiler:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        grown = rss_mb() - before
        rate = args.events / elapsed
        rates.append(rate)
        print(
            f"  run {run + 1}: {rate:,.0f} events/s, {cpu / args.events * 1e6:.2f} µs CPU/event, "
            f"{rows:,} rows, state RSS +{grown:.0f} MB = {grown * 1e6 / args.keys:,.0f} B/key, "
            f"{grown * 1e6 / args.keys / pairs:,.0f} B per key per pair"
            + (f", compiled loop {kernel_time[0] / args.events * 1e6:.2f} µs/event" if kernel_time[0] else "")
        )
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        if run < args.repeat - 1:
            del engine
    if rates:
        print(
            f"median: {statistics.median(rates):,.0f} events/s (target 1,000,000); peak RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
    if args.repeat:
        snapshot_report(view, engine)
        del engine
    del events
    if args.memory_keys and not args.payments:
        memory_report(args.events, args.keys, args.memory_keys, args.batch)


if __name__ == "__main__":
    main()
