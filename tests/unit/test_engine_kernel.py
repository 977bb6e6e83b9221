"""The compiled kernel (streamfs/engine/kernel) against the Python engine and the reference.

The kernel must be an exact twin of the Python engine: the same rows, the same rejections
(reason and message), the same evaluations and serving state, the same snapshots (with allowed
lateness the kernel settles buffered events eagerly, so there its snapshots only round-trip),
across batch splits, snapshot/restore (in both directions), partition drops, pruning, and the
hand-over to the Python engine when an event carries a value the kernel cannot hold exactly.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from engine_reference import Ev, ReferenceView
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfs.definitions import Aggregate, AggregationName, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.engine import view as view_module
from streamfs.engine.kernel import KernelLayout, distinct, prepared, store
from streamfs.engine.kernel import batch as kernel_batch
from streamfs.online.layout import EntryReader, ViewMeta, encode_entries, encode_entry
from streamfs.online.packed import MAGIC
from streamfs.records import Position, SourceEvent

KERNEL_FUNCTIONS: list[AggregationName] = [
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "count_distinct",
    "last",
    "first",
]
WINDOWS = [(None, None), (10, 10), (12, 4), (30, 5), (7, 1)]
FIELD_FOR: dict[str, list[str | None]] = {
    "count": ["x", "s", "n", None],
    "count_distinct": ["s", "n", "x"],
    "min": ["x", "n"],
    "max": ["x", "n"],
    "last": ["x", "n", "s"],
    "first": ["x", "n", "s"],
}
ODD_FLOATS = [1e-30, 2.0**90, -(2.0**-100)]  # not representable in the kernel's fixed point
ODD_INTS = [2**60, -(2**55)]  # beyond 2**53


def make_view(features: list[Aggregate], lateness: int = 0, ttl: int | None = None) -> FeatureView:
    source = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts", allowed_lateness=lateness)
    return FeatureView("v", entity=Entity("e", join_keys=["k"]), source=source, features=features, ttl=ttl)


@st.composite
def kernel_views(draw: st.DrawFn) -> FeatureView:
    functions = draw(st.lists(st.sampled_from(KERNEL_FUNCTIONS), min_size=1, max_size=8))
    features = []
    for i, function in enumerate(functions):
        field = draw(st.sampled_from(FIELD_FOR.get(function, ["x", "n"])))
        length, hop = draw(st.sampled_from(WINDOWS))
        features.append(Aggregate(field, function, window=length, hop=hop, name=f"f{i}"))
    lateness = draw(st.sampled_from([0, 0, 3, 8, 50]))
    return make_view(features, lateness, ttl=draw(st.sampled_from([None, 25])))


@st.composite
def streams(draw: st.DrawFn, odd: bool = False) -> list[SourceEvent]:
    size = draw(st.integers(0, 80))
    keys = draw(st.sampled_from([["a"], ["a", "b"], ["a", "b", "c", "d", "e"]]))
    partitions = draw(st.sampled_from([1, 1, 2]))
    time = draw(st.integers(-40, 40))
    floats = [0.1, 0.2, 1e16, -3.5, 7.0, 1 / 3, 2.5e-8, 123.45]
    ints = st.integers(-5, 5)
    if odd:
        floats += ODD_FLOATS
        ints = st.one_of(ints, st.sampled_from(ODD_INTS))
    events = []
    for offset in range(size):
        time += draw(st.sampled_from([0, 0, 1, 2, 3, 5, 40, -2, -6, -60]))
        key = draw(st.sampled_from(keys))
        fields: dict[str, Any] = {
            "k": key,
            "x": draw(st.one_of(st.none(), st.sampled_from(floats))),
            "n": draw(st.one_of(st.none(), ints)),
            "s": draw(st.one_of(st.none(), st.sampled_from(["m1", "m2", "m3", "m4"]))),
            "ts": time,
        }
        partition = keys.index(key) % partitions
        events.append(SourceEvent(fields, time, 1_000 + offset, Position("t", partition, offset)))
    return events


@pytest.fixture(autouse=True)
def small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the count_distinct pool tiny, so random streams prune and grow it too, and compact
    interned values early, so streams with many of them go through a fresh store."""
    monkeypatch.setattr(store, "_MIN_POOL", 4)
    monkeypatch.setattr(view_module, "COMPACT_AT", 20)


def complete_at(data: st.DataObject) -> int:
    """How many buffered events make a key keep complete tiles (batch.COMPLETE_AT), drawn so that
    both ways of reading a row with allowed lateness run: 1 keeps them for every key."""
    return data.draw(st.sampled_from([1, 3, kernel_batch.COMPLETE_AT]), label="complete_at")


