"""Online read latency and throughput: FeatureClient.get_features against raw pipelined HMGET.

Starts its own redis-server on a free loopback port, runs 10,000 entities of a 10-feature view
(3 windows: 1h every 5m, 24h every 1h, 7d every 1d) through a real ViewEngine, writes them
with OnlineWriter, and also stores, per entity, a hash of the 10 values precomputed at write
time: the baseline a hand-written service would read (pipelined HMGET of 10 fields, no
decoding). Both are read for the same random 100 entities, interleaved, many times; prints
p50/p99 and their ratio, then entities/s for 1,000-entity calls.

Usage: python benchmarks/online.py [--entities 10000] [--repeat 2000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable

import redis
from pydantic import BaseModel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.online import FeatureClient, OnlineWriter
from streamfs.records import Position, SourceEvent
from streamfs.services import EmbeddedRedis

HOUR = 3_600_000
DAY = 24 * HOUR


class Payment(BaseModel):
    card_id: str
    merchant_id: str
    amount: float
    ts: int


def build_view() -> FeatureView:
    source = KafkaSource("payments", topic="payments", schema=Payment, timestamp_field="ts")
    features = [
        Aggregate("amount", "count", window="1h", hop="5m"),
        Aggregate("amount", "sum", window="1h", hop="5m"),
        Aggregate("amount", "max", window="1h", hop="5m"),
        Aggregate("amount", "count", window="24h", hop="1h"),
        Aggregate("amount", "sum", window="24h", hop="1h"),
        Aggregate("amount", "mean", window="24h", hop="1h"),
        Aggregate("merchant_id", "count_distinct", window="24h", hop="1h"),
        Aggregate("amount", "count", window="7d", hop="1d"),
        Aggregate("amount", "sum", window="7d", hop="1d"),
        Aggregate("amount", "mean", window="7d", hop="1d"),
    ]
    card = Entity("card", join_keys=["card_id"])
    return FeatureView("card_activity", entity=card, source=source, features=features, ttl="30d")


def make_events(entities: int, per_entity: int, now: int, seed: int = 7) -> list[SourceEvent]:
    """Per card: a week of history, denser towards now (a quarter of events in the last day)."""
    rng = random.Random(seed)
    events = []
    for card in range(entities):
        for _ in range(per_entity):
            age = (
                int(rng.expovariate(1 / (2 * DAY))) % (7 * DAY) if rng.random() < 0.75 else rng.randrange(DAY)
            )
            fields = {"card_id": f"c{card}", "merchant_id": f"m{rng.randrange(500)}",
                      "amount": round(rng.uniform(1, 500), 2), "ts": now - age}  # fmt: skip
            events.append(fields)
    events.sort(key=lambda f: f["ts"])
    return [SourceEvent(f, f["ts"], f["ts"], Position("payments", 0, i)) for i, f in enumerate(events)]


def populate(client: redis.Redis, view: FeatureView, entities: int, per_entity: int) -> ViewEngine:
    now = time.time_ns() // 1_000_000
    engine = ViewEngine(view)
    engine.process(make_events(entities, per_entity, now))
    writer = OnlineWriter(client, [engine])
    t0 = time.perf_counter()
    written = writer.write(engine, engine.take_dirty())
    elapsed = time.perf_counter() - t0
    print(f"  wrote {written:,} entries in {elapsed:.2f} s ({written / elapsed:,.0f} entries/s, "
          f"serving_state + encode + SET)")  # fmt: skip
    pipe = client.pipeline(transaction=False)
    for key in engine.keys(None):
        values = engine.serve(key, now)
        assert values is not None
        pipe.hset(f"baseline:{{card:{key[0]}}}", mapping={k: str(v) for k, v in values.items()})
    pipe.execute()
    return engine


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--events-per-entity", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    view = build_view()
    with EmbeddedRedis(die_with_parent=True) as server:
        client = redis.Redis.from_url(server.address)
        print(f"online benchmark: {args.entities:,} entities, {len(view.features)} features, 3 windows, "
              f"redis-server {client.info()['redis_version']} on {server.address}")  # fmt: skip
        populate(client, view, args.entities, args.events_per_entity)
        sizes = [client.strlen(f"sfs:{{card:c{i}}}:card_activity") for i in range(0, args.entities, 97)]
        print(f"  entry size: median {statistics.median(sizes):.0f} B, max {max(sizes)} B")

        features = FeatureClient(client, [view])
        fields = view.feature_names
        rng = random.Random(11)

        def baseline(ids: list[str]) -> list[object]:
            pipe = client.pipeline(transaction=False)
            for card in ids:
                pipe.hmget(f"baseline:{{card:{card}}}", fields)
            return pipe.execute()

        def ours(ids: list[str]) -> object:
            return features.get_features("card_activity", ids)

        def raw_entries(ids: list[str]) -> object:
            return client.mget([f"sfs:{{card:{card}}}:card_activity" for card in ids])

        for label, batch, repeat in (
            ("latency", args.batch, args.repeat),
            ("throughput", 1_000, args.repeat // 10),
        ):
            base_samples: list[float] = []
            our_samples: list[float] = []
            mget_samples: list[float] = []
            for _ in range(3):  # warm up connections and the read plan
                ids = [f"c{rng.randrange(args.entities)}" for _ in range(batch)]
                baseline(ids)
                ours(ids)
            for _ in range(repeat):
                ids = [f"c{rng.randrange(args.entities)}" for _ in range(batch)]
                base_samples += timed(lambda ids=ids: baseline(ids), 1)  # type: ignore[misc]
                our_samples += timed(lambda ids=ids: ours(ids), 1)  # type: ignore[misc]
                mget_samples += timed(lambda ids=ids: raw_entries(ids), 1)  # type: ignore[misc]
            b50, o50 = statistics.median(base_samples), statistics.median(our_samples)
            print(f"\n{label}: {batch} entities per call, {repeat} calls each, interleaved")
            print(f"  raw HMGET pipeline   p50 {b50:6.3f} ms  p99 {pct(base_samples, 0.99):6.3f} ms  "
                  f"{batch / b50 * 1000:>10,.0f} entities/s")  # fmt: skip
            print(f"  get_features         p50 {o50:6.3f} ms  p99 {pct(our_samples, 0.99):6.3f} ms  "
                  f"{batch / o50 * 1000:>10,.0f} entities/s")  # fmt: skip
            m50 = statistics.median(mget_samples)
            print(
                f"  (MGET of the entries, no decode: p50 {m50:.3f} ms, so decoding costs {o50 - m50:.3f} ms)"
            )
            print(
                f"  ratio p50 {o50 / b50:.2f}x, p99 {pct(our_samples, 0.99) / pct(base_samples, 0.99):.2f}x"
            )
        print("\ntargets: p50 <= 2x baseline for 100 entities; >= 80,000 entities/s for 1,000-entity calls")

        if args.profile:
            ids = [f"c{rng.randrange(args.entities)}" for _ in range(1_000)]
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(200):
                ours(ids)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        client.close()


if __name__ == "__main__":
    main()
