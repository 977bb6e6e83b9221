"""`make demo`: generate payments, run the worker until caught up, read features back.

Runs against the services `streamfs dev up` started (or STREAMFS_* settings): creates the
payments topics, produces a seeded stream keyed per entity, runs one worker with
--until-caught-up, then prints features served from Redis and rows from the Parquet log.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipelines import payments
from streamfs.offline import scan_features
from streamfs.online import FeatureClient
from streamfs.produce import EventProducer
from streamfs.registry import load_pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings

EVENTS = 10_000
CARDS = 500


def main() -> int:
    settings = Settings.load()
    pipeline = load_pipeline("pipelines.payments")
    admin = AdminClient({"bootstrap.servers": settings.require_kafka()})
    existing = admin.list_topics(timeout=10).topics
    new = [
        NewTopic(
            t, num_partitions=3, replication_factor=-1, config={"retention.ms": "-1", "retention.bytes": "-1"}
        )
        for t in pipeline.topics
        if t not in existing
    ]
    for future in admin.create_topics(new).values() if new else ():
        future.result(timeout=15)

    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    print(f"producing {EVENTS:,} payments of {CARDS} cards to {', '.join(pipeline.topics)} ...")
    producer = EventProducer(pipeline, settings.producer_config())
    events = list(payments.generate(EVENTS, keys=CARDS, start=start, seed=42, late_fraction=0.01))
    producer.send_all(events)
    producer.flush()

    print("running the worker until it has caught up ...")
    began = time.perf_counter()
    Worker(pipeline, settings, WorkerOptions(until_caught_up=True, serve_metrics=False)).run()
    print(f"worker done in {time.perf_counter() - began:.1f} s")

    newest = max(datetime.fromisoformat(e["ts"]) for e in events)
    cards = sorted({e["card_id"] for e in events[-50:]})[:5]
    client = FeatureClient(
        settings.require_redis(), list(pipeline.views), namespace=settings.online_namespace
    )
    refs = [
        "card_activity:count_10m",
        "card_activity:amount_sum_1h",
        "card_activity:count_24h",
        "card_activity:merchant_id_count_distinct_24h",
        "card_activity:amount_last",
    ]
    print(f"\nonline features at {newest.isoformat()} (read from Redis through FeatureClient):")
    result = client.get_features(refs, cards, as_of=newest)
    print(f"{'card':<14}" + "".join(f"{r.split(':')[1]:>32}" for r in refs))
    for card, row in zip(cards, result.to_dicts(), strict=True):
        print(f"{card:<14}" + "".join(f"{_shown(row[r.split(':')[1]]):>32}" for r in refs))
    later = client.get_features(
        refs, cards[:1], as_of=int(newest.timestamp() * 1000) + 2 * 3_600_000
    ).to_dicts()[0]
    print(f"\nthe same {cards[0]} two hours later (windows decay with no new event): {later}")

    table = scan_features(settings.data_dir, pipeline.view("card_activity"))
    print(f"\noffline feature log: {table.num_rows:,} rows under {settings.data_dir / 'features'}; a few:")
    sample = table.select(["card_id", "event_time", "count_10m", "amount_sum_1h", "amount_last"]).slice(0, 5)
    for row in sample.to_pylist():
        print("  ", row)
    return 0


def _shown(value: object) -> str:
    """A value for the table: floats to 10 significant digits (an exact sum of binary amounts is
    often one ulp from the decimal a reader expects, e.g. 15827.880000000001)."""
    if not isinstance(value, float):
        return str(value)
    text = format(value, ".10g")
    return text if any(c in text for c in ".enia") else text + ".0"  # 12.0, not 12


if __name__ == "__main__":
    sys.exit(main())
