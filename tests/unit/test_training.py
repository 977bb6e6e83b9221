"""Training sets against a literal reference (hypothesis), plus the request checks.

The reference replays the archive with the brute-force ReferenceView, label by label:
  as_served   the events that had arrived by t (in arrival order), read as the online store
              reads: evaluated at max(t, newest event time of the key), None past the TTL.
  event_time  the events accepted online whose event time ≤ t, in event-time order, at t.
Labels before the entity's first accepted event read as empty windows when the entity has an
accepted event somewhere in the archive, as nulls when it has none. inclusive=False is all of
this at t - 1 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas
import polars
import pyarrow as pa
import pytest
from engine_reference import Ev, ReferenceView
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from streamfs.definitions import AGGREGATIONS, Aggregate, AggregationName, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.errors import OfflineError
from streamfs.offline import OfflineWriter
from streamfs.records import Position, SourceEvent
from streamfs.training import Mode, training_set, training_set_command

WINDOWS = [(None, None), (10, 10), (12, 4), (30, 5)]
FIELD_FOR: dict[str, list[str | None]] = {
    "count": ["x", None],
    "count_distinct": ["s", "n"],
    "min": ["x", "s", "n"],
    "max": ["x", "n"],
    "last": ["x", "s"],
    "first": ["x", "n"],
}
PARTITION_OF = {"a": 0, "b": 1, "c": 0, "d": 2}
ENTITY = Entity("e", join_keys=["k"])
BASE = 10 * 86_400_000 + 43_200_000
"""Noon on a day: label times near the events stay on the archive's date (see test_errors_before_work)."""


@st.composite
def views(draw: st.DrawFn) -> FeatureView:
    lateness = draw(st.sampled_from([0, 3, 8, 50]))
    functions: list[AggregationName] = draw(st.lists(st.sampled_from(AGGREGATIONS), min_size=1, max_size=5))
    features = []
    for i, function in enumerate(functions):
        field = draw(st.sampled_from(FIELD_FOR.get(function, ["x", "n"])))
        length, hop = draw(st.sampled_from(WINDOWS))
        features.append(Aggregate(field, function, window=length, hop=hop, name=f"f{i}"))
    source = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts", allowed_lateness=lateness)
    ttl = draw(st.sampled_from([None, None, 25]))
    transform = draw(st.sampled_from([None, None, None, merge_c_into_a]))
    return FeatureView("v", entity=ENTITY, source=source, features=features, ttl=ttl, transform=transform)


def merge_c_into_a(fields: dict[str, Any]) -> dict[str, Any] | None:
    """A transform that rewrites keys (c becomes a, in the same partition: the engine keeps state
    per source partition) and filters events (n == 0)."""
    if fields.get("n") == 0:
        return None
    return {**fields, "k": "a"} if fields["k"] == "c" else fields


def key_of(view: FeatureView, event: SourceEvent) -> str | None:
    fields = event.fields if view.transform is None else view.transform(dict(event.fields))
    return None if fields is None else fields["k"]


@st.composite
def streams(draw: st.DrawFn) -> list[SourceEvent]:
    """Out-of-order event times, arrivals that lag by varying amounts (ties included), 3 partitions."""
    size = draw(st.integers(1, 40))
    time = BASE + draw(st.integers(-40, 40))
    arrival = time
    offsets = dict.fromkeys(PARTITION_OF.values(), 0)
    events = []
    for _ in range(size):
        time += draw(st.sampled_from([0, 1, 2, 5, 40, -2, -6, -60]))
        arrival = max(arrival, time + draw(st.sampled_from([-3, 0, 0, 1, 4, 30])))
        arrival += draw(st.sampled_from([0, 0, 1]))
        key = draw(st.sampled_from(["a", "b", "c", "d"]))
        x = draw(st.one_of(st.none(), st.sampled_from([0.1, 1e16, -3.5, 1 / 3])))
        n = draw(st.one_of(st.none(), st.integers(-5, 5)))
        s = draw(st.one_of(st.none(), st.sampled_from(["m1", "m2"])))
        partition = PARTITION_OF[key]
        position = Position("t", partition, offsets[partition])
        offsets[partition] += 1
        events.append(SourceEvent({"k": key, "x": x, "n": n, "s": s, "ts": time}, time, arrival, position))
    return events


