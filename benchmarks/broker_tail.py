"""The broker's own delivery latency: a bare consumer tailing a topic produced at a steady rate.

The freshness benchmark (benchmarks/worker.py --only freshness) times appended → readable through
the client, through a streamfs worker. This is its floor: the same topic (4 partitions) and
producer settings, and a bare confluent-kafka consumer with the worker's consumer defaults that
does nothing but note, for every record, now - the record's timestamp (the producer's create
time, so a producer queue backing up counts too). Printed per 10 s window: records, p50, p99.

    python benchmarks/broker_tail.py [--rate 20000] [--seconds 90]

On the embedded broker (Tansu, in-memory storage) the latency grows with the run: see
docs/benchmarks.md (freshness), where a steady 20,000 events/s went from p50 38 ms in the
first 10 s to seconds after ~50 s with no streamfs in the path.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import orjson
from confluent_kafka import Consumer, Producer

from streamfs.services import EmbeddedKafka
from streamfs.settings import DEV_BROKER_CONSUMER, FETCH_QUEUE_BACKOFF_MS

WINDOW_S = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=20_000, help="events/s produced")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    from worker import TOPIC, create_topic  # the freshness benchmark's topic and its configs

    with EmbeddedKafka(die_with_parent=True) as kafka:
        create_topic(kafka.address, args.partitions)
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.address,
                "group.id": "broker-tail",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
                **DEV_BROKER_CONSUMER,
            }
        )
        consumer.subscribe([TOPIC])
        while not consumer.assignment():
            consumer.poll(0.2)
        stop = threading.Event()
        seen: list[tuple[float, float]] = []  # (consumed at, latency s)

        def tail() -> None:
            while not stop.is_set():
                for message in consumer.consume(5_000, 0.05):
                    if message.error() is None:
                        now = time.time()
                        seen.append((now, now - message.timestamp()[1] / 1000))

        reader = threading.Thread(target=tail)
        reader.start()
        producer = Producer({"bootstrap.servers": kafka.address, "linger.ms": 5})
        value = orjson.dumps(
            {"card_id": "card_0000001", "merchant_id": "m_00001", "amount": 10.0,
             "currency": "EUR", "country": "DE", "ts": "2026-12-07T00:00:00+00:00"}
        )  # fmt: skip
        begin, sent = time.perf_counter(), 0
        while time.perf_counter() - begin < args.seconds:
            while sent < args.rate * (time.perf_counter() - begin):
                producer.produce(TOPIC, value=value, key=str(sent % 10_000).encode())
                sent += 1
            producer.poll(0)
            time.sleep(0.005)
        producer.flush(30)
        time.sleep(3)
        stop.set()
        reader.join()
        consumer.close()
    print(f"bare consumer tailing {TOPIC} ({args.partitions} partitions) at {args.rate:,} events/s, {sent:,} sent")
    if not seen:
        print("nothing consumed")
        return
    start = seen[0][0]
    print(f"{'window':>8} {'records':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for window in range(0, int(args.seconds) + WINDOW_S, WINDOW_S):
        latencies = sorted(lat for at, lat in seen if window <= at - start < window + WINDOW_S)
        if latencies:
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[int(len(latencies) * 0.99)] * 1000
            print(f"{window:>6} s {len(latencies):>9,} {p50:>9.1f} {p99:>9.1f}")


if __name__ == "__main__":
    main()
