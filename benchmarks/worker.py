"""The streamfs worker end to end, next to the raw consumer ceiling and Quix Streams, plus freshness and recovery.

    .venv/bin/python benchmarks/worker.py [--events 100000] [--keys 10000] [--partitions 4]
        [--rates 300,1000,2000] [--freshness-seconds 20] [--freshness-modes fixed-500,fixed-10,adaptive-10]
        [--recovery-keys 100000] [--skip-quix]
        [--modes raw-10ms,raw-1000ms,streamfs,quix-tumbling,quix-hopping] [--repeat N]
        [--worker-options '{"backlog_online_interval_s": 0}'] [--only throughput,freshness,recovery]
        [--stages]

Starts its own embedded broker (Tansu) and Redis. Quix Streams must be installed in the venv
(`pip install quixstreams`; it is not a streamfs dependency).

throughput  `--events` payments (pipelines.payments.generate, `--keys` Zipf-popular cards) on
            topic `payments` with `--partitions` partitions; then, each in its own subprocess
            and consumer group, over the same records:
              raw-10ms / raw-1000ms  a bare confluent-kafka consumer, no decoding
                                     (fetch.queue.backoff.ms 10, as streamfs sets it / the default)
              streamfs               Worker on pipelines.payments:card_activity (13 features):
                                     consume, decode, engine, Redis + Parquet, commit
              streamfs-<N>w          N such workers at once in one consumer group, sharing
                                     the data directory (not run unless named in --modes)
              quix-tumbling          Quix Streams: count, sum, mean, max per card, 1 h tumbling
              quix-hopping           the same, 1 h windows hopping every 5 min
            events/s and CPU s per million events (CPU of the worker's forked checkpoint writers
            included) are measured from the first record to the end (group join and imports
            excluded); peak RSS is the process's VmHWM (the parent's). `--repeat N`
            runs each mode N times (alternating) and adds a median row per mode;
            `--worker-options` (JSON) sets WorkerOptions fields of the streamfs and freshness runs.
            `--stages` adds, under each streamfs run, the thread CPU and wall time per event of
            the loop's stages and of the Parquet thread (STAGES; nested ones are included in
            their parents'; the whole run, warm-up and group join included).
freshness   a fresh broker and Redis; a worker subprocess; payments produced at each steady
            `--rates` (events/s, event time = now) for `--freshness-seconds`; ten times a second
            a probe payment with a unique amount is appended (linger 0, flushed: the time after
            flush is "appended") and a reader polls FeatureClient until the card's amount_last
            shows it. Reported: p50 / p99 / max of appended → readable, with the worker's Redis
            writes coalesced every 250 ms (online_interval_s, fixed) and adaptive (the default).
            A warm-up first lasts until a probe is answered (a kernel not cached yet compiles
            then); `--freshness-workers N` runs N workers in one group (the warm-up then lasts
            15 s at least).
recovery    `--recovery-keys` cards with 3 payments each through a worker (4 partitions), then
            Worker.recover of every partition timed (a) from the shutdown checkpoint and (b) with
            the checkpoints removed (the whole event archive replayed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from pipelines.payments import card_activity, generate  # noqa: E402
from streamfs.keys import encode_key  # noqa: E402
from streamfs.produce import produce_waiting  # noqa: E402
from streamfs.registry import Pipeline  # noqa: E402
from streamfs.runner import Worker, WorkerOptions  # noqa: E402
from streamfs.services import EmbeddedKafka, EmbeddedRedis  # noqa: E402
from streamfs.settings import DEV_BROKER_CONSUMER, Settings  # noqa: E402

TOPIC = "payments"
START = datetime(2024, 3, 1, tzinfo=UTC)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def create_topic(bootstrap: str, partitions: int, name: str = TOPIC) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"retention.ms": "-1", "retention.bytes": "-1"}  # Quix stops with KeyError without them
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)])[
        name
    ].result(15)
    while len(admin.list_topics(name, timeout=10).topics[name].partitions) != partitions:
        time.sleep(0.05)


def produce(bootstrap: str, events: Any, bad_every: int = 0) -> int:
    """Produce the payments; with `bad_every` N, also an undecodable record after every N-th
    (same key), as dirty input: the dead-letter path and a batch's decode under it are measured."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000})
    count = 0
    for event in events:
        key = encode_key([event["card_id"]]).encode()
        produce_waiting(producer, TOPIC, value=orjson.dumps(event), key=key)
        count += 1
        if bad_every and count % (bad_every + 1) == bad_every:
            produce_waiting(producer, TOPIC, value=b"{not json", key=key)
            count += 1
    producer.flush(60)
    return count


