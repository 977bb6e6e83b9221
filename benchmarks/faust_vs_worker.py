"""streamfs in Faust vs the streamfs worker vs plain Faust windowed tables, on one workload.

    .venv/bin/python benchmarks/faust_vs_worker.py [--events 100000] [--keys 10000] [--partitions 4]
                                                  [--hopping-events 10000] [--skip-kill]

Starts its own embedded broker (Tansu) and Redis, produces `--events` generated payments
(pipelines.payments, Zipf-popular cards) to a topic with `--partitions` partitions, then runs,
each in its own subprocess and consumer group, over the same records:

  worker        streamfs Worker (`run_worker`, until caught up), view pipelines.payments:card_activity
  faust         the same view in a Faust app (`python -m streamfs.integrations.faust`, batches of 5000)
  tumbling      plain Faust: count and sum per card in a 1 h tumbling table (`+=`), faust.Record values
  hopping       plain Faust: the same in a 1 h table hopping every 5 min (`--hopping-events` records)

and, unless --skip-kill, the worker and the Faust app again with a kill -9 half way and a
restart, checking that the feature log then equals the uninterrupted run's row for row.

Figures: wall time from process start until the group's committed offsets reach the end
(includes the ~3 s group join and up to one commit interval), events / wall time, and CPU per
event (user + system time of the process(es) / events) with its inverse, events per CPU-second:
the figure to compare on a shared machine, where wall time depends on the neighbours. Faust tables run with
store="memory://" and topic_partitions = the source's partitions.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.payments import generate
from streamfs.keys import encode_key
from streamfs.offline import scan_features
from streamfs.produce import produce_waiting
from streamfs.services import EmbeddedKafka, EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = "pipelines.payments:card_activity"
TOPIC = "payments"

TABLE_APP = '''
import sys
import faust

bootstrap, group, topic, partitions, mode = sys.argv[1:6]
app = faust.App(group, broker="kafka://" + bootstrap, topic_partitions=int(partitions), store="memory://",
                web_enabled=False, broker_session_timeout=6, datadir=sys.argv[6])


class Payment(faust.Record, serializer="json"):
    card_id: str
    merchant_id: str
    amount: float
    currency: str
    country: str
    ts: str


payments = app.topic(topic, value_type=Payment)
if mode == "tumbling":
    counts = app.Table("count_1h", default=int).tumbling(3600, expires=7200)
    sums = app.Table("amount_sum_1h", default=float).tumbling(3600, expires=7200)
else:
    counts = app.Table("count_1h", default=int).hopping(3600, 300, expires=7200)
    sums = app.Table("amount_sum_1h", default=float).hopping(3600, 300, expires=7200)


@app.agent(payments)
async def aggregate(stream):
    async for payment in stream:
        counts[payment.card_id] += 1
        sums[payment.card_id] += payment.amount


if __name__ == "__main__":
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()
'''


@dataclass
class Run:
    name: str
    events: int
    wall_s: float
    cpu_s: float
    note: str = ""

    def row(self) -> str:
        cpu_us = self.cpu_s / self.events * 1e6
        return (
            f"| {self.name:<16} | {self.events:>8,} | {self.wall_s:>7.1f} | {self.events / self.wall_s:>8,.0f} "
            f"| {cpu_us:>8.0f} | {1e6 / cpu_us:>8,.0f} | {self.note} |"
        )


def committed(bootstrap: str, group: str, partitions: int, topic: str = TOPIC) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in found)
    finally:
        consumer.close()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, args: argparse.Namespace, kafka: str, redis_url: str, work: Path) -> None:
        self.args = args
        self.kafka = kafka
        self.redis_url = redis_url
        self.work = work
        self.db = 0

    def env(self, name: str) -> dict[str, str]:
        self.db += 1
        base = self.redis_url.rsplit("/", 1)[0]
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "STREAMFS_KAFKA_BOOTSTRAP": self.kafka,
            "STREAMFS_REDIS_URL": f"{base}/{self.db}",
            "STREAMFS_KAFKA_DEV_BROKER": "1",
            "STREAMFS_DATA_DIR": str(self.work / name / "data"),
            "STREAMFS_STATE_DIR": str(self.work / name / "state"),
            "STREAMFS_GROUP_ID": f"bench-{name}",
        }

    def command(self, kind: str, name: str) -> list[str]:
        if kind == "worker":
            code = (
                "from streamfs.runner import run_worker, WorkerOptions; "
                f"run_worker({PIPELINE!r}, options=WorkerOptions(until_caught_up=True, serve_metrics=False))"
            )
            return [sys.executable, "-c", code]
        if kind == "faust":
            return [sys.executable, "-m", "streamfs.integrations.faust", PIPELINE, "--batch-size", "5000"]
        script = self.work / "table_app.py"
        script.write_text(TABLE_APP)
        (self.work / name).mkdir(parents=True, exist_ok=True)
        return [sys.executable, str(script), self.kafka, f"bench-{name}", self.topic_for(kind),
                str(self.args.partitions), kind, str(self.work / name / "faust-data")]

    def topic_for(self, kind: str) -> str:
        return "payments.hopping" if kind == "hopping" else TOPIC

    def run(self, kind: str, name: str, total: int, *, kill_at: float | None = None) -> Run:
        """Run `kind` until its group committed `total` offsets; optionally kill -9 at a fraction, restart."""
        env = self.env(name)
        Path(env["STREAMFS_STATE_DIR"]).mkdir(parents=True, exist_ok=True)
        group = env["STREAMFS_GROUP_ID"]
        topic = self.topic_for(kind)
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - closed below
        cpu0 = children_cpu()
        started = time.monotonic()
        process = subprocess.Popen(self.command(kind, name), env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=env["STREAMFS_STATE_DIR"])
        killed = False
        note = ""
        while True:
            done = committed(self.kafka, group, self.args.partitions, topic)
            if done >= total:
                break
            if kill_at is not None and not killed and done >= kill_at * total:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed = True
                note = f"kill -9 at {done:,} committed, restarted"
                process = subprocess.Popen(self.command(kind, name), env=env, stdout=log,
                                           stderr=subprocess.STDOUT, cwd=env["STREAMFS_STATE_DIR"])
            if process.poll() is not None and process.returncode != 0:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.work / name}.log")
            time.sleep(0.1)
        wall = time.monotonic() - started
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(60)
        log.close()
        cpu = children_cpu() - cpu0
        return Run(name, total, wall, cpu, note)


def produce(kafka: str, topic: str, n: int, keys: int, partitions: int) -> int:
    admin = AdminClient({"bootstrap.servers": kafka})
    config = {"retention.ms": "-1", "retention.bytes": "-1"}
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)])[
        topic
    ].result(15)
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 20})
    start = datetime(2024, 3, 1, tzinfo=UTC)
    count = 0
    for event in generate(n, keys=keys, start=start, seed=11, late_fraction=0.01):
        key = encode_key([event["card_id"]]).encode()  # keyed like EventProducer: by the entity
        produce_waiting(producer, topic, value=orjson.dumps(event), key=key)
        count += 1
    producer.flush(60)
    return count


def feature_rows(work: Path, name: str) -> list[dict[str, object]]:
    table = scan_features(work / name / "data", "card_activity")
    return sorted(table.to_pylist(), key=lambda row: (row["partition"], row["offset"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--hopping-events", type=int, default=10_000)
    parser.add_argument("--skip-kill", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faust-bench-") as temp, EmbeddedKafka() as kafka, \
            EmbeddedRedis() as redis_service:
        work = Path(temp)
        n = produce(kafka.address, TOPIC, args.events, args.keys, args.partitions)
        hop_n = produce(kafka.address, "payments.hopping", args.hopping_events, args.keys, args.partitions)
        print(f"{n:,} events ({args.keys:,} cards, {args.partitions} partitions); "
              f"hopping baseline on {hop_n:,}", flush=True)
        bench = Bench(args, kafka.address, redis_service.address, work)
        runs = []
        for kind, name, total in (
            ("worker", "worker", n),
            ("faust", "faust", n),
            ("tumbling", "tumbling", n),
            ("hopping", "hopping", hop_n),
        ):
            runs.append(bench.run(kind, name, total))
            print(runs[-1].row(), flush=True)
        if not args.skip_kill:
            for kind in ("worker", "faust"):
                run = bench.run(kind, f"{kind}-kill9", n, kill_at=0.5)
                same = feature_rows(work, f"{kind}-kill9") == feature_rows(work, kind)
                run.note += "; feature log == uninterrupted run" if same else "; FEATURE LOG DIFFERS"
                runs.append(run)
                print(runs[-1].row(), flush=True)
        print()
        print("| run | events | wall s | events/s | CPU µs/event | events per CPU-s | notes |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for run in runs:
            print(run.row())
        print("\nworker/faust = pipelines.payments:card_activity (13 features, 4 windows, sliding hops);")
        print("tumbling/hopping = plain Faust count + sum per card in one 1 h window.")


if __name__ == "__main__":
    main()