def run_both(
    view: FeatureView, events: list[SourceEvent], cuts: list[int], restore_at: int | None, cross: bool
) -> tuple[ViewEngine, ViewEngine, list[Any], list[Any]]:
    """Run the kernel and the Python engine over the same batches; at restore_at, each restores
    its own snapshot (or, with cross, the other engine's)."""
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    assert kernel.kernel_refusal is None and kernel.uses_kernel
    assert not python.uses_kernel
    out: dict[str, list[Any]] = {"kernel": [], "python": []}
    previous = 0
    for cut in [*cuts, len(events)]:
        for name, engine in (("kernel", kernel), ("python", python)):
            result = engine.process(events[previous:cut])
            out[name].append(
                ([(r.key, r.event_time, r.position, r.values) for r in result.rows], result.filtered)
            )
            out[name].append([(r.reason, r.detail, r.position) for r in result.rejected])
        previous = cut
        if kernel._kernel is not None:  # prune may run before any batch: make it run here
            kernel._kernel._prune(len(kernel._kernel.table))
        if cut == restore_at:
            snapshots = {
                name: [json.loads(json.dumps(e.snapshot(p))) for p in e.partitions]
                for name, e in (("kernel", kernel), ("python", python))
            }
            if view.source.allowed_lateness == 0:  # else the buffers may settle at other times
                portable = [[e.portable_snapshot(p) for p in e.partitions] for e in (kernel, python)]
                assert portable[0] == portable[1]
            kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
            for name, engine in (("kernel", kernel), ("python", python)):
                source = ("python" if name == "kernel" else "kernel") if cross else name
                for snapshot in snapshots[source]:
                    engine.restore(snapshot)
    return kernel, python, out["kernel"], out["python"]


def typed(read: tuple[list[Any], list[Any]]) -> Any:
    """EntryReader.read's answer with each value's type next to it (3 and 3.0 differ)."""
    values, freshness = read
    return [[(type(value), value) for value in row] for row in values], freshness


def assert_same_state(kernel: ViewEngine, python: ViewEngine) -> None:
    assert kernel.partitions == python.partitions
    assert sorted(kernel.keys()) == sorted(python.keys())
    assert dirty(kernel) == dirty(python)  # (taken: both forget them)
    for partition in python.partitions:
        snapshot = kernel.snapshot(partition)
        portable = kernel.portable_snapshot(partition)
        if kernel.view.source.allowed_lateness == 0:
            assert portable == python.portable_snapshot(partition)
        again = ViewEngine(kernel.view)
        again.restore(json.loads(json.dumps(snapshot)))
        if kernel.uses_kernel:  # the kernel's own format round-trips exactly (a Python engine's
            # portable snapshot may hold expired tiles the kernel drops on load)
            assert again.snapshot(partition) == snapshot
            assert again.portable_snapshot(partition) == portable
            on_python = ViewEngine(kernel.view, kernel=False)
            on_python.restore(json.loads(json.dumps(snapshot)))
            assert on_python.portable_snapshot(partition) == portable
        for key in again.keys(partition):
            watermark = python.watermark(key)
            assert watermark is not None
            assert again.evaluate(key, watermark + 4) == python.evaluate(key, watermark + 4)
    keys = python.keys(None)
    python_entries = [encode_entry(state, "fp", 5) for state in python.serving_states(keys)]  # type: ignore[arg-type]
    meta = dataclasses.replace(ViewMeta.from_engine(kernel), fingerprint="fp")
    reader = EntryReader(meta, list(kernel.view.feature_names))
    for engine in (kernel, python):
        entries = encode_entries(engine.serving_columns([*keys, ("absent",)]), "fp", 5)
        assert entries[-1] is None
        if not engine.uses_kernel:  # the bulk encoder writes what encode_entry writes, byte for byte
            assert entries == [*python_entries, None]
        # on the kernel, entries are packed where they can be (online/packed.py), else the same
        # JSON; either way a reader gets the same values, of the same types, and freshness
        for key, ours, theirs in zip(keys, entries, python_entries, strict=False):
            assert ours is not None
            assert ours == theirs or ours[:1] == MAGIC[:1]
            watermark = python.watermark(key)
            assert watermark is not None
            for delta in (-3, 0, 1, 4, 5, 11, 30, 31, 200):
                read_ours, read_theirs = (reader.read([raw], watermark + delta) for raw in (ours, theirs))
                assert typed(read_ours) == typed(read_theirs)
    for key in keys:
        watermark = python.watermark(key)
        assert watermark is not None and kernel.watermark(key) == watermark
        assert kernel.serving_state(key) == python.serving_state(key)
        for delta in (0, 1, 4, 5, 11, 30, 31, 200):
            assert kernel.evaluate(key, watermark + delta) == python.evaluate(key, watermark + delta)
            assert kernel.serve(key, watermark + delta) == python.serve(key, watermark + delta)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_views(), streams(), st.data())