# ---------------------------------------------------------------- one run, in its own process


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the worker's checkpoint writers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Clock:
    """Wall and CPU time from the first record on."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.started_at = 0.0

    def start(self) -> None:
        if not self.wall:
            self.wall, self.cpu, self.started_at = time.perf_counter(), cpu_seconds(), time.time()

    def result(self, events: int) -> dict[str, float]:
        """Also the epoch seconds of the first record and of the end, to merge concurrent workers."""
        wall, cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu
        return {
            "events": events, "wall_s": wall, "cpu_s": cpu, "rss_mb": peak_rss_mb(),
            "started_at": self.started_at, "ended_at": time.time(),
        }  # fmt: skip


def run_raw(bootstrap: str, group: str, events: int, backoff_ms: int) -> dict[str, float]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
         "enable.auto.commit": False, "fetch.queue.backoff.ms": backoff_ms, **DEV_BROKER_CONSUMER}
    )  # fmt: skip
    consumer.subscribe([TOPIC])
    clock, seen = Clock(), 0
    while seen < events:
        batch = consumer.consume(10_000, 0.5)
        if batch:
            clock.start()
            seen += sum(1 for m in batch if m.error() is None)
    result = clock.result(seen)
    consumer.close()
    return result


STAGES = {  # --stages: (module, owner or None, attribute) -> the label its thread CPU is added to
    ("streamfs.worker.loop", "Worker", "step"): "loop turn (Worker.step)",
    ("streamfs.sources", "KafkaReader", "consume"): "  consume",
    ("streamfs.worker.datapath", "DataPath", "process_runs"): "  data path",
    ("streamfs.worker.datapath", None, "decode_salvaging"): "    decode",
    ("streamfs.engine.view", "ViewEngine", "process_table"): "    engine (process_table)",
    ("streamfs.worker.online_sync", "OnlineSync", "write"): "  Redis writes",
    ("streamfs.engine.view", "ViewEngine", "serving_columns"): "    serving states",
    ("streamfs.worker.commit", "Committer", "_write_sealed"): "Parquet thread (write_sealed)",
}


def account_stages() -> dict[str, list[float]]:
    """Wrap each STAGES function so its calls add their thread CPU and wall time to its label:
    where the worker's CPU per event goes (nested labels are included in their parents')."""
    import importlib

    spent: dict[str, list[float]] = {label: [0.0, 0.0, 0] for label in STAGES.values()}
    for (module_name, owner_name, attribute), label in STAGES.items():
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        function = getattr(owner, attribute)

        def timed(*args: Any, _function: Any = function, _cell: list[float] = spent[label], **kw: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return _function(*args, **kw)
            finally:
                _cell[0] += time.thread_time() - cpu
                _cell[1] += time.perf_counter() - wall
                _cell[2] += 1

        setattr(owner, attribute, timed)
    return spent


def run_streamfs(
    bootstrap: str, redis_url: str, group: str, events: int, data_dir: str, options: dict[str, Any]
) -> dict[str, Any]:
    stages = account_stages() if os.environ.get("STREAMFS_BENCH_STAGES") else None
    settings = Settings(
        kafka_bootstrap=bootstrap, redis_url=redis_url, kafka_dev_broker=True, data_dir=Path(data_dir),
        group_id=group,
    )  # fmt: skip
    worker = Worker(
        Pipeline((card_activity,)),
        settings,
        WorkerOptions(until_caught_up=True, serve_metrics=False, **options),
    )
    clock, process, processed = Clock(), worker.process_runs, [0]

    def timed(runs: Any) -> None:
        clock.start()
        processed[0] += sum(len(run.offsets) for run in runs)
        process(runs)

    worker.process_runs = timed  # type: ignore[method-assign]
    worker.run()
    result: dict[str, Any] = {
        **clock.result(sum(worker.commit_log.read().values())),
        "processed": processed[0],
    }
    if stages is not None:  # (the whole run: the warm-up and the group join included)
        result["stages"] = {
            label: [cpu / events * 1e6, wall / events * 1e6, n] for label, (cpu, wall, n) in stages.items()
        }
    return result


def run_quix(bootstrap: str, group: str, events: int, state_dir: str, hopping: bool) -> dict[str, float]:
    from datetime import timedelta

    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Max, Mean, Sum

    app = Application(
        broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest", state_dir=state_dir,
        consumer_extra_config=dict(DEV_BROKER_CONSUMER), loglevel="WARNING",
    )  # fmt: skip

    def event_time(value: Any, headers: Any, timestamp: float, kind: Any) -> int:
        return int(datetime.fromisoformat(value["ts"]).timestamp() * 1000)

    topic = app.topic(TOPIC, value_deserializer="json", timestamp_extractor=event_time)
    clock, seen = Clock(), [0]

    def count(value: Any) -> None:
        clock.start()
        seen[0] += 1
        if seen[0] >= events:
            app.stop()

    sdf = app.dataframe(topic).update(count)
    window = (
        sdf.hopping_window(timedelta(hours=1), timedelta(minutes=5))
        if hopping
        else sdf.tumbling_window(timedelta(hours=1))
    )
    window.agg(
        count=Count(), amount_sum=Sum("amount"), amount_mean=Mean("amount"), amount_max=Max("amount")
    ).current()
    app.run()
    return clock.result(seen[0])


def child(argv: list[str]) -> None:
    mode, bootstrap, redis_url, group, events, workdir, options = argv
    n = int(events)
    if mode.startswith("raw-"):
        result = run_raw(bootstrap, group, n, int(mode.removeprefix("raw-").removesuffix("ms")))
    elif mode == "streamfs":
        result = run_streamfs(bootstrap, redis_url, group, n, workdir, json.loads(options))
    else:
        result = run_quix(bootstrap, group, n, workdir, hopping=mode == "quix-hopping")
    print("RESULT " + json.dumps(result), flush=True)


def in_subprocess(
    mode: str, bootstrap: str, redis_url: str, events: int, workdir: Path, options: str = "{}"
) -> dict[str, Any]:
    """One run; `streamfs-<N>w` runs N streamfs workers at once in one consumer group."""
    group = f"bench-{mode}-{time.monotonic_ns()}"
    workers = int(mode.removeprefix("streamfs-").removesuffix("w")) if mode.endswith("w") else 1
    child_mode = "streamfs" if workers > 1 else mode
    children = []
    for _ in range(workers):  # sharing one data directory (the offline store), as a deployment does
        argv = [sys.executable, __file__, "_child", child_mode, bootstrap, redis_url, group, str(events)]
        argv += [str(workdir), options]
        children.append(
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
        )
    results: list[dict[str, Any]] = []
    for process in children:
        stdout, stderr = process.communicate(timeout=3600)
        found = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        if not found:
            return {"mode": mode, "error": (stderr or stdout)[-1500:]}
        results.append(json.loads(found[-1].removeprefix("RESULT ")))
    return {"mode": mode, **merge_concurrent(results)}


def merge_concurrent(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers of one group as one run: from the first record any worker saw to the last end.

    Each worker reports the offsets the group's shared commit log holds when it stops, so the
    last one to stop reports them all."""
    if len(results) == 1:
        return results[0]
    started = min(r["started_at"] for r in results if r["started_at"])
    ended = max(r["ended_at"] for r in results)
    return {
        "events": max(r["events"] for r in results), "wall_s": ended - started,
        "cpu_s": sum(r["cpu_s"] for r in results), "rss_mb": max(r["rss_mb"] for r in results),
        "processed": [r["processed"] for r in results],
    }  # fmt: skip


