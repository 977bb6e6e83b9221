"""A small pipeline for worker tests; its topic comes from the environment so tests stay isolated.

Imported by the tests and, as `worker_pipeline`, by worker subprocesses (PYTHONPATH=tests/integration).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource


class Txn(BaseModel):
    account: str
    shop: str
    amount: float
    ts: datetime  # plain, so batches take the worker's columnar path (decode_batch)


TOPIC = os.environ.get("WORKER_TEST_TOPIC", "worker-test")

account = Entity("account", join_keys=["account"])
txns = KafkaSource(
    "txns", topic=TOPIC, schema=Txn, timestamp_field="ts", allowed_lateness="1m", max_message_bytes=10_000
)


def with_cents(event: dict[str, Any]) -> dict[str, Any]:
    """A derived field (its type declared in transform_fields), so worker tests cover transforms."""
    return {**event, "amount_cents": round(event["amount"] * 100)}


account_activity = FeatureView(
    "account_activity",
    entity=account,
    source=txns,
    transform=with_cents,
    transform_fields={"amount_cents": int},
    features=[
        Aggregate(None, "count", window="10m", hop="1m"),
        Aggregate("amount", "sum", window="1h", hop="5m"),
        Aggregate("amount", "mean", window="1h", hop="5m"),
        Aggregate("amount", "max", window="1d", hop="1h"),
        Aggregate("shop", "count_distinct", window="1d", hop="1h"),
        Aggregate("amount", "last"),
        Aggregate("ts", "max", window="1h", hop="5m"),  # a datetime value: in tiles, buffers, checkpoints
        Aggregate("amount_cents", "max", window="1h", hop="5m"),  # an int from the transform
    ],
    ttl="7d",
)

account_totals = FeatureView(
    "account_totals",
    entity=account,
    source=txns,
    features=[  # no transform and kernel functions only: the worker's columnar path end to end
        Aggregate(None, "count", window="10m", hop="1m"),
        Aggregate("amount", "sum", window="1h", hop="5m"),
        Aggregate("amount", "mean", window="1h", hop="5m"),
        Aggregate("amount", "min", window="1d", hop="1h"),
        Aggregate("amount", "max", window="1h"),
        Aggregate("shop", "count_distinct", window="1d", hop="1h"),
        Aggregate("amount", "last"),
        Aggregate("shop", "last", window="1h", hop="5m"),
        Aggregate("shop", "first"),
    ],
    ttl="7d",
)

VIEWS = (account_activity, account_totals)
"""Every view of the test pipeline: one on the Python engine, one on the kernel's columnar path."""


def generate(
    n: int, *, accounts: int = 50, seed: int = 1, start_ms: int = 1_767_225_600_000
) -> Iterator[dict[str, Any]]:
    """Events 0-3 s apart, some up to 90 s out of order (so a few are too late for the 1 min lateness)."""
    rng = random.Random(seed)
    t = start_ms
    for _ in range(n):
        t += rng.randrange(0, 3_000)
        jitter = rng.randrange(0, 90_000) if rng.random() < 0.05 else 0
        yield {
            "account": f"a{rng.randrange(accounts):03d}",
            "shop": f"s{rng.randrange(20)}",
            "amount": round(rng.uniform(1, 200), 2),
            # sub-millisecond digits (not from rng, which would change the stream): event time is in ms,
            # the ts_max_1h feature keeps them
            "ts": (
                datetime.fromtimestamp((t - jitter) / 1000, tz=UTC) + timedelta(microseconds=t * 7919 % 1000)
            ).isoformat(),
        }