def test_kernel_matches_python_engine_and_reference(
    view: FeatureView, events: list[SourceEvent], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    restore_at = data.draw(st.sampled_from([None, *cuts])) if cuts else None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernel_batch, "COMPLETE_AT", complete_at(data))
        kernel, python, kernel_out, python_out = run_both(
            view, events, cuts, restore_at, data.draw(st.booleans())
        )
    assert kernel_out == python_out
    assert kernel.uses_kernel  # no odd values: the kernel ran everything
    assert_same_state(kernel, python)

    expected_rows, expected_rejected = ReferenceView(view).process(events)
    rows = [(key, time, values) for batch in kernel_out[::2] for key, time, _, values in batch[0]]
    assert rows == expected_rows
    assert [reason for batch in kernel_out[1::2] for reason, _, _ in batch] == expected_rejected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_views(), streams(odd=True), st.data())
def test_kernel_hands_odd_values_to_the_python_engine(
    view: FeatureView, events: list[SourceEvent], data: st.DataObject
) -> None:
    """A float outside the fixed point or an int beyond 2**53 moves the view to the Python
    engine mid-batch; nothing changes in what comes out."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=3)))
    restore_at = data.draw(st.sampled_from([None, *cuts])) if cuts else None
    kernel, python, kernel_out, python_out = run_both(view, events, cuts, restore_at, False)
    assert kernel_out == python_out
    assert_same_state(kernel, python)


def dirty(engine: ViewEngine) -> dict[int, list[Any]]:
    """The engine's changed keys (taken), by partition, sorted; partitions without any left out."""
    return {p: sorted(keys) for p, keys in sorted(engine.take_dirty_by_partition().items()) if keys}


def ev(t: int, key: str = "a", partition: int = 0, **fields: Any) -> SourceEvent:
    return SourceEvent({"k": key, "ts": t, **fields}, t, t, Position("t", partition, t))


def test_an_unrepresentable_float_moves_the_view_to_the_python_engine() -> None:
    view = make_view([Aggregate("x", "sum", window=10, hop=5), Aggregate("x", "count")])
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    events = [ev(1, x=0.5), ev(2, x=1e-30), ev(3, x=0.25)]
    rows = [r.values for r in kernel.process(events).rows]
    assert not kernel.uses_kernel
    assert (
        rows
        == [r.values for r in python.process(events).rows]
        == [(0.5, 1), (0.5 + 1e-30, 2), (0.75 + 1e-30, 3)]
    )


def test_an_int_sum_leaving_int64_moves_the_view_to_the_python_engine() -> None:
    view = make_view([Aggregate("n", "sum")])
    kernel = ViewEngine(view)
    big = 2**52
    result = kernel.process([ev(t, n=big) for t in range(1, 2100)])
    assert not kernel.uses_kernel
    assert result.rows[-1].values == (2099 * big,)  # beyond int64, exact, as the Python engine gives


def test_a_dropped_partition_leaves_nothing_behind_for_the_keys_that_reuse_its_rows() -> None:
    view = make_view([Aggregate("s", "count_distinct", window=10, hop=5), Aggregate("x", "max")])
    engine = ViewEngine(view)
    engine.process([ev(1, "a", 0, s="m1", x=9.0), ev(2, "b", 0, s="m2", x=8.0)])
    engine.drop(0)
    assert engine.keys() == [] and engine.evaluate(("a",), 2) is None
    result = engine.process([ev(3, "c", 1, s="m1", x=1.0), ev(4, "d", 1, s="m3", x=2.0)])
    assert engine.uses_kernel
    assert [r.values for r in result.rows] == [(1, 1.0), (1, 2.0)]


def test_serving_steps_count_a_buffered_value_once_at_its_latest_time() -> None:
    """A value settled in the window (m1 at 0) and buffered again (m1 at 16, within the allowed
    lateness): the online steps count it once, in the tile of its latest time, so it stays
    counted until that tile leaves the window. (Short buffers are read with the settled tiles,
    not complete tiles: the serving steps fold the buffer in themselves.)"""
    view = make_view(
        [Aggregate("s", "count_distinct", window=20, hop=5), Aggregate("x", "max", window=20, hop=5)],
        lateness=10,
    )
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    events = [ev(0, s="m1", x=3.0), ev(15, s="m2", x=1.0), ev(16, s="m1", x=2.0)]
    for engine in (kernel, python):
        engine.process(events)
    assert kernel.uses_kernel
    state = kernel.serving_state(("a",))
    assert state == python.serving_state(("a",))
    assert state is not None
    # the window at 16 holds m1 (twice) and m2; at 20 tile 0 (m1 at 0, max 3.0) has left, m1
    # still counts by its time 16; from 35 on nothing is left
    assert state.groups[0] == ((16, 20, 35), ((3.0, 2), (2.0, 2), (None, 0)))  # (max, distinct)
    assert_same_state(kernel, python)