def throughput(args: argparse.Namespace, tmp: Path) -> None:
    with EmbeddedKafka(die_with_parent=True) as kafka, EmbeddedRedis(die_with_parent=True) as redis_service:
        create_topic(kafka.address, args.partitions)
        started = time.perf_counter()
        n = produce(
            kafka.address,
            generate(args.events, keys=args.keys, start=START, seed=1, late_fraction=0.01),
            args.bad_every,
        )
        print(
            f"produced {n:,} records over {args.keys:,} cards in {time.perf_counter() - started:.1f} s",
            end="",
        )
        print(f" (1 undecodable after every {args.bad_every:,} payments)\n" if args.bad_every else "\n")
        modes = ["raw-10ms", "raw-1000ms", "streamfs", "quix-tumbling", "quix-hopping"]
        if args.skip_quix:
            modes = [m for m in modes if not m.startswith("quix")]
        if args.modes:
            wanted = args.modes.split(",")
            modes = [m for m in modes if m in wanted] + [m for m in wanted if m.startswith("streamfs-")]
        print(
            f"{'run':<16} {'events':>9} {'s':>7} {'events/s':>10} {'CPU s / M events':>17} {'peak RSS MB':>12}"
        )
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for attempt in range(args.repeat):
            for mode in modes:
                workdir = tmp / f"{mode}-{attempt}"
                workdir.mkdir()
                r = in_subprocess(mode, kafka.address, redis_service.address, n, workdir, args.worker_options)
                if "error" in r:
                    print(f"{mode:<16} FAILED: {r['error']}")
                    continue
                runs[mode].append(r)
                print_run(mode, r)
                for label, (cpu, wall, calls) in r.get("stages", {}).items():
                    print(f"    {label:<32} {cpu:6.2f} µs CPU / event {wall:7.2f} µs wall {calls:>7,} calls")
        if args.repeat > 1:
            print("medians:")
            for mode, results in runs.items():
                if results:
                    print_run(
                        mode,
                        {
                            k: statistics.median(r[k] for r in results)
                            for k in ("events", "wall_s", "cpu_s", "rss_mb")
                        },
                    )


