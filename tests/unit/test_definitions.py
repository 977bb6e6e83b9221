"""Every validation rule in streamfs.definitions: a definition that constructs is a valid one."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import AwareDatetime, BaseModel, ValidationError

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.durations import to_ms
from streamfs.errors import DefinitionError


class Payment(BaseModel):
    card_id: str
    merchant_id: str
    amount: float
    currency: str
    ts: datetime


class Reading(BaseModel):
    site: str
    sensor: int
    value: int | None = None
    at: int


def card() -> Entity:
    return Entity("card", join_keys=["card_id"])


def payments(**overrides: Any) -> KafkaSource:
    options: dict[str, Any] = {"topic": "payments", "schema": Payment, "timestamp_field": "ts"}
    options.update(overrides)
    return KafkaSource("payments", **options)


def view(*features: Aggregate, **overrides: Any) -> FeatureView:
    options: dict[str, Any] = {"entity": card(), "source": payments(), "features": list(features)}
    options.update(overrides)
    return FeatureView("card_activity", **options)


# Entity


def test_entity_takes_name_by_position_or_keyword() -> None:
    assert Entity("card", join_keys=["card_id"]) == Entity(name="card", join_keys=("card_id",))


def test_entity_accepts_a_single_join_key_string() -> None:
    assert Entity("card", join_keys="card_id").join_keys == ("card_id",)


def test_entity_composite_keys_keep_their_order() -> None:
    assert Entity("sensor", join_keys=["site", "sensor"]).join_keys == ("site", "sensor")


@pytest.mark.parametrize("keys", [[], ["card_id", "card_id"]])
def test_entity_join_keys_must_be_present_and_distinct(keys: list[str]) -> None:
    with pytest.raises(DefinitionError, match="join_keys"):
        Entity("card", join_keys=keys)


@pytest.mark.parametrize("name", ["Card", "1card", "card-id", "", "c" * 64])
def test_names_must_be_lowercase_identifiers(name: str) -> None:
    with pytest.raises(DefinitionError, match="entity name"):
        Entity(name, join_keys=["card_id"])


def test_too_many_positional_arguments() -> None:
    with pytest.raises(DefinitionError, match=r"at most 1 positional"):
        Entity("card", ["card_id"])  # type: ignore[call-arg]


def test_argument_given_by_position_and_by_name() -> None:
    with pytest.raises(DefinitionError, match="'name' given both by position and by name"):
        Entity("card", name="card", join_keys=["card_id"])  # type: ignore[misc]


@pytest.mark.parametrize("cls", [Entity, KafkaSource, Aggregate, FeatureView])
def test_unknown_fields_are_rejected_by_name(cls: type[Any]) -> None:
    arguments: dict[type[Any], dict[str, Any]] = {
        Entity: {"name": "card", "join_keys": ["card_id"]},
        KafkaSource: {"name": "payments", "topic": "p", "schema": Payment, "timestamp_field": "ts"},
        Aggregate: {"field": "amount", "function": "sum"},
        FeatureView: {
            "name": "v",
            "entity": card(),
            "source": payments(),
            "features": [Aggregate(None, "count")],
        },
    }
    with pytest.raises(DefinitionError, match=r"(?s)jion_keys.*Extra inputs are not permitted"):
        cls(**arguments[cls], jion_keys=["card_id"])


def test_definitions_are_frozen() -> None:
    entity = card()
    with pytest.raises(ValidationError, match="frozen"):
        entity.name = "user"  # type: ignore[misc]
    feature = Aggregate("amount", "sum", window="1h")
    with pytest.raises(ValidationError, match="frozen"):
        feature.window = 1  # type: ignore[misc]


def test_definitions_are_hashable_and_compare_by_value() -> None:
    first, second = view(Aggregate(None, "count")), view(Aggregate(None, "count"))
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, card(), payments()}) == 3


# KafkaSource


def test_source_schema_alias_and_lateness() -> None:
    source = payments(allowed_lateness="5m")
    assert source.schema is Payment
    assert source.allowed_lateness == 300_000
    assert source.max_message_bytes == 1_000_000


@pytest.mark.parametrize("topic", ["", "bad topic", "a/b", "x" * 250])
def test_source_topic_must_be_a_kafka_topic_name(topic: str) -> None:
    with pytest.raises(DefinitionError, match="topic"):
        payments(topic=topic)


def test_source_timestamp_field_must_exist() -> None:
    with pytest.raises(
        DefinitionError, match=r"timestamp_field 'time' is not a field of Payment \(fields: card_id"
    ):
        payments(timestamp_field="time")


def test_source_timestamp_field_must_be_a_time() -> None:
    with pytest.raises(DefinitionError, match="timestamp_field 'currency' must be a datetime"):
        payments(timestamp_field="currency")


def test_source_timestamp_may_be_int_epoch_ms_or_aware_datetime() -> None:
    KafkaSource("readings", topic="readings", schema=Reading, timestamp_field="at")

    class Aware(BaseModel):
        k: str
        ts: AwareDatetime

    KafkaSource("aware", topic="aware", schema=Aware, timestamp_field="ts")


def test_source_field_type_strips_optional() -> None:
    source = KafkaSource("readings", topic="readings", schema=Reading, timestamp_field="at")
    assert source.field_type("value") is int
    assert source.field_type("site") is str
    assert source.field_type("nope") is None


def test_source_lateness_garbage_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="allowed_lateness"):
        payments(allowed_lateness="soon")


# Aggregate


@pytest.mark.parametrize(
    ("feature", "name"),
    [
        (Aggregate("amount", "sum", window="1h", hop="5m"), "amount_sum_1h"),
        (Aggregate("amount", "sum", window="60m"), "amount_sum_60m"),
        (Aggregate("amount", "mean", window=timedelta(days=7)), "amount_mean_7d"),
        (Aggregate("amount", "max", window=90_000), "amount_max_90s"),
        (Aggregate(None, "count", window="10m"), "count_10m"),
        (Aggregate(None, "count"), "count"),
        (Aggregate("amount", "last"), "amount_last"),
        (Aggregate("amount", "sum", window="1h", name="spend_1h"), "spend_1h"),
    ],
)
def test_default_feature_names(feature: Aggregate, name: str) -> None:
    assert feature.name == name


def test_window_and_hop_are_milliseconds_and_tumbling_by_default() -> None:
    hopping = Aggregate("amount", "sum", window="1h", hop="5m")
    assert (hopping.window, hopping.hop) == (3_600_000, 300_000)
    tumbling = Aggregate("amount", "sum", window="10m")
    assert tumbling.hop == tumbling.window == 600_000
    assert not tumbling.is_lifetime
    assert Aggregate("amount", "sum").is_lifetime


@pytest.mark.parametrize(("window", "hop"), [("1h", "7m"), ("10m", "20m"), ("1h", "0s")])
def test_hop_must_divide_window(window: str, hop: str) -> None:
    with pytest.raises(DefinitionError, match="must be positive and divide window"):
        Aggregate("amount", "sum", window=window, hop=hop)


def test_window_must_be_positive() -> None:
    with pytest.raises(DefinitionError, match="window must be positive"):
        Aggregate("amount", "sum", window="0m")


def test_lifetime_aggregate_has_no_hop() -> None:
    with pytest.raises(DefinitionError, match="a lifetime aggregate has no hop"):
        Aggregate("amount", "sum", hop="5m")


def test_only_count_may_omit_the_field() -> None:
    assert Aggregate(None, "count").field is None
    with pytest.raises(DefinitionError, match="'sum' needs an input field"):
        Aggregate(None, "sum", window="1h")


def test_unknown_aggregation_function() -> None:
    with pytest.raises(DefinitionError, match=r"function: Input should be 'count', 'sum'"):
        Aggregate("amount", "median")  # type: ignore[arg-type]


def test_feature_name_must_be_an_identifier() -> None:
    with pytest.raises(DefinitionError, match="feature name 'Spend' must be lowercase"):
        Aggregate("amount", "sum", name="Spend")


# Durations as users write them


@pytest.mark.parametrize(
    ("written", "ms"),
    [
        ("10m", 600_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        ("2w", 1_209_600_000),
        ("30s", 30_000),
        ("250ms", 250),
        (" 1h ", 3_600_000),
        (timedelta(minutes=5), 300_000),
        (1_500, 1_500),
    ],
)
def test_durations(written: str | timedelta | int, ms: int) -> None:
    assert to_ms(written) == ms
    assert Aggregate("amount", "sum", window=written).window == ms


@pytest.mark.parametrize(
    "garbage", ["10", "ten minutes", "1y", "-5m", "1.5h", "", timedelta(microseconds=1), True]
)
def test_garbage_durations_name_the_field(garbage: Any) -> None:
    with pytest.raises(DefinitionError, match="window"):
        Aggregate("amount", "sum", window=garbage)


# FeatureView


def test_feature_view_holds_features_in_order() -> None:
    v = view(Aggregate(None, "count", window="1h"), Aggregate("amount", "sum", window="1h"), ttl="30d")
    assert v.feature_names == ["count_1h", "amount_sum_1h"]
    assert v.features[1] is v.feature("amount_sum_1h")
    assert v.ttl == 30 * 86_400_000
    with pytest.raises(KeyError, match="no feature 'nope'"):
        v.feature("nope")


def test_feature_view_needs_a_feature() -> None:
    with pytest.raises(DefinitionError, match="at least one feature"):
        view()


def test_duplicate_feature_names() -> None:
    with pytest.raises(DefinitionError, match=r"feature names repeat: \['amount_sum_1h'\]"):
        view(Aggregate("amount", "sum", window="1h", hop="5m"), Aggregate("amount", "sum", window="1h"))


def test_join_keys_must_be_fields_of_the_schema() -> None:
    with pytest.raises(DefinitionError, match="join key 'user_id' is not a field of Payment"):
        view(Aggregate(None, "count"), entity=Entity("user", join_keys=["user_id"]))


def test_feature_field_must_be_in_the_schema() -> None:
    with pytest.raises(
        DefinitionError, match=r"features\[1\] \(price_sum\): field 'price' is not in Payment"
    ):
        view(Aggregate(None, "count"), Aggregate("price", "sum"))


def add_fee(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "fee": event["amount"] * 0.01}


def test_transform_may_derive_fields_not_in_the_schema_with_their_types() -> None:
    derived = view(
        Aggregate("fee", "sum"), Aggregate("fee", "max"), transform=add_fee, transform_fields={"fee": float}
    )
    assert derived.transform is add_fee and derived.field_type("fee") is float
    assert derived.field_type("amount") is float and derived.field_type("nope") is None


def test_a_derived_field_without_its_type_is_named_with_the_fix() -> None:
    with pytest.raises(
        DefinitionError,
        match=r"features\[0\] \(fee_max\): field 'fee' is not in Payment .*declare its type, "
        r"e.g. transform_fields=\{'fee': float\}",
    ):
        view(Aggregate("fee", "max"), transform=add_fee)


def test_transform_fields_must_be_storable_new_and_need_a_transform() -> None:
    with pytest.raises(DefinitionError, match=r"transform_fields\['fee'\]: list values cannot be stored"):
        view(Aggregate("fee", "last"), transform=add_fee, transform_fields={"fee": list})
    with pytest.raises(
        DefinitionError, match=r"transform_fields\['amount'\]: 'amount' is a field of Payment"
    ):
        view(Aggregate("amount", "last"), transform=add_fee, transform_fields={"amount": int})
    with pytest.raises(DefinitionError, match="there is no transform"):
        view(Aggregate("amount", "last"), transform_fields={"fee": float})
    with pytest.raises(DefinitionError, match="'sum' needs a numeric field; 'fee' is str"):
        view(Aggregate("fee", "sum"), transform=add_fee, transform_fields={"fee": str})


@pytest.mark.parametrize("function", ["sum", "mean", "stddev", "variance"])
def test_numeric_functions_need_numeric_fields(function: Any) -> None:
    with pytest.raises(DefinitionError, match=f"'{function}' needs a numeric field; 'currency' is str"):
        view(Aggregate("currency", function))


@pytest.mark.parametrize("function", ["count", "min", "max", "last", "first", "count_distinct"])
def test_other_functions_take_any_field(function: Any) -> None:
    view(Aggregate("currency", function))


def test_optional_int_fields_are_numeric() -> None:
    source = KafkaSource("readings", topic="readings", schema=Reading, timestamp_field="at")
    sensor = Entity("sensor", join_keys=["site", "sensor"])
    FeatureView("sensor_stats", entity=sensor, source=source, features=[Aggregate("value", "mean")])


@pytest.mark.parametrize("ttl", ["0s", "soon"])
def test_ttl_must_be_a_positive_duration(ttl: str) -> None:
    with pytest.raises(DefinitionError, match="ttl"):
        view(Aggregate(None, "count"), ttl=ttl)


def test_error_names_the_view() -> None:
    with pytest.raises(DefinitionError, match=r"^invalid FeatureView 'card_activity':"):
        view()