@pytest.mark.parametrize("lateness", [0, 7])
@pytest.mark.parametrize("fields", [1, 2])
def test_count_distinct_survives_pruning_and_growth_of_its_table(lateness: int, fields: int) -> None:
    """Thousands of distinct values per key expire and come back: the entry pool is pruned and
    grown many times; every row still equals the Python engine's. With two fields, the table's
    rows name (key, field) pairs that a rebuild must split back (distinct.split_pair)."""
    features = [Aggregate("s", "count_distinct", window=30, hop=5), Aggregate("s", "count_distinct")]
    if fields == 2:
        features.append(Aggregate("n", "count_distinct", window=20, hop=5))
    view = make_view(features, lateness)
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    events = [
        ev(t - (t % 3) * 2, f"k{t % 7}", s=f"v{(t * 7919) % 3001}", n=(t * 104729) % 2003)
        for t in range(20_000)
    ]
    for start in range(0, len(events), 2_500):
        batch = events[start : start + 2_500]
        assert [r.values for r in kernel.process(batch).rows] == [
            r.values for r in python.process(batch).rows
        ]
    assert kernel.uses_kernel
    assert_same_state(kernel, python)


def test_growing_the_store_keeps_rows_of_keys_with_complete_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Growth (1,024 keys and every doubling) leaves the new rows' cells as calloc gives them and
    starts the complete tiles over (KernelStore._grow): hot keys whose rows read complete tiles,
    with events out of order within the allowed lateness before and after each growth, still get
    the Python engine's rows, state and serving steps."""
    monkeypatch.setattr(kernel_batch, "COMPLETE_AT", 1)  # every key with a buffer keeps them
    features = [
        Aggregate("x", "sum", window=12, hop=4),
        Aggregate("x", "max", window=12, hop=4),
        Aggregate("s", "count_distinct", window=30, hop=5),
        Aggregate("s", "last"),
        Aggregate("x", "mean"),
    ]
    view = make_view(features, lateness=6)
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    events = []
    for t in range(3_000):  # a new key at every event (3,000 keys: two growths), hot keys between
        events.append(ev(t, f"k{t}", x=float(t % 7), s=f"v{t % 5}"))
        events.append(ev(t - (t % 4), f"hot{t % 3}", x=float(t % 11) / 4, s=f"v{t % 9}"))
    for start in range(0, len(events), 700):
        batch = events[start : start + 700]
        rows = [r.values for r in kernel.process(batch).rows]
        assert rows == [r.values for r in python.process(batch).rows]
    assert kernel.uses_kernel and kernel._kernel is not None and kernel._kernel.capacity == 4096
    for key in ("hot0", "hot1", "hot2"):
        assert kernel.serving_state((key,)) == python.serving_state((key,))
    assert_same_state(kernel, python)


def test_growths_prepared_on_a_thread_give_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The count_distinct table's, the buffer pool's and the per-key arrays' next arrays, made
    ahead on a thread (kernel/prepared.py), are what their growths take, and rows, serving
    steps and state stay the Python engine's."""
    monkeypatch.setattr(store, "_PREPARE_FROM", 64)
    monkeypatch.setattr(store, "_PREPARE_KEYS", 1024)
    monkeypatch.setattr(kernel_batch, "COMPLETE_AT", 1)  # (complete tiles start over at growth)
    taken = {"table": 0, "buffer": 0, "keys": 0}

    class Counted(prepared.Prepared[Any]):
        def take(self, size: int) -> Any:
            made = super().take(size)
            if made is not None:
                kind = "table" if isinstance(made, np.ndarray) else "buffer" if len(made) == 5 else "keys"
                taken[kind] += 1
            return made

    monkeypatch.setattr(store, "Prepared", Counted)
    features = [
        Aggregate("s", "count_distinct", window=2_000, hop=100),
        Aggregate("x", "sum", window=300, hop=100),
        Aggregate("x", "max", window=300, hop=100),
        Aggregate("s", "last"),
    ]
    view = make_view(features, lateness=1_000)  # ~1,000 buffered events: the pool grows to 1,024
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    events = []
    for t in range(5_000):  # hot keys, and a new key at every other event (2,500: two growths)
        events.append(ev(t - (t % 5) * 3, f"k{t % 40}", x=float(t % 13), s=f"v{t}"))
        if t % 2:
            events.append(ev(t, f"n{t}", x=1.0, s="v"))
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]
        rows = [r.values for r in kernel.process(batch).rows]
        assert rows == [r.values for r in python.process(batch).rows]
    assert kernel.uses_kernel and kernel._kernel is not None and kernel._kernel.capacity == 4096
    assert taken["table"] >= 2 and taken["buffer"] >= 2 and taken["keys"] == 2, taken
    for key in ("k0", "k1", "n4999"):
        assert kernel.serving_state((key,)) == python.serving_state((key,))
    assert_same_state(kernel, python)


