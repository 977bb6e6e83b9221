"""Web clickstream: per-user engagement and per-product popularity, with row-level transforms.

Shows the two kinds of transform a view can apply to each validated event before aggregating
it (a transform is ``Callable[[dict], dict | None]``):

* deriving fields: :func:`with_action_flags` adds 0/1 columns so one view can count views,
  cart adds and purchases side by side with plain ``sum`` aggregates (``transform_fields``
  declares their type, which the schema cannot);
* filtering: :func:`purchases_only` returns None for everything but purchases, so the
  ``product_sales`` view aggregates revenue without a ``price is None`` case.

Transforms must not change the dict they are given (other views read the same event): they
return a new one.

    streamfs run pipelines.clickstream
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from pipelines._generate import ZipfKeys, displace_late, iso, ticks
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource

Action = Literal["view", "add_to_cart", "purchase"]


class Click(BaseModel):
    """One storefront interaction; ``price`` is set for cart adds and purchases."""

    user_id: str
    product_id: str
    action: Action
    price: float | None = None
    session_id: str
    ts: datetime


user = Entity("user", join_keys=["user_id"], description="A signed-in shopper.")
product = Entity("product", join_keys=["product_id"], description="A catalogue item (SKU).")

clicks = KafkaSource(
    "clicks",
    topic="clicks",
    schema=Click,
    timestamp_field="ts",
    allowed_lateness="2m",
    description="Storefront interactions from the web and app trackers.",
)

clicks_by_product = KafkaSource(
    "clicks_by_product",
    topic="clicks.by_product",
    schema=Click,
    timestamp_field="ts",
    allowed_lateness="2m",
    description=(
        "The same interactions keyed by product (one topic per entity key; see docs/architecture.md)."
    ),
)


def with_action_flags(event: dict[str, Any]) -> dict[str, Any]:
    """Add ``is_view``, ``is_cart_add`` and ``is_purchase`` (0 or 1) to the event."""
    action = event["action"]
    return {
        **event,
        "is_view": int(action == "view"),
        "is_cart_add": int(action == "add_to_cart"),
        "is_purchase": int(action == "purchase"),
    }


ACTION_FLAGS = {"is_view": int, "is_cart_add": int, "is_purchase": int}
"""The fields with_action_flags adds, with their types (FeatureView.transform_fields)."""


def purchases_only(event: dict[str, Any]) -> dict[str, Any] | None:
    """Keep purchases that carry a price; filter out everything else."""
    if event["action"] != "purchase" or event["price"] is None:
        return None
    return event


user_engagement = FeatureView(
    "user_engagement",
    entity=user,
    source=clicks,
    transform=with_action_flags,
    transform_fields=ACTION_FLAGS,
    features=[
        Aggregate(None, "count", window="10m", hop="1m"),
        Aggregate(None, "count", window="1h", hop="5m"),
        Aggregate(None, "count", window="24h", hop="1h"),
        Aggregate("is_cart_add", "sum", window="1h", hop="5m", name="cart_adds_1h"),
        Aggregate("is_purchase", "sum", window="24h", hop="1h", name="purchases_24h"),
        Aggregate("is_purchase", "sum", window="30d", hop="1d", name="purchases_30d"),
        Aggregate("product_id", "count_distinct", window="1h", hop="5m"),
        Aggregate("session_id", "count_distinct", window="7d", hop="1d"),
        Aggregate("product_id", "last", name="last_product_id"),
        Aggregate("action", "last", name="last_action"),
    ],
    ttl="30d",
    owner="recs@example.com",
    description="How active a shopper is right now and how often they buy.",
    tags={"team": "recommendations"},
)

product_popularity = FeatureView(
    "product_popularity",
    entity=product,
    source=clicks_by_product,
    transform=with_action_flags,
    transform_fields=ACTION_FLAGS,
    features=[
        Aggregate("is_view", "sum", window="1h", hop="5m", name="views_1h"),
        Aggregate("is_view", "sum", window="24h", hop="1h", name="views_24h"),
        Aggregate("is_cart_add", "sum", window="24h", hop="1h", name="cart_adds_24h"),
        Aggregate("is_purchase", "sum", window="24h", hop="1h", name="purchases_24h"),
        Aggregate("is_purchase", "mean", window="24h", hop="1h", name="conversion_24h"),
        Aggregate("user_id", "count_distinct", window="24h", hop="1h"),
    ],
    ttl="7d",
    owner="recs@example.com",
    description="Trending products: views, cart adds, purchases and conversion.",
    tags={"team": "recommendations"},
)

product_sales = FeatureView(
    "product_sales",
    entity=product,
    source=clicks_by_product,
    transform=purchases_only,
    features=[
        Aggregate(None, "count", window="24h", hop="1h", name="sales_24h"),
        Aggregate("price", "sum", window="24h", hop="1h", name="revenue_24h"),
        Aggregate("price", "sum", window="7d", hop="1d", name="revenue_7d"),
        Aggregate("price", "mean", window="7d", hop="1d", name="avg_price_7d"),
        Aggregate("price", "last", name="last_price"),
    ],
    ttl="30d",
    owner="recs@example.com",
    description="Revenue per product, from purchases only.",
    tags={"team": "recommendations"},
)

_SESSION_GAP_MS = 30 * 60_000


def generate(
    n: int,
    *,
    keys: int,
    start: datetime,
    seed: int,
    late_fraction: float = 0.0,
    products: int | None = None,
    events_per_second: float = 100.0,
) -> Iterator[dict[str, Any]]:
    """``n`` clicks by ``keys`` users (Zipf-popular) over a Zipf-ish catalogue, from ``start``.

    Most clicks are views; some add to cart; a few purchase (at the product's fixed price).
    A burst is a browsing spree: one user, many clicks seconds apart. A user's session changes
    after 30 minutes of inactivity. Same arguments, same events.
    """
    rng = random.Random(seed)
    catalogue = ZipfKeys(products if products is not None else max(20, keys // 5), exponent=0.9)
    sessions: dict[int, tuple[int, int]] = {}  # user -> (session number, last click ms)
    stream = ticks(
        n,
        keys=keys,
        start=start,
        rng=rng,
        events_per_second=events_per_second,
        burst_probability=0.02,
        burst_gap_ms=(500, 15_000),
    )
    for tick in displace_late(
        stream, rng=rng, late_fraction=late_fraction, max_lateness_ms=clicks.allowed_lateness
    ):
        number, last = sessions.get(tick.key, (0, tick.time_ms))
        if tick.time_ms - last > _SESSION_GAP_MS:
            number += 1
        sessions[tick.key] = (number, max(last, tick.time_ms))
        item = catalogue.draw(rng)
        roll = rng.random()
        action: Action = "purchase" if roll < 0.03 else "add_to_cart" if roll < 0.15 else "view"
        yield {
            "user_id": f"u_{tick.key:07d}",
            "product_id": f"p_{item:06d}",
            "action": action,
            "price": None if action == "view" else _price(seed, item),
            "session_id": f"s_{tick.key:07d}_{number:04d}",
            "ts": iso(tick.time_ms),
        }


def _price(seed: int, product_index: int) -> float:
    """A product's price, fixed per product and seed."""
    return round(random.Random(seed * 1_000_003 + product_index).lognormvariate(3.0, 0.9), 2)