def print_run(mode: str, r: dict[str, Any]) -> None:
    print(
        f"{mode:<16} {r['events']:>9,.0f} {r['wall_s']:>7.1f} {r['events'] / r['wall_s']:>10,.0f} "
        f"{r['cpu_s'] / r['events'] * 1e6:>17.1f} {r['rss_mb']:>12.0f}"
        + (f"   records per worker {r['processed']}" if isinstance(r.get("processed"), list) else ""),
        flush=True,
    )


# ---------------------------------------------------------------- freshness

WORKER_SCRIPT = """
import json
import sys
from pathlib import Path
from pipelines.payments import card_activity
from streamfs.registry import Pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings
bootstrap, redis_url, data_dir, group, adaptive, fetch_wait, extra = sys.argv[1:8]
overrides = {"fetch.wait.max.ms": int(fetch_wait)} if fetch_wait else {}
settings = Settings(kafka_bootstrap=bootstrap, redis_url=redis_url, kafka_dev_broker=True,
                    data_dir=Path(data_dir), group_id=group, consumer_overrides=overrides)
options = WorkerOptions(serve_metrics=False, adaptive_online=adaptive == "1", **json.loads(extra))
sys.exit(Worker(Pipeline((card_activity,)), settings, options).run())
"""


WARM_UP_LIMIT_S = 240.0


