"""The example pipelines load, and their generators are deterministic, realistic and decodable."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import orjson
import pytest

from pipelines import _generate, clickstream, payments
from streamfs.decode import Decoder
from streamfs.records import SourceEvent
from streamfs.registry import load_pipeline

START = datetime(2024, 5, 1, tzinfo=UTC)
MODULES = [payments, clickstream]


@pytest.mark.parametrize(
    ("spec", "views"),
    [
        ("pipelines.payments", ("card_activity", "merchant_activity")),
        ("pipelines.clickstream", ("user_engagement", "product_popularity", "product_sales")),
    ],
)
def test_example_pipelines_load(spec: str, views: tuple[str, ...]) -> None:
    pipeline = load_pipeline(spec)
    assert pipeline.view_names == views
    for view in pipeline.views:
        assert 1 <= len(view.features) <= 15
        assert view.owner and view.description and view.ttl


def test_card_activity_features() -> None:
    view = payments.card_activity
    assert view.feature_names[:4] == ["count_10m", "amount_sum_10m", "amount_mean_10m", "amount_max_10m"]
    assert {"merchant_id_count_distinct_24h", "merchant_id_count_distinct_7d", "amount_last"} <= set(
        view.feature_names
    )
    assert view.feature("count_10m").hop == 300_000
    assert view.ttl == 30 * 86_400_000
    assert payments.payments.allowed_lateness == 300_000


@pytest.mark.parametrize("module", MODULES)
def test_generators_are_deterministic_by_seed(module: ModuleType) -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        return list(module.generate(500, keys=50, start=START, seed=seed, late_fraction=0.05))

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize("module", MODULES)
def test_to_bytes_is_the_json_of_generate(module: ModuleType) -> None:
    options: dict[str, Any] = {"keys": 20, "start": START, "seed": 3}
    encoded = list(_generate.to_bytes(module.generate(50, **options)))
    assert encoded == [orjson.dumps(event) for event in module.generate(50, **options)]


@pytest.mark.parametrize("module", MODULES)
def test_generated_events_decode(module: ModuleType) -> None:
    pipeline = load_pipeline(module.__name__)
    source = pipeline.sources[0]
    decoder = Decoder(source)
    values = list(
        _generate.to_bytes(module.generate(2_000, keys=100, start=START, seed=11, late_fraction=0.05))
    )
    results = decoder.decode_batch(values, arrival_time=0)
    assert [result for result in results if not isinstance(result, SourceEvent)] == []
    first = results[0]
    assert isinstance(first, SourceEvent)
    assert first.event_time >= int(START.timestamp() * 1000) - source.allowed_lateness


@pytest.mark.parametrize("module", MODULES)
def test_in_order_without_late_fraction(module: ModuleType) -> None:
    times = [datetime.fromisoformat(e["ts"]) for e in module.generate(2_000, keys=100, start=START, seed=5)]
    assert times == sorted(times)
    assert times[0] >= START
    assert all(time.utcoffset() is not None for time in times)


@pytest.mark.parametrize("module", MODULES)
def test_late_events_stay_within_the_allowed_lateness_of_every_key(module: ModuleType) -> None:
    pipeline = load_pipeline(module.__name__)
    lateness = pipeline.sources[0].allowed_lateness
    events = list(module.generate(5_000, keys=100, start=START, seed=9, late_fraction=0.1))
    late = 0
    for view in pipeline.views:
        newest: dict[tuple[Any, ...], datetime] = {}
        for event in events:
            key = tuple(event[name] for name in view.entity.join_keys)
            time = datetime.fromisoformat(event["ts"])
            if key in newest and time < newest[key]:
                late += 1
                assert (newest[key] - time).total_seconds() * 1000 < lateness
            newest[key] = max(time, newest.get(key, time))
    assert late > 0


@pytest.mark.parametrize(("module", "key"), [(payments, "card_id"), (clickstream, "user_id")])
def test_key_popularity_is_skewed(module: ModuleType, key: str) -> None:
    counts = Counter(event[key] for event in module.generate(10_000, keys=1_000, start=START, seed=2))
    ((_, top),) = counts.most_common(1)
    assert top > 20 * 10_000 / 1_000  # the most popular key is far above the uniform share
    assert len(counts) > 300  # ...and the long tail is still there


def test_payment_bursts_are_card_testing_runs() -> None:
    rng = random.Random(4)
    ticks = list(_generate.ticks(5_000, keys=1_000, start=START, rng=rng, burst_probability=0.02))
    burst = [tick for tick in ticks if tick.in_burst]
    assert burst
    assert len({tick.key for tick in burst}) < len(burst) / 3  # bursts repeat one key
    assert [tick.time_ms for tick in ticks] == sorted(tick.time_ms for tick in ticks)


def test_clickstream_actions_and_prices() -> None:
    events = list(clickstream.generate(5_000, keys=200, start=START, seed=8))
    actions = Counter(event["action"] for event in events)
    assert actions["view"] > actions["add_to_cart"] > actions["purchase"] > 0
    assert all((event["price"] is None) == (event["action"] == "view") for event in events)
    prices: dict[str, set[float]] = {}
    for event in events:
        if event["price"] is not None:
            prices.setdefault(event["product_id"], set()).add(event["price"])
    assert all(len(seen) == 1 for seen in prices.values())  # a product has one price


def test_clickstream_sessions_change_after_inactivity() -> None:
    events = clickstream.generate(3_000, keys=20, start=START, seed=1, events_per_second=0.05)
    sessions: dict[str, set[str]] = {}
    for event in events:
        sessions.setdefault(event["user_id"], set()).add(event["session_id"])
    assert max(len(ids) for ids in sessions.values()) > 1


def test_action_flags_transform_returns_a_new_dict() -> None:
    event = {"user_id": "u", "action": "add_to_cart", "price": 3.0}
    flagged = clickstream.with_action_flags(event)
    assert flagged == {**event, "is_view": 0, "is_cart_add": 1, "is_purchase": 0}
    assert "is_view" not in event


@pytest.mark.parametrize(
    ("action", "price", "kept"),
    [("purchase", 9.5, True), ("purchase", None, False), ("view", None, False), ("add_to_cart", 9.5, False)],
)
def test_purchases_only_transform_filters(action: str, price: float | None, kept: bool) -> None:
    event = {"user_id": "u", "action": action, "price": price}
    assert (clickstream.purchases_only(event) is event) is kept


def test_transforms_apply_to_decoded_events() -> None:
    decoder = Decoder(clickstream.clicks)
    results = decoder.decode_batch(
        list(_generate.to_bytes(clickstream.generate(1_000, keys=50, start=START, seed=6))), arrival_time=0
    )
    events = [result.fields for result in results if isinstance(result, SourceEvent)]
    assert len(events) == 1_000
    transform = clickstream.product_sales.transform
    assert transform is not None
    sales = [out for out in map(transform, events) if out is not None]
    assert sales and all(event["action"] == "purchase" for event in sales)


Generator = Callable[..., Iterator[dict[str, Any]]]


@pytest.mark.parametrize("generate", [payments.generate, clickstream.generate])
def test_generator_argument_checks(generate: Generator) -> None:
    assert list(generate(0, keys=5, start=START, seed=1)) == []
    with pytest.raises(ValueError, match="naive datetime"):
        list(generate(1, keys=5, start=datetime(2024, 5, 1), seed=1))
    with pytest.raises(ValueError, match="late_fraction"):
        list(generate(1, keys=5, start=START, seed=1, late_fraction=2.0))
    with pytest.raises(ValueError, match="at least one key"):
        list(generate(1, keys=0, start=START, seed=1))


def test_zipf_keys_cover_every_key() -> None:
    keys = _generate.ZipfKeys(5, exponent=0.0)
    rng = random.Random(0)
    assert {keys.draw(rng) for _ in range(1_000)} == set(range(5))
    assert keys.size == 5