@pytest.mark.parametrize("lateness", [0, 7])
def test_both_ways_of_listing_count_distinct_entries_agree(lateness: int) -> None:
    """snapshot.take lists a partition's count_distinct values by walking its keys' rows or, for
    a fair share of the table's keys, by one pass over the table (distinct.scan_live_entries):
    both give the same entries in the same order, with dead rows of a dropped partition, expired
    values and two fields in the table, for any set of keys."""
    features = [
        Aggregate("s", "count_distinct", window=200, hop=10),
        Aggregate("x", "count_distinct", window=50, hop=5),
    ]
    engine = ViewEngine(make_view(features, lateness))
    key = [(f"k{k}", k % 5) for k in range(23)]  # (key, its partition)
    events = [ev(t - (t % 3), *key[t % 23], s=f"v{(t * 7919) % 41}", x=float(t % 13)) for t in range(2_000)]
    engine.process(events[:1_000])
    engine.drop(4)  # its rows become DEAD
    engine.process(events[1_000:])
    kernel = engine._kernel
    assert engine.uses_kernel and kernel is not None
    reached = kernel.reach()
    chosen = [sorted(keyed.values()) for keyed in kernel.partitions.values()]
    chosen += [list(kernel.partitions[0].values())[::-1], [], [slot for keyed in chosen for slot in keyed]]
    listed = 0
    for slots in chosen:
        slots_array = np.array(slots, dtype=np.int64)
        walked = distinct.live_entries(kernel.table, kernel.heads, slots_array, reached)
        scanned = distinct.scan_live_entries(kernel.table, kernel.heads, slots_array, reached)
        assert [a.tolist() for a in walked] == [a.tolist() for a in scanned]
        listed += len(walked[0])
    everything = distinct.live_entries(kernel.table, kernel.heads, np.array(chosen[-1]), reached)
    assert listed > 100 and set(everything[1].tolist()) == {0, 1}  # (both fields)


@pytest.mark.parametrize("lateness", [0, 7])
def test_warm_up_changes_nothing(lateness: int) -> None:
    """ViewEngine.warm_up (the worker calls it before consuming, kernel/warmup.py) runs the
    kernel's functions with no events and no keys: the engine holds nothing after it, and the
    same batches then give the same rows and state as on an engine that was not warmed up."""
    features = [Aggregate("x", "sum", window=12, hop=4), Aggregate("s", "count_distinct", window=30, hop=5)]
    view = make_view(features, lateness)
    warmed, cold = ViewEngine(view), ViewEngine(view)
    warmed.warm_up()
    assert warmed.uses_kernel and warmed.keys() == [] and warmed.take_dirty() == []
    events = [ev(t, f"k{t % 5}", x=float(t % 11), s=f"v{t % 13}") for t in range(400)]
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]
        assert [r.values for r in warmed.process(batch).rows] == [r.values for r in cold.process(batch).rows]
    assert_same_state(warmed, cold)


@pytest.mark.parametrize("lateness", [0, 7])
def test_interned_values_that_expired_are_compacted_away(lateness: int) -> None:
    """A long-running view with ever new count_distinct values (say, IP addresses over 30 ms)
    must not keep every value it ever saw: past COMPACT_AT ids the kernel moves its state to a
    fresh store that interns only what is still held; nothing changes in the output."""
    view = make_view([Aggregate("s", "count_distinct", window=30, hop=5), Aggregate("s", "last")], lateness)
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    events = [ev(t, f"k{t % 5}", s=f"v{t}") for t in range(5_000)]
    for start in range(0, len(events), 500):
        batch = events[start : start + 500]
        assert [r.values for r in kernel.process(batch).rows] == [
            r.values for r in python.process(batch).rows
        ]
    assert kernel._kernel is not None
    assert len(kernel._kernel.id_values) < 2_500  # of 5,000 seen
    assert_same_state(kernel, python)


def test_rejections_keep_their_order_within_a_batch() -> None:
    view = make_view([Aggregate("x", "sum")])
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    events = [ev(5, x=1.0), ev(3, x=1.0), ev(6, x=float("nan")), ev(2, x=2.0), SourceEvent({"ts": 7}, 7, 7)]
    got = [(r.reason, r.detail) for r in kernel.process(events).rejected]
    assert got == [(r.reason, r.detail) for r in python.process(events).rejected]
    assert [reason for reason, _ in got] == ["too_late", "bad_value", "too_late", "missing_key"]


