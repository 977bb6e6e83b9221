"""The online store's Redis layout without Redis: key names, entry encoding, the entry reader."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import GroupSteps, ServingState, ViewEngine
from streamfs.keys import encode_key
from streamfs.online.layout import (
    EntryReader,
    Freshness,
    ViewMeta,
    encode_entries,
    encode_entry,
    entry_key,
    key_prefix,
    key_suffix,
    short_fingerprint,
    views_key,
)
from streamfs.records import Position, SourceEvent


class Ev(BaseModel):
    k: str
    x: float | None = None
    ts: int


def make_view(ttl: int | None = None) -> FeatureView:
    source = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts")
    return FeatureView(
        "v",
        entity=Entity("e", join_keys=["k"]),
        source=source,
        features=[
            Aggregate("x", "sum", window=10, hop=5, name="s10"),
            Aggregate(None, "count", window=30, hop=10, name="c30"),
            Aggregate("x", "max", window=10, hop=5, name="m10"),
            Aggregate("x", "last", name="last"),
        ],
        ttl=ttl,
    )


def test_entry_key_puts_the_entity_in_a_hash_tag() -> None:
    assert entry_key("sfs", "card", "c1", "card_activity") == "sfs:{card:c1}:card_activity"
    assert key_prefix("sfs", "card") + "c1" + key_suffix("card_activity") == "sfs:{card:c1}:card_activity"
    assert views_key("sfs") == "sfs:views"


def test_composite_and_hostile_keys_cannot_break_the_hash_tag() -> None:
    key = entry_key("sfs", "user", encode_key(("a}b{", "x|y")), "v")
    assert key == "sfs:{user:a%7Db%7B|x%7Cy}:v"
    assert key.count("{") == 1 and key.count("}") == 1


def test_view_meta_describes_groups_ttl_and_expiry() -> None:
    meta = ViewMeta.from_view(make_view(ttl=100))
    assert meta.entity == "e" and meta.join_keys == ("k",)
    assert meta.features == ("s10", "c30", "m10", "last")
    assert meta.groups == (("s10", "m10"), ("c30",), ("last",))
    assert meta.ttl == 100 and meta.expire_ms == 100 + 30
    assert meta.fingerprint == short_fingerprint(ViewEngine(make_view()).fingerprint())
    assert ViewMeta.from_bytes(meta.to_bytes()) == meta
    assert ViewMeta.from_view(make_view()).expire_ms is None


def state(values: list[tuple[Any, ...]]) -> ServingState:
    return ServingState(("a",), 7, 3, (GroupSteps((7, 10, 15), tuple(values)),))


def test_encoding_is_deterministic_but_for_the_write_time() -> None:
    s = state([(1.5, 2), (0.5, 1), (0, None)])
    assert encode_entry(s, "fp", 1) == encode_entry(s, "fp", 1)
    steps = [[7, 10, 15], [[1.5, 2], [0.5, 1], [0, None]]]
    assert orjson.loads(encode_entry(s, "fp", 99)) == ["fp", 7, 3, 99, 0, [steps]]


@pytest.mark.parametrize(
    "value",
    [
        2**70,
        -(2**70),
        float("inf"),
        float("-inf"),
        datetime(2024, 5, 1, 12, 30, 1, 5000, tzinfo=UTC),
        date(2024, 5, 1),
        Decimal("1.10"),
        b"\x00\xff raw",
    ],
)
def test_values_json_cannot_carry_round_trip_through_tags(value: Any) -> None:
    meta = ViewMeta("v", "e", ("k",), ("a", "b"), (("a", "b"),), None, None, "fp")
    raw = encode_entry(state([(value, "text"), (1, 2), (3, 4)]), "fp", 1)
    values, _ = EntryReader(meta, ["a", "b"]).read([raw], 8)
    assert values == [[value, "text"]]
    assert type(values[0][0]) is type(value)


def test_unsupported_values_fail_loudly_at_write_time() -> None:
    with pytest.raises(TypeError, match="cannot store a feature value of type list"):
        encode_entry(state([([1], 1), (1, 2), (3, 4)]), "fp", 1)


def test_reader_picks_steps_by_as_of_and_orders_features_as_requested() -> None:
    meta = ViewMeta("v", "e", ("k",), ("a", "b", "c"), (("a", "c"), ("b",)), 20, 50, "fp")
    entry = orjson.dumps(["fp", 7, 3, 1000, 0, [[[7, 10], [[1, 2], [0, 0]]], [[7], [["x"]]]]])
    reader = EntryReader(meta, ["b", "c"])
    assert reader.read([entry], 0)[0] == [["x", 2]]  # before max_time reads at max_time
    assert reader.read([entry], 9)[0] == [["x", 2]]
    assert reader.read([entry], 10)[0] == [["x", 0]]
    assert reader.read([entry], 27)[0] == [["x", 0]]
    values, freshness = reader.read([entry, None], 28)  # as_of - max_time > ttl
    assert values == [(None, None), (None, None)]
    assert freshness == [Freshness(7, 1000, 3, True), None]
    assert reader.read([entry], 9)[1] == [Freshness(7, 1000, 3, False)]


def test_reader_treats_an_entry_of_another_definition_as_absent() -> None:
    meta = ViewMeta("v", "e", ("k",), ("a",), (("a",),), None, None, "new")
    entry = orjson.dumps(["old", 7, 3, 1000, 0, [[[7], [[1]]]]])
    assert EntryReader(meta, ["a"]).read([entry], 7) == ([(None,)], [None])


class Stamped(BaseModel):
    k: str
    x: float | None = None
    at: datetime | None = None
    ts: int


def test_bulk_encoding_of_kernel_columns_tags_values_json_cannot_carry() -> None:
    """The writer's bulk path dumps a key's steps as they are only where JSON carries every value:
    a key whose `last` is a datetime (an interned value on the kernel) is tagged like encode_entry
    does, the others are dumped straight from the columns, and both equal encode_entry's bytes."""
    source = KafkaSource("src", topic="t", schema=Stamped, timestamp_field="ts")
    view = FeatureView(
        "v",
        entity=Entity("e", join_keys=["k"]),
        source=source,
        features=[
            Aggregate("x", "sum", window=10, hop=5, name="s10"),
            Aggregate("at", "last", name="last_at"),
            Aggregate("x", "last", window=10, hop=5, name="last_x"),
        ],
    )
    engine = ViewEngine(view)
    assert engine.uses_kernel, engine.kernel_refusal
    stamp = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    events = [
        SourceEvent({"k": "plain", "x": 1.5, "at": None, "ts": 1}, 1, 1, Position("t", 0, 0)),
        SourceEvent({"k": "dated", "x": 2.0, "at": stamp, "ts": 2}, 2, 2, Position("t", 0, 1)),
        SourceEvent({"k": "plain", "x": 0.25, "at": None, "ts": 7}, 7, 3, Position("t", 0, 2)),
    ]
    engine.process(events)
    keys = [("plain",), ("dated",), ("nobody",)]
    columns = engine.serving_columns(keys)
    assert columns.plain[:2] == [True, False] and 0 not in columns.states
    meta = ViewMeta.from_engine(engine)
    entries = encode_entries(columns, meta.fingerprint, 9)
    states = engine.serving_states(keys)
    expected = [encode_entry(state, meta.fingerprint, 9) for state in states[:2]]  # type: ignore[arg-type]
    assert entries == [*expected, None]
    assert orjson.loads(entries[1])[4] == 1  # tagged
    values, _ = EntryReader(meta, ["last_at", "s10"]).read([entries[1]], 3)
    assert values == [[stamp, 2.0]]