def freshness_run(args: argparse.Namespace, tmp: Path, adaptive: bool, fetch_wait: str) -> None:
    from streamfs.online import FeatureClient

    with EmbeddedKafka(die_with_parent=True) as kafka, EmbeddedRedis(die_with_parent=True) as redis_service:
        create_topic(kafka.address, args.partitions)
        data_dir = tmp / f"fresh-{int(adaptive)}-{fetch_wait}"
        group = f"fresh-{time.monotonic_ns()}"
        argv = [sys.executable, "-c", WORKER_SCRIPT, kafka.address, redis_service.address, str(data_dir),
                group, "1" if adaptive else "0", fetch_wait, args.worker_options]  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        workers = [  # one consumer group sharing the data directory
            subprocess.Popen(argv, env=environment, cwd=tmp) for _ in range(args.freshness_workers)
        ]
        load = Producer({"bootstrap.servers": kafka.address, "linger.ms": 5})
        probes = Producer({"bootstrap.servers": kafka.address, "linger.ms": 0})
        client = FeatureClient(redis_service.address, [card_activity])
        rng = random.Random(3)
        try:
            for rate in [0, *args.rates]:  # rate 0: warm-up until the worker answers probes
                pending: dict[str, tuple[float, float]] = {}
                latencies: list[float] = []
                stop = threading.Event()
                lock = threading.Lock()

                def read(pending: dict[str, tuple[float, float]] = pending, latencies: list[float] = latencies,
                         stop: threading.Event = stop, lock: threading.Lock = lock) -> None:  # fmt: skip
                    while not stop.is_set():
                        with lock:
                            cards = list(pending)
                        if cards:
                            rows = client.get_features("card_activity", cards).to_dicts()
                            now = time.time()
                            for card, row in zip(cards, rows, strict=True):
                                appended, amount = pending[card]
                                if row.get("amount_last") == amount:
                                    latencies.append(now - appended)
                                    with lock:
                                        del pending[card]
                        time.sleep(0.002)

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                # The warm-up lasts until a probe is answered: a worker whose compiled kernel is not
                # cached yet compiles it first (~50-75 s), which must not fall into a measured run.
                seconds = WARM_UP_LIMIT_S if rate == 0 else args.freshness_seconds
                begin, sent, probe_no = time.perf_counter(), 0, 0
                while time.perf_counter() - begin < seconds:
                    if rate == 0 and latencies and (len(workers) == 1 or time.perf_counter() - begin >= 15):
                        break  # (several workers: 15 s at least, so every one has joined)
                    elapsed = time.perf_counter() - begin
                    now_iso = datetime.now(UTC).isoformat()
                    while sent < rate * elapsed:
                        card = f"card_{rng.randrange(args.keys):07d}"
                        event = {"card_id": card, "merchant_id": f"m_{rng.randrange(500):05d}",
                                 "amount": 10.0, "currency": "EUR", "country": "DE", "ts": now_iso}  # fmt: skip
                        load.produce(TOPIC, value=orjson.dumps(event), key=encode_key([card]).encode())
                        sent += 1
                    load.poll(0)
                    if elapsed * 10 >= probe_no:
                        probe_no += 1
                        card = f"probe_{probe_no % 50:03d}"
                        amount = round(1000 + probe_no * 0.01 + rate, 2)
                        event = {"card_id": card, "merchant_id": "m_00000", "amount": amount,
                                 "currency": "EUR", "country": "DE", "ts": datetime.now(UTC).isoformat()}  # fmt: skip
                        probes.produce(TOPIC, value=orjson.dumps(event), key=encode_key([card]).encode())
                        probes.flush(5)
                        with lock:
                            pending[card] = (time.time(), amount)
                    time.sleep(0.005)
                time.sleep(2)
                stop.set()
                reader.join()
                if rate == 0:
                    if not latencies:
                        print(f"no probe answered within the {WARM_UP_LIMIT_S:.0f} s warm-up", flush=True)
                        return
                    continue
                lost = len(pending)
                lat = sorted(latencies)
                p = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
                mode = f"{'adaptive' if adaptive else 'fixed 250 ms':<13} {fetch_wait or '500 (default)':<14}"
                print(
                    f"{mode} {rate:>8,} {sent / seconds:>10,.0f} {len(lat):>7} {p[49] * 1000:>8.0f} "
                    f"{p[98] * 1000:>8.0f} {lat[-1] * 1000 if lat else float('nan'):>8.0f} {lost:>8}",
                    flush=True,
                )
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(60)
            client.close()


def freshness(args: argparse.Namespace, tmp: Path) -> None:
    print(f"\n{'redis writes':<13} {'fetch.wait ms':<14} {'rate/s':>8} {'sent/s':>10} {'probes':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'unseen':>8}")  # fmt: skip
    # Tansu holds a fetch for up to fetch.wait.max.ms even when records are there (Kafka answers
    # as soon as fetch.min.bytes = 1 byte is available), so the default 500 ms dominates there.
    runs = {"fixed-500": (False, ""), "fixed-10": (False, "10"), "adaptive-10": (True, "10")}
    for name in args.freshness_modes.split(","):
        adaptive, fetch_wait = runs[name]
        freshness_run(args, tmp, adaptive, fetch_wait)