@pytest.mark.parametrize(
    ("features", "lateness", "reason"),
    [
        ([Aggregate("x", "stddev", window=10, hop=5)], 0, "stddev or variance"),
        ([Aggregate("s", "max")], 0, "a numeric aggregation of 's', not an int or float"),
        ([Aggregate("x", "sum", window=1000, hop=1)], 0, "1000 tiles per key (more than 512)"),
    ],
)
def test_views_the_kernel_does_not_run_say_why(features: list[Aggregate], lateness: int, reason: str) -> None:
    engine = ViewEngine(make_view(features, lateness))
    assert not engine.uses_kernel
    assert engine.kernel_refusal == reason
    assert isinstance(KernelLayout.build(engine.compiled), str)


def test_streamfs_engine_python_turns_the_kernel_off(monkeypatch: pytest.MonkeyPatch) -> None:
    view = make_view([Aggregate("x", "sum")])
    assert ViewEngine(view).uses_kernel
    monkeypatch.setenv("STREAMFS_ENGINE", "python")
    assert not ViewEngine(view).uses_kernel


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_views(), st.one_of(streams(), streams(odd=True)), st.data())
def test_answers_asked_during_a_replay_match_the_python_engine(
    view: FeatureView, events: list[SourceEvent], data: st.DataObject
) -> None:
    """process_answering (training sets): each ask is answered as serve/evaluate would answer
    right after its position, by the kernel inside its loop and by the Python engine alike."""
    serve = data.draw(st.booleans())
    positions = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=12)))
    asks = [
        (position, (data.draw(st.sampled_from(["a", "b", "c", "zz"])),), data.draw(st.integers(-50, 400)))
        for position in positions
    ]
    cut = data.draw(st.integers(0, len(events)))
    kernel, python = ViewEngine(view), ViewEngine(view, kernel=False)
    for engine in (kernel, python):
        engine.process(events[:cut], rows=False)
    shifted = [(max(position - cut, 0), key, t) for position, key, t in asks if position >= cut]
    got = kernel.process_answering(events[cut:], shifted, serve=serve)
    expected = python.process_answering(events[cut:], shifted, serve=serve)
    assert got == expected
    assert len(got) == len(shifted)
    # and the Python engine answers as serve/evaluate do after each prefix
    fresh = ViewEngine(view, kernel=False)
    done = cut
    fresh.process(events[:cut], rows=False)
    for (position, key, t), (values, seen) in zip(shifted, expected, strict=True):
        fresh.process(events[done : cut + position], rows=False)
        done = cut + position
        assert values == (fresh.serve(key, t) if serve else fresh.evaluate(key, t))
        assert seen == (values is not None or fresh.watermark(key) is not None)
    assert_same_state(kernel, python)


def as_table(events: list[SourceEvent]) -> pa.Table:
    """Events as archive-like columns (schema fields, event_time, partition)."""
    return pa.table(
        {
            "k": [e.fields["k"] for e in events],
            "x": pa.array([e.fields["x"] for e in events], pa.float64()),
            "n": pa.array([e.fields["n"] for e in events], pa.int64()),
            "s": pa.array([e.fields["s"] for e in events], pa.string()),
            "event_time": pa.array([e.event_time for e in events], pa.timestamp("ms", tz="UTC")),
            "partition": [e.position.partition if e.position else 0 for e in events],
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_views(), st.one_of(streams(), streams(odd=True)), st.data())
def test_archive_columns_answer_like_events(
    view: FeatureView, events: list[SourceEvent], data: st.DataObject
) -> None:
    """process_table_answering (the columnar path of training sets) answers and leaves the state
    exactly as process_answering over the same rows as events; where it stops (an odd value),
    the rest runs as events on the Python engine."""
    serve = data.draw(st.booleans())
    positions = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=10)))
    asks = [
        (p, (data.draw(st.sampled_from(["a", "b", "zz"])),), data.draw(st.integers(-50, 400)))
        for p in positions
    ]
    columnar, rows = ViewEngine(view), ViewEngine(view, kernel=False)
    done = columnar.process_table_answering(as_table(events), asks, serve=serve)
    if done is None:  # an int beyond 2**53: the caller uses events from the start
        assert any(type(e.fields["n"]) is int and abs(e.fields["n"]) >= 2**53 for e in events)
        return
    answers, ran = done
    if ran < len(events) or len(answers) < len(asks):
        assert not columnar.uses_kernel
        rest = [(p - ran, key, t) for p, key, t in asks[len(answers) :]]
        answers += columnar.process_answering(events[ran:], rest, serve=serve)
    assert answers == rows.process_answering(events, asks, serve=serve)
    assert_same_state(columnar, rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_views(), st.one_of(streams(), streams(odd=True)), st.data())
