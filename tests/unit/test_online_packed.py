"""Packed entries (online/packed.py): written for views whose features are all numbers, read
back to exactly what the JSON entry of the same state reads, at any time; anything else is
JSON as before, and a reader takes both in one call."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.online.layout import EntryReader, Freshness, ViewMeta, encode_entries, encode_entry
from streamfs.online.packed import MAGIC
from streamfs.records import Position, SourceEvent


class Ev(BaseModel):
    k: str
    x: float | None = None
    n: int | None = None
    ts: int


def numeric_view(ttl: int | None = None) -> FeatureView:
    """Every output kind: int counts, float sums (never None), float means/max (None when the
    window is empty), an int field's max (an int held in a float) and a lifetime last."""
    source = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts", allowed_lateness=3)
    return FeatureView(
        "v",
        entity=Entity("e", join_keys=["k"]),
        source=source,
        features=[
            Aggregate("x", "sum", window=10, hop=5, name="s10"),
            Aggregate(None, "count", window=30, hop=10, name="c30"),
            Aggregate("x", "mean", window=30, hop=10, name="mean30"),
            Aggregate("x", "max", window=10, hop=5, name="m10"),
            Aggregate("n", "max", window=30, hop=10, name="nmax30"),
            Aggregate("x", "count_distinct", window=30, hop=10, name="d30"),
            Aggregate("x", "last", name="last"),
        ],
        ttl=ttl,
    )


EVENTS = [
    ("a", 1.5, 4, 1),
    ("a", -0.0, None, 6),
    ("b", None, 7, 3),
    ("a", 1e-9, 2**52 + 1, 12),
    ("c", 2.5, None, 14),
    ("a", 7.25, -3, 11),  # out of order, within the lateness
    ("b", math.pi, None, 40),
]


def engine_with_events(view: FeatureView, *, kernel: bool = True) -> ViewEngine:
    engine = ViewEngine(view, kernel=kernel)
    assert engine.uses_kernel == kernel
    events = [
        SourceEvent({"k": k, "x": x, "n": n, "ts": ts}, ts, ts, Position("t", 0, i))
        for i, (k, x, n, ts) in enumerate(EVENTS)
    ]
    engine.process(events)
    return engine


def typed(values: list[Any]) -> list[list[tuple[type, Any]]]:
    return [[(type(value), value) for value in row] for row in values]


KEYS = [("a",), ("b",), ("c",)]


@pytest.mark.parametrize("ttl", [None, 25])
def test_packed_entries_read_what_json_entries_read_at_any_time(ttl: int | None) -> None:
    view = numeric_view(ttl)
    engine = engine_with_events(view)
    meta = ViewMeta.from_engine(engine)
    packed = encode_entries(engine.serving_columns(KEYS), meta.fingerprint, 9)
    json = [encode_entry(state, meta.fingerprint, 9) for state in engine.serving_states(KEYS)]  # type: ignore[arg-type]
    assert all(raw is not None and raw.startswith(MAGIC) for raw in packed)
    assert all(raw is not None and raw.startswith(b"[") for raw in json)
    some = ["nmax30", "last", "s10", "d30"]  # a subset, out of view order
    for features in (list(view.feature_names), some, ["c30"]):
        reader = EntryReader(meta, features)
        for as_of in range(0, 90, 3):
            ours, theirs = reader.read(packed, as_of), reader.read(json, as_of)
            assert typed(ours[0]) == typed(theirs[0])
            assert ours[1] == theirs[1]
    values, freshness = EntryReader(meta, ["nmax30", "s10", "m10"]).read(packed, 12)
    assert values[0] == [2**52 + 1, -0.0 + 1e-9 + 7.25, 7.25]  # s10 at 12: the events at 5..12
    assert type(values[0][0]) is int
    assert values[1] == [None, math.pi, math.pi]  # b read at its newest event (40): n = 7 at 3 has left
    assert freshness[0] == Freshness(12, 9, 4, False)


def test_packing_is_deterministic_but_for_the_write_time() -> None:
    engine = engine_with_events(numeric_view())
    first = encode_entries(engine.serving_columns(KEYS), "fp", 1)
    again = encode_entries(engine.serving_columns(list(reversed(KEYS))), "fp", 1)
    assert first == list(reversed(again))
    later = encode_entries(engine.serving_columns(KEYS), "fp", 2)
    assert [a != b for a, b in zip(first, later, strict=True)] == [True] * 3


def test_a_reader_takes_packed_json_missing_foreign_and_damaged_entries_in_one_call() -> None:
    view = numeric_view()
    engine = engine_with_events(view)
    meta = ViewMeta.from_engine(engine)
    packed = encode_entries(engine.serving_columns(KEYS), meta.fingerprint, 9)
    json = [encode_entry(state, meta.fingerprint, 9) for state in engine.serving_states(KEYS)]  # type: ignore[arg-type]
    foreign = encode_entries(engine.serving_columns(KEYS), "0123456789abcdef", 9)[0]
    assert packed[0] is not None and packed[1] is not None
    damaged = [packed[0][:-8], packed[0][:-3], packed[0] + bytes(8), MAGIC]
    reader = EntryReader(meta, list(view.feature_names))
    mixed = [packed[0], None, json[1], foreign, *damaged, packed[1]]
    values, freshness = reader.read(mixed, 20)
    alone, _ = reader.read([packed[0], packed[1]], 20)
    from_json, _ = reader.read([json[1]], 20)
    absent = (None,) * len(view.feature_names)
    assert values == [alone[0], absent, from_json[0], absent, absent, absent, absent, absent, alone[1]]
    assert [f is None for f in freshness] == [False, True, False, True, True, True, True, True, False]


def test_views_with_values_that_are_not_numbers_stay_json() -> None:
    class Named(BaseModel):
        k: str
        who: str
        ts: int

    source = KafkaSource("src", topic="t", schema=Named, timestamp_field="ts")
    view = FeatureView(
        "v",
        entity=Entity("e", join_keys=["k"]),
        source=source,
        features=[Aggregate(None, "count", window=10, hop=5), Aggregate("who", "last", name="who")],
    )
    engine = ViewEngine(view)
    assert engine.uses_kernel
    engine.process([SourceEvent({"k": "a", "who": "ann", "ts": 1}, 1, 1, Position("t", 0, 0))])
    meta = ViewMeta.from_engine(engine)
    entries = encode_entries(engine.serving_columns([("a",)]), meta.fingerprint, 3)
    assert entries[0] is not None and entries[0].startswith(b"[")
    assert EntryReader(meta, ["who", "count_10ms"]).read(entries, 4)[0] == [["ann", 1]]


def test_the_python_engine_writes_json_that_reads_like_the_kernels_packed_entries() -> None:
    view = numeric_view()
    kernel, python = engine_with_events(view), engine_with_events(view, kernel=False)
    meta = ViewMeta.from_engine(kernel)
    packed = encode_entries(kernel.serving_columns(KEYS), meta.fingerprint, 9)
    json = encode_entries(python.serving_columns(KEYS), meta.fingerprint, 9)
    assert all(raw is not None and raw.startswith(b"[") for raw in json)
    reader = EntryReader(meta, list(view.feature_names))
    for as_of in (0, 14, 41, 70):
        assert typed(reader.read(packed, as_of)[0]) == typed(reader.read(json, as_of)[0])