# ---------------------------------------------------------------- recovery


def recovery(args: argparse.Namespace, tmp: Path) -> None:
    keys, partitions = args.recovery_keys, 4
    with EmbeddedKafka(die_with_parent=True) as kafka, EmbeddedRedis(die_with_parent=True) as redis_service:
        create_topic(kafka.address, partitions)
        base = int(START.timestamp() * 1000)
        events = (
            {"card_id": f"card_{i % keys:07d}", "merchant_id": f"m_{i % 997:05d}", "amount": float(i % 300),
             "currency": "EUR", "country": "DE", "ts": datetime.fromtimestamp((base + i * 20) / 1000, UTC).isoformat()}
            for i in range(3 * keys)
        )  # fmt: skip
        n = produce(kafka.address, events)
        settings = Settings(
            kafka_bootstrap=kafka.address, redis_url=redis_service.address, kafka_dev_broker=True,
            data_dir=tmp / "recovery", group_id="recovery",
        )  # fmt: skip
        pipeline = Pipeline((card_activity,))
        started = time.perf_counter()
        worker = Worker(pipeline, settings, WorkerOptions(until_caught_up=True, serve_metrics=False))
        worker.run()
        print(
            f"\nrecovery: {n:,} payments over {keys:,} cards through a worker in {time.perf_counter() - started:.0f} s"
        )
        committed = {(TOPIC, p): worker.commit_log.offset(TOPIC, p) or 0 for p in range(partitions)}
        size = sum(f.stat().st_size for f in (settings.data_dir / "checkpoints").rglob("o*.json"))
        print(f"checkpoints: {size / 1e6:.1f} MB for {partitions} partitions")
        for label, drop in (("from the shutdown checkpoint", False), ("archive replay, no checkpoint", True)):
            if drop:
                shutil.rmtree(settings.data_dir / "checkpoints" / settings.group_id / TOPIC)
            fresh = Worker(pipeline, settings, WorkerOptions(serve_metrics=False))
            started, cpu = time.perf_counter(), time.process_time()
            for tp, offset in committed.items():
                fresh.recover(tp, offset)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            restored = fresh.engine.views["card_activity"].key_count()
            print(f"  {label:<32} {restored:>8,} keys  {wall:6.1f} s wall  {cpu:6.1f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rates", default="300,1000,2000", help="comma-separated events/s for freshness")
    parser.add_argument("--freshness-seconds", type=float, default=20.0)
    parser.add_argument(
        "--freshness-modes",
        default="fixed-500,fixed-10,adaptive-10",
        help="Redis writes fixed 250 ms or adaptive, and fetch.wait.max.ms (500 = default)",
    )
    parser.add_argument("--freshness-workers", type=int, default=1, help="workers in the group")
    parser.add_argument("--recovery-keys", type=int, default=100_000)
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument(
        "--bad-every", type=int, default=0, help="throughput: an undecodable record after every N payments"
    )
    parser.add_argument("--modes", default="", help="throughput runs to do, e.g. raw-10ms,raw-1000ms")
    parser.add_argument("--only", default="throughput,freshness,recovery")
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs per mode (medians printed)")
    parser.add_argument("--worker-options", default="{}", help="JSON WorkerOptions fields for streamfs runs")
    parser.add_argument(
        "--stages", action="store_true", help="throughput: each streamfs run's thread CPU per stage (STAGES)"
    )
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r]
    if args.stages:
        os.environ["STREAMFS_BENCH_STAGES"] = "1"  # (read by the streamfs children)
    parts = set(args.only.split(","))
    print(f"CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="streamfs-bench-") as tmp:
        if "throughput" in parts:
            throughput(args, Path(tmp))
        if "freshness" in parts:
            freshness(args, Path(tmp))
        if "recovery" in parts:
            recovery(args, Path(tmp))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
    else:
        main()