def test_process_table_gives_the_rows_process_gives(
    view: FeatureView, events: list[SourceEvent], data: st.DataObject
) -> None:
    """process_table (columns in, an Arrow table of rows out) = process on the same events."""
    cut = data.draw(st.integers(0, len(events)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernel_batch, "COMPLETE_AT", complete_at(data))
        columnar, rows = ViewEngine(view), ViewEngine(view, kernel=False)
    for engine in (columnar, rows):
        engine.process(events[:cut])
    expected = rows.process(events[cut:])
    on_kernel = columnar.uses_kernel
    result = columnar.process_table(as_table(events[cut:]))
    if result is None:  # no kernel, or a value the checks or the fixed point need the row path for
        odd = {*ODD_FLOATS, *ODD_INTS}
        assert not on_kernel or any(e.fields["x"] in odd or e.fields["n"] in odd for e in events[cut:])
        return
    got = result.rows.to_pylist()
    assert [(r["k"], int(r["event_time"].timestamp() * 1000)) for r in got] == [
        (r.key[0], r.event_time) for r in expected.rows
    ]
    assert [tuple(r[name] for name in view.feature_names) for r in got] == [r.values for r in expected.rows]
    assert result.rejected.tolist() == [
        i for i, e in enumerate(events[cut:]) if e.position in {r.position for r in expected.rejected}
    ]
    late = [events[cut:][i] for i in result.rejected.tolist()]
    assert [
        columnar.too_late_detail((e.fields["k"],), e.event_time, newest)
        for e, newest in zip(late, result.newest.tolist(), strict=True)
    ] == [r.detail for r in expected.rejected]
    assert_same_state(columnar, rows)


def test_an_int_field_summed_and_counted_distinct_keeps_its_values_ints_through_tables() -> None:
    """A field the kernel reads as numbers (a sum) and interns (count_distinct): its interned
    values are the column's own ints, not the floats the sum reads (hypothesis found the
    portable snapshot of process_table holding 1.0 where process, and the Python engine, hold 1,
    so that the values sorted differently)."""
    view = make_view([Aggregate("n", "sum"), Aggregate("n", "count_distinct")])
    columnar, rows = ViewEngine(view), ViewEngine(view, kernel=False)
    events = [ev(t, x=None, n=n, s=None) for t, n in enumerate([None, 1, 0, 1])]
    result = columnar.process_table(as_table(events))
    assert result is not None and columnar.uses_kernel
    assert [tuple(r[name] for name in view.feature_names) for r in result.rows.to_pylist()] == [
        r.values for r in rows.process(events).rows
    ]
    ((_key, _partition, _seq, _buffer, groups),) = columnar.portable_snapshot(0)["keys"]
    values = [value for group in groups for window in group[1] for value, _time in window]
    assert sorted(values) == [0, 1] and all(type(value) is int for value in values)
    assert_same_state(columnar, rows)


def test_changed_keys_are_taken_once_by_partition_from_tables_and_events() -> None:
    """Tables mark their keys' rows (slots) changed, events their keys: both come back as keys,
    once each, by partition; too-late rows change nothing; take_dirty(partitions) takes only
    those; a dropped partition's marks go with it; leaving the kernel keeps them."""
    view = make_view([Aggregate("x", "sum", window=10, hop=5), Aggregate("s", "count_distinct")])
    engine = ViewEngine(view)
    assert engine.take_dirty_by_partition() == {}

    def table(events: list[SourceEvent]) -> pa.Table:
        return as_table([dataclasses.replace(e, fields={"n": 1, "s": "v", **e.fields}) for e in events])

    result = engine.process_table(table([ev(5, "a", 0, x=1.0), ev(6, "b", 0, x=2.0), ev(7, "a", 0, x=3.0)]))
    assert result is not None and engine.uses_kernel
    assert dirty(engine) == {0: [("a",), ("b",)]}
    assert dirty(engine) == {}  # taken
    result = engine.process_table(table([ev(1, "a", 0, x=1.0), ev(8, "c", 0, x=1.0)]))  # a's row: too late
    assert result is not None and result.rejected.tolist() == [0]
    engine.process([ev(9, "a", 1, x=1.0), ev(9, "c", 0, x=1.0)])
    assert dirty(engine) == {0: [("c",)], 1: [("a",)]}  # c from both paths: once

    engine.process_table(table([ev(10, "a", 0, x=1.0)]))
    engine.process([ev(10, "d", 1, x=1.0)])
    assert engine.take_dirty([1]) == [("d",)]
    assert dirty(engine) == {0: [("a",)]}

    engine.process_table(table([ev(11, "b", 0, x=1.0), ev(11, "e", 2, x=1.0)]))
    engine.drop(0)
    assert dirty(engine) == {2: [("e",)]}

    engine.process_table(table([ev(12, "f", 2, x=1.0)]))
    engine.process([ev(13, "g", 2, x=1e-30)])  # not representable: the view leaves the kernel
    assert not engine.uses_kernel
    assert dirty(engine) == {2: [("f",), ("g",)]}


def test_string_keys_and_values_found_by_their_bytes_match_the_python_engine() -> None:
    """Tables of one partition find string keys' slots and string values' ids by their bytes
    (kernel/keyindex.py). Keys that differ in one byte, share prefixes, are empty, non-ASCII or
    long; more keys than the index starts with (it grows); tables sliced out of larger ones
    (offsets), large_string columns, null values; a dropped partition whose keys come back on
    other rows: the same rows and state as the Python engine on the same events."""
    view = make_view(
        [Aggregate("x", "sum", window=10, hop=5), Aggregate("s", "count_distinct", window=10, hop=5)]
    )
    columnar, rows = ViewEngine(view), ViewEngine(view, kernel=False)
    odd_keys = ["", "a", "ab", "a\x00", "é", "e\u0301", "k" * 300, "🙂", "b"]
    keys = odd_keys + [f"card-{i}" for i in range(1500)]
    values = [None, "", "m", "é", "m" * 50]

    def batch(start: int, count: int, partition: int) -> list[SourceEvent]:
        return [
            SourceEvent(
                {
                    "k": keys[(i * 7) % len(keys)],
                    "x": float(i % 5),
                    "n": i,
                    "s": values[i % len(values)],
                    "ts": start + i,
                },
                start + i,
                start + i,
                Position("t", partition, start + i),
            )
            for i in range(count)
        ]

    def run(events: list[SourceEvent], large: bool = False, sliced: bool = False) -> None:
        table = as_table(events)
        if large:
            wide = [f.with_type(pa.large_string()) if f.type == pa.string() else f for f in table.schema]
            table = table.cast(pa.schema(wide))
        if sliced:  # the same rows at an offset into larger buffers
            table = pa.concat_tables([as_table(events[:3]), table]).slice(3)
        result = columnar.process_table(table)
        assert result is not None and columnar.uses_kernel
        expected = rows.process(events).rows
        got = result.rows.to_pylist()
        assert [r["k"] for r in got] == [r.key[0] for r in expected]
        assert [tuple(r[name] for name in view.feature_names) for r in got] == [r.values for r in expected]

    run(batch(0, 4000, partition=0))
    run(batch(4000, 3000, partition=0), sliced=True)
    run(batch(7000, 3000, partition=1), large=True)
    columnar.drop(0)
    rows.drop(0)
    run(batch(10_000, 2000, partition=1))  # partition 0's rows now hold partition 1's new keys
    run(batch(12_000, 2000, partition=0), sliced=True)  # partition 0 again: from scratch
    assert_same_state(columnar, rows)


def test_key_index_adds_a_batch_of_strings_at_once() -> None:
    """KeyIndex.add_strings: the chosen rows of an Arrow string array are found by their bytes
    afterwards (past several growths of every array in one call); the other rows are not."""
    from streamfs.engine.kernel.keyindex import EMPTY, KeyIndex

    strings = pa.array([f"key-{i}" * (1 + i % 7) for i in range(5000)] + ["", "é"])
    offsets = np.frombuffer(strings.buffers()[1], np.int32).astype(np.int64)
    data = np.frombuffer(strings.buffers()[2], np.uint8)
    index = KeyIndex()
    index.add(strings[1].as_py().encode(), 77)  # one by one, then in bulk
    chosen = np.array([i for i in range(len(strings)) if i % 3 == 0 and i != 1], np.int64)
    index.add_strings(offsets, data, chosen, 1000 + chosen)
    found = index.lookup(offsets, data)
    expected = np.full(len(strings), EMPTY, np.int64)
    expected[chosen] = 1000 + chosen
    expected[1] = 77
    assert np.array_equal(found, expected)
    assert index.count == len(chosen) + 1


def test_a_batch_of_new_keys_gets_the_slots_that_one_by_one_would_give() -> None:
    """KernelStore.partition_slots (a batch's new keys allocated together) gives each key the
    slot slot() key by key gives: freed slots first, last freed first, then new rows, past
    several doublings of the store in one call; a key named twice gets one slot."""
    view = make_view([Aggregate("x", "sum", window=10, hop=5)])
    one_by_one, together = ViewEngine(view), ViewEngine(view)
    for engine in (one_by_one, together):
        engine.process([ev(1, "seed", partition=9, x=1.0)])
    a, b = one_by_one._kernel, together._kernel
    assert a is not None and b is not None
    first = [(f"k{i}",) for i in range(3_000)]
    assert b.partition_slots(0, first) == [a.slot(0, key) for key in first]
    a.drop(0)
    b.drop(0)
    second = [(f"n{i}",) for i in range(10_000)]
    expected = [a.slot(1, key) for key in second]
    assert b.partition_slots(1, second + second[:5]) == expected + expected[:5]
    assert (a.capacity, a.owner, a.free) == (b.capacity, b.owner, b.free)
    assert b.partition_slots(1, second[:3]) == expected[:3]  # known keys: nothing allocated