def write_archive(root: Path, view: FeatureView, events: list[SourceEvent]) -> None:
    writer = OfflineWriter(root, [view])
    writer.add_events(view.source, events)
    writer.flush()


def arrival_order(events: list[SourceEvent]) -> list[SourceEvent]:
    def order(e: SourceEvent) -> tuple[int, int, int]:
        assert e.position is not None
        return (e.arrival_time, e.position.partition, e.position.offset)

    return sorted(events, key=order)


def accepted_events(view: FeatureView, events: list[SourceEvent]) -> list[SourceEvent]:
    reference = ReferenceView(view)
    return [event for event in arrival_order(events) if reference.process([event])[0]]


def expected(
    view: FeatureView, events: list[SourceEvent], key: str, t: int, mode: str
) -> dict[str, Any] | None:
    accepted = accepted_events(view, events)
    known_later = any(key_of(view, e) == key for e in accepted)
    reference = ReferenceView(view)
    if mode == "as_served":
        reference.process([e for e in arrival_order(events) if e.arrival_time <= t])
        state = reference.keys.get((key,))
        if state is None or not state.events:
            return ViewEngine(view).empty_values() if known_later else None
        assert state.max_time is not None
        if view.ttl is not None and t - state.max_time > view.ttl:
            return None
        return reference.evaluate_tuple_dict((key,), max(t, state.max_time))
    ordered = sorted(
        (e for e in accepted if e.event_time <= t),
        key=lambda e: (e.event_time, accepted.index(e)),
    )
    reference.process(ordered)
    state = reference.keys.get((key,))
    if state is None or not state.events:
        return ViewEngine(view).empty_values() if known_later else None
    return reference.evaluate((key,), t)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(views(), streams(), st.data())
def test_training_set_matches_reference(
    tmp_path_factory: pytest.TempPathFactory,
    view: FeatureView,
    events: list[SourceEvent],
    data: st.DataObject,
) -> None:
    root = tmp_path_factory.mktemp("offline")
    write_archive(root, view, events)
    mode: Mode = data.draw(st.sampled_from(["as_served", "event_time"]))
    inclusive = data.draw(st.booleans())
    boundary_times = [e.event_time for e in events] + [e.arrival_time for e in events]
    label_time = st.one_of(st.sampled_from(boundary_times), st.integers(BASE - 120, BASE + 400))
    labels = data.draw(
        st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "z"]), label_time), min_size=1, max_size=12)
    )
    table = pa.table(
        {
            "k": [key for key, _ in labels],
            "timestamp": pa.array([t for _, t in labels], type=pa.timestamp("ms", tz="UTC")),
            "label": list(range(len(labels))),
        }
    )
    result = training_set(
        table,
        "v",
        root=root,
        pipeline=[view],
        mode=mode,
        inclusive=inclusive,
        events_per_bucket=data.draw(st.sampled_from([2_000_000, 5])),
        workers=data.draw(st.sampled_from([1, 1, 2])),
    )
    assert result.column_names == ["k", "timestamp", "label", *view.feature_names]
    assert result.select(["k", "timestamp", "label"]).equals(table)
    rows = result.to_pylist()
    for (key, t), row in zip(labels, rows, strict=True):
        want = expected(view, events, key, t if inclusive else t - 1, mode)
        got = {name: row[name] for name in view.feature_names}
        assert got == (want or dict.fromkeys(view.feature_names)), (key, t, mode, inclusive)


# ---------------------------------------------------------------------- examples and errors


SOURCE = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts")
VIEW = FeatureView(
    "v",
    entity=ENTITY,
    source=SOURCE,
    features=[
        Aggregate(None, "count", window=10, hop=1, name="count_10"),
        Aggregate("x", "sum", window=10, hop=10, name="x_sum_10"),
    ],
)


