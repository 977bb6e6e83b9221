"""Card payments: per-card and per-merchant activity, the classic fraud-detection features.

A card paying far more often, far more, or at many more merchants than usual in the last
minutes is the strongest real-time fraud signal; the same windows over a merchant catch a
compromised terminal. Windows hop so that "the last 10 minutes" is at most 5 minutes stale.

    streamfs run pipelines.payments
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from pipelines._generate import ZipfKeys, displace_late, iso, ticks
from streamfs.definitions import Aggregate, AggregationName, Entity, FeatureView, KafkaSource


class Payment(BaseModel):
    """One card payment as the payment gateway publishes it."""

    card_id: str
    merchant_id: str
    amount: float
    currency: str
    country: str
    ts: datetime


card = Entity("card", join_keys=["card_id"], description="A payment card (PAN token).")
merchant = Entity("merchant", join_keys=["merchant_id"], description="An acquiring merchant.")

payments = KafkaSource(
    "payments",
    topic="payments",
    schema=Payment,
    timestamp_field="ts",
    allowed_lateness="5m",
    description="Authorised card payments from the gateway.",
)

payments_by_merchant = KafkaSource(
    "payments_by_merchant",
    topic="payments.by_merchant",
    schema=Payment,
    timestamp_field="ts",
    allowed_lateness="5m",
    description=(
        "The same payments keyed by merchant: Kafka orders and partitions a topic by one key, so "
        "per-merchant state needs a merchant-keyed topic (the gateway publishes to both)."
    ),
)

_CARD_WINDOWS = (("10m", "5m"), ("1h", "5m"), ("24h", "1h"))
_CARD_STATS: tuple[tuple[str | None, AggregationName], ...] = (
    (None, "count"),
    ("amount", "sum"),
    ("amount", "mean"),
    ("amount", "max"),
)

card_activity = FeatureView(
    "card_activity",
    entity=card,
    source=payments,
    features=[
        *(
            Aggregate(field, function, window=window, hop=hop)
            for window, hop in _CARD_WINDOWS
            for field, function in _CARD_STATS
        ),
        Aggregate("merchant_id", "count_distinct", window="24h", hop="1h"),
        Aggregate("merchant_id", "count_distinct", window="7d", hop="1d"),
        Aggregate("amount", "last"),
    ],
    ttl="30d",
    owner="fraud-ml@example.com",
    description="How much, how often and where a card has paid recently.",
    tags={"team": "fraud", "pii": "false"},
)

merchant_activity = FeatureView(
    "merchant_activity",
    entity=merchant,
    source=payments_by_merchant,
    features=[
        Aggregate(None, "count", window="1h", hop="5m"),
        Aggregate(None, "count", window="24h", hop="1h"),
        Aggregate("amount", "sum", window="1h", hop="5m"),
        Aggregate("amount", "sum", window="24h", hop="1h"),
        Aggregate("amount", "mean", window="1h", hop="5m"),
        Aggregate("amount", "mean", window="24h", hop="1h"),
        Aggregate("card_id", "count_distinct", window="24h", hop="1h"),
        Aggregate("amount", "stddev", window="24h", hop="1h"),
    ],
    ttl="30d",
    owner="fraud-ml@example.com",
    description="Volume, ticket size and card diversity at a merchant.",
    tags={"team": "fraud"},
)

_COUNTRIES = (("DE", "EUR"), ("FR", "EUR"), ("NL", "EUR"), ("GB", "GBP"), ("US", "USD"), ("PL", "PLN"))


def generate(
    n: int,
    *,
    keys: int,
    start: datetime,
    seed: int,
    late_fraction: float = 0.0,
    merchants: int | None = None,
    events_per_second: float = 50.0,
) -> Iterator[dict[str, Any]]:
    """``n`` payments over ``keys`` cards (Zipf-popular), starting at ``start`` (aware, UTC).

    Cards mostly pay in their home country with log-normal amounts; a burst is a card-testing
    run: one card, many small payments at different merchants within minutes. ``late_fraction``
    of events are moved back in time within the source's allowed lateness. Same arguments,
    same events.
    """
    rng = random.Random(seed)
    shops = ZipfKeys(merchants if merchants is not None else max(10, keys // 20))
    stream = ticks(n, keys=keys, start=start, rng=rng, events_per_second=events_per_second, key_exponent=0.8)
    for tick in displace_late(
        stream, rng=rng, late_fraction=late_fraction, max_lateness_ms=payments.allowed_lateness
    ):
        home_country, home_currency = _COUNTRIES[_home(seed, tick.key)]
        if tick.in_burst:
            amount = round(rng.uniform(0.5, 5.0), 2)
            shop = rng.randrange(shops.size)
        else:
            amount = round(min(rng.lognormvariate(3.3, 1.1), 25_000.0), 2)
            shop = shops.draw(rng)
        abroad = rng.random() < 0.05
        country, currency = rng.choice(_COUNTRIES) if abroad else (home_country, home_currency)
        yield {
            "card_id": f"card_{tick.key:07d}",
            "merchant_id": f"m_{shop:05d}",
            "amount": amount,
            "currency": currency,
            "country": country,
            "ts": iso(tick.time_ms),
        }


def _home(seed: int, card_index: int) -> int:
    """A card's home country, fixed per card and seed without keeping a table of all cards."""
    return random.Random(seed * 1_000_003 + card_index).randrange(len(_COUNTRIES))
