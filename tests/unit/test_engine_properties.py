"""The engine against the brute-force reference on random streams (hypothesis).

Streams are out of order, late, sparse and bursty, with duplicate timestamps and nulls; every
aggregation and window kind appears; batches are split anywhere and the state goes through a
JSON snapshot/restore in the middle. Sums, means and variances are exact-then-rounded-once on
both sides, so every comparison is exact equality.
"""

from __future__ import annotations

import json
from typing import Any

from engine_reference import Ev, ReferenceView
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfs.definitions import AGGREGATIONS, Aggregate, AggregationName, Entity, FeatureView, KafkaSource
from streamfs.engine import ServingState, ViewEngine
from streamfs.records import FeatureRow, Position, SourceEvent

WINDOWS = [(None, None), (10, 10), (12, 4), (30, 5), (7, 1)]
FIELD_FOR: dict[str, list[str | None]] = {
    "count": ["x", "s", None],
    "count_distinct": ["s", "n"],
    "min": ["x", "s", "n"],
    "max": ["x", "s", "n"],
    "last": ["x", "s"],
    "first": ["x", "n"],
}


@st.composite
def views(draw: st.DrawFn) -> FeatureView:
    lateness = draw(st.sampled_from([0, 0, 3, 8, 50]))
    functions: list[AggregationName] = draw(st.lists(st.sampled_from(AGGREGATIONS), min_size=1, max_size=8))
    features = []
    for i, function in enumerate(functions):
        field = draw(st.sampled_from(FIELD_FOR.get(function, ["x", "n"])))
        length, hop = draw(st.sampled_from(WINDOWS))
        features.append(Aggregate(field, function, window=length, hop=hop, name=f"f{i}"))
    source = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts", allowed_lateness=lateness)
    ttl = draw(st.sampled_from([None, None, 25]))
    return FeatureView("v", entity=Entity("e", join_keys=["k"]), source=source, features=features, ttl=ttl)


@st.composite
def streams(draw: st.DrawFn) -> list[SourceEvent]:
    size = draw(st.integers(0, 60))
    keys = draw(st.sampled_from([["a"], ["a", "b"], ["a", "b", "c", "d"]]))
    time = draw(st.integers(-40, 40))
    events = []
    for offset in range(size):
        step = draw(st.sampled_from([0, 0, 1, 2, 3, 5, 40, -2, -6, -60]))
        time += step
        x = draw(st.one_of(st.none(), st.sampled_from([0.1, 0.2, 1e16, -3.5, 7.0, 1 / 3, 2.5e-8])))
        n = draw(st.one_of(st.none(), st.integers(-5, 5)))
        s = draw(st.one_of(st.none(), st.sampled_from(["m1", "m2", "m3"])))
        fields: dict[str, Any] = {"k": draw(st.sampled_from(keys)), "x": x, "n": n, "s": s, "ts": time}
        events.append(SourceEvent(fields, time, 1_000 + offset, Position("t", 0, offset)))
    return events


def serve_from_steps(state: ServingState, engine: ViewEngine, t: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    empty = engine.empty_values()
    for steps, names in zip(state.groups, engine.group_features, strict=True):
        index = max(i for i, start in enumerate(steps.starts) if start <= max(t, state.max_time))
        for name, value in zip(names, steps.values[index], strict=True):
            values[name] = value
    assert set(values) == set(empty)
    return {name: values[name] for name in engine.feature_names}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(views(), streams(), st.data())
def test_engine_matches_reference(view: FeatureView, events: list[SourceEvent], data: st.DataObject) -> None:
    reference = ReferenceView(view)
    expected_rows, expected_rejected = reference.process(events)

    engine = ViewEngine(view)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    restore_at = data.draw(st.sampled_from([None, *cuts])) if cuts else None
    rows: list[FeatureRow] = []
    rejected: list[str] = []
    previous = 0
    for cut in [*cuts, len(events)]:
        result = engine.process(events[previous:cut])
        rows.extend(result.rows)
        rejected.extend(r.reason for r in result.rejected)
        previous = cut
        if cut == restore_at:
            snapshot = json.loads(json.dumps(engine.snapshot(0)))
            engine = ViewEngine(view)
            engine.restore(snapshot)

    assert rejected == expected_rejected
    assert [(r.key, r.event_time, r.values) for r in rows] == expected_rows

    for key in reference.keys:
        watermark = engine.watermark(key)
        assert watermark is not None
        state = engine.serving_state(key)
        assert state is not None
        for delta in (0, 1, 3, 4, 5, 9, 10, 11, 29, 30, 31, 200):
            t = watermark + delta
            assert engine.evaluate(key, t) == reference.evaluate(key, t), (key, t)
            if t >= state.max_time:
                served = serve_from_steps(state, engine, t)
                assert served == reference.evaluate_tuple_dict(key, t), (key, t)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(views(), streams(), st.data())
def test_state_only_processing_leaves_the_same_state(
    view: FeatureView, events: list[SourceEvent], data: st.DataObject
) -> None:
    """process(rows=False) (archive replays) must leave exactly the state process() leaves."""
    cut = data.draw(st.integers(0, len(events)))
    reference = ReferenceView(view)
    _, expected_prefix_rejected = reference.process(events[:cut])
    expected_rows, expected_rejected = reference.process(events[cut:])

    engine = ViewEngine(view)
    prefix = engine.process(events[:cut], rows=False)
    assert prefix.rows == []
    assert [r.reason for r in prefix.rejected] == expected_prefix_rejected
    rest = engine.process(events[cut:])
    assert [r.reason for r in rest.rejected] == expected_rejected
    assert [(r.key, r.event_time, r.values) for r in rest.rows] == expected_rows
    for key in reference.keys:
        watermark = engine.watermark(key)
        assert watermark is not None
        for delta in (0, 3, 10, 31, 200):
            assert engine.evaluate(key, watermark + delta) == reference.evaluate(key, watermark + delta)