def event(key: str, time: int, arrival: int, offset: int, x: float = 1.0) -> SourceEvent:
    return SourceEvent(
        {"k": key, "x": x, "n": None, "s": None, "ts": time}, time, arrival, Position("t", 0, offset)
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_archive(tmp_path, VIEW, [event("a", 100, 100, 0), event("a", 105, 120, 1, 2.0)])
    return tmp_path


def labels(*rows: tuple[str, int]) -> pa.Table:
    return pa.table(
        {
            "k": [k for k, _ in rows],
            "timestamp": pa.array([t for _, t in rows], type=pa.timestamp("ms", tz="UTC")),
        }
    )


def test_modes_and_boundaries(root: Path) -> None:
    """Events a@100 (arrived 100) and a@105 (arrived 120); count over [t - 9, t]."""
    table = labels(("a", 105), ("a", 108), ("a", 99), ("z", 108), ("a", 120), ("a", 100))

    def counts(mode: Mode, inclusive: bool) -> list[int | None]:
        out = training_set(table, ["v:count_10"], root=root, pipeline=[VIEW], mode=mode, inclusive=inclusive)
        assert out.select(["k", "timestamp"]).equals(table)
        return list(out.column("count_10").to_pylist())

    # 108: online had not yet seen the event at 105; 99: before a's first event (empty, not null);
    # z: never seen (null); 120: the window [111, 120] has moved past both events.
    assert counts("as_served", True) == [1, 1, 0, None, 0, 1]
    assert counts("event_time", True) == [2, 2, 0, None, 0, 1]
    # Just before t: the event at exactly 100 is no longer included at label time 100.
    assert counts("as_served", False) == [1, 1, 0, None, 0, 0]
    assert counts("event_time", False) == [1, 2, 0, None, 0, 0]


def test_pandas_polars_csv_labels_and_collisions(root: Path, tmp_path: Path) -> None:
    frame = pandas.DataFrame(
        {
            "k": ["a", "z"],
            "timestamp": pandas.to_datetime([105, 105], unit="ms", utc=True),
            "x_sum_10": [7, 8],
        }
    )
    out = training_set(frame, "v", root=root, pipeline=[VIEW])
    assert out.column_names == ["k", "timestamp", "x_sum_10", "count_10", "v__x_sum_10"]
    assert out.column("v__x_sum_10").to_pylist() == [1.0, None]
    assert training_set(polars.from_pandas(frame), "v:count_10", root=root, pipeline=[VIEW]).num_rows == 2
    csv = tmp_path / "labels.csv"
    csv.write_text("k,timestamp\na,1970-01-01T00:00:00.105Z\na,1970-01-01T01:00:00.105+01:00\n")
    assert training_set(csv, "v:count_10", root=root, pipeline=[VIEW]).column("count_10").to_pylist() == [
        1,
        1,
    ]


@pytest.mark.parametrize(
    ("table", "refs", "message"),
    [
        (pa.table({"k": ["a"]}), "v", "no timestamp column"),
        (pa.table({"timestamp": pa.array([1], pa.timestamp("ms", tz="UTC"))}), "v", "join-key"),
        (pa.table({"k": ["a"], "timestamp": pa.array([1], pa.timestamp("ms"))}), "v", "naive"),
        (pa.table({"k": ["a"], "timestamp": ["2024-01-01T00:00:00"]}), "v", "no UTC offset"),
        (pa.table({"k": ["a"], "timestamp": ["yesterday"]}), "v", "not ISO 8601"),
        (pa.table({"k": ["a"], "timestamp": [1]}), "v:nope", "no feature 'nope'"),
        (pa.table({"k": ["a"], "timestamp": [1]}), "w", "unknown feature view 'w'"),
        (pa.table({"k": ["a"], "timestamp": [-(10**11)]}), "v", "after the latest label"),
    ],
)
def test_errors_before_work(root: Path, table: pa.Table, refs: str, message: str) -> None:
    with pytest.raises(OfflineError, match=message):
        training_set(table, refs, root=root, pipeline=[VIEW])


def test_workers_checked(root: Path) -> None:
    with pytest.raises(OfflineError, match="workers must be at least 1"):
        training_set(labels(("a", 110)), "v", root=root, pipeline=[VIEW], workers=0)
    for workers in (1, 2, None):
        out = training_set(
            labels(("a", 105), ("a", 99), ("b", 105)),
            "v",
            root=root,
            pipeline=[VIEW],
            mode="event_time",
            workers=workers,
            events_per_bucket=1,
        )
        assert out.column("count_10").to_pylist() == [2, 0, None]


def _counts_in_a_pool_worker(root: Path) -> list[Any]:
    table = labels(("a", 105), ("b", 105))
    out = training_set(
        table, "v", root=root, pipeline=[VIEW], mode="event_time", workers=2, events_per_bucket=1
    )
    return out.column("count_10").to_pylist()


def test_workers_inside_a_daemonic_process(root: Path) -> None:
    """A multiprocessing.Pool worker may not start processes: the replay stays in it."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_counts_in_a_pool_worker, (root,)) == [2, None]


def test_no_archive(tmp_path: Path) -> None:
    with pytest.raises(OfflineError, match="no archived events"):
        training_set(labels(("a", 1)), "v", root=tmp_path, pipeline=[VIEW])


def test_command_writes_parquet_and_csv(root: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    labels_path = tmp_path / "labels.parquet"
    pq.write_table(labels(("a", 105), ("z", 105)), labels_path)
    report = training_set_command(
        labels_path, ["v:count_10"], tmp_path / "out" / "set.parquet", [VIEW], root=root
    )
    assert (report.rows, report.features) == (2, 1)
    assert pq.read_table(report.path).column("count_10").to_pylist() == [1, None]
    as_csv = training_set_command(labels_path, ["v"], tmp_path / "set.csv", [VIEW], "event_time", root=root)
    assert as_csv.path.read_text().splitlines()[0] == '"k","timestamp","count_10","x_sum_10"'
    assert not list(tmp_path.rglob(".*"))
    with pytest.raises(OfflineError, match="must end in"):
        training_set_command(labels_path, ["v"], tmp_path / "set.json", [VIEW], root=root)


class Visit(BaseModel):
    user: str
    shop: int
    spent: float
    ts: int


def test_composite_keys_across_buckets(tmp_path: Path) -> None:
    source = KafkaSource("visits", topic="visits", schema=Visit, timestamp_field="ts")
    view = FeatureView(
        "visits",
        entity=Entity("user_shop", join_keys=["user", "shop"]),
        source=source,
        features=[Aggregate("spent", "sum", name="spent"), Aggregate(None, "count", name="visits")],
    )
    events = [
        SourceEvent(
            {"user": u, "shop": s, "spent": float(i), "ts": BASE + i},
            BASE + i,
            BASE + i,
            Position("visits", 0, i),
        )
        for i, (u, s) in enumerate([("u1", 1), ("u1", 2), ("u2", 1), ("u1", 1), ("u|1", 1), ("u2", 1)])
    ]
    write_archive(tmp_path, view, events)
    table = pa.table(
        {
            "user": ["u1", "u1", "u2", "u|1", "u1", "u3"],
            "shop": [1, 2, 1, 1, 1, 1],
            "timestamp": pa.array(
                [BASE + 10, BASE + 10, BASE + 10, BASE + 10, BASE + 2, BASE + 10],
                pa.timestamp("ms", tz="UTC"),
            ),
        }
    )
    for per_bucket in (2_000_000, 1):
        out = training_set(table, "visits", root=tmp_path, pipeline=[view], events_per_bucket=per_bucket)
        assert out.column("spent").to_pylist() == [3.0, 1.0, 7.0, 4.0, 0.0, None]
        assert out.column("visits").to_pylist() == [2, 1, 2, 1, 1, None]


@settings(max_examples=200, deadline=None)
@given(views(), streams())
def test_late_check_flags_every_key_with_a_too_late_event(
    view: FeatureView, events: list[SourceEvent]
) -> None:
    """event_time skips the acceptance replay of a key only when its running maximum proves that
    no event of it is rejected as too late; every key the engine rejects one of must be flagged."""
    import numpy as np

    from streamfs.records import TOO_LATE
    from streamfs.training.replay import _maybe_late

    view = FeatureView("v", entity=ENTITY, source=view.source, features=view.features)  # no transform
    ordered = arrival_order(events)
    codes = {key: i for i, key in enumerate(sorted({e.fields["k"] for e in ordered}))}
    ordered.sort(key=lambda e: codes[e.fields["k"]])  # stable: arrival order within a key
    units = np.asarray([codes[e.fields["k"]] for e in ordered], dtype=np.int64)
    times = np.asarray([e.event_time for e in ordered], dtype=np.int64)
    starts = np.searchsorted(units, np.arange(len(codes)))
    everything = np.ones(len(units), dtype=np.bool_)
    flags = _maybe_late(units, times, everything, starts, view.source.allowed_lateness)
    rejected = ViewEngine(view).process(ordered, rows=False).rejected
    by_position = events_by_position(ordered)
    late = {codes[by_position[r.position].fields["k"]] for r in rejected if r.reason == TOO_LATE}
    assert all(flags[code] for code in late)


def events_by_position(events: list[SourceEvent]) -> dict[Position | None, SourceEvent]:
    return {e.position: e for e in events}
