"""The worker's checkpoint step skips partitions that have not moved since it last checkpointed them
(files only; no services needed)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from streamfs.checkpoint import CheckpointStore
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import Engine, ViewEngine
from streamfs.records import Position, SourceEvent
from streamfs.worker.checkpointing import Checkpointer


class Ev(BaseModel):
    k: str
    x: float
    ts: int


SOURCE = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts", allowed_lateness=5)
VIEW = FeatureView(
    "v", entity=Entity("e", join_keys=["k"]), source=SOURCE, features=[Aggregate("x", "sum", window="10s")]
)


def events(start: int, n: int, partition: int) -> list[SourceEvent]:
    return [
        SourceEvent(
            {"k": f"k{i % 3}", "x": float(i), "ts": 1_000 * i}, 1_000 * i, 0, Position("t", partition, i)
        )
        for i in range(start, start + n)
    ]


def saved(store: CheckpointStore, partition: int) -> list[Path]:
    return sorted(store.root.glob(f"t/p{partition:04d}/o*.json"))


def test_an_unmoved_partition_is_not_snapshotted_again(tmp_path: Path) -> None:
    engine = Engine([VIEW])
    store = CheckpointStore(tmp_path, "g")
    checkpointer = Checkpointer(engine, store, interval_s=30)
    [view_engine] = engine.for_topic("t")
    view_engine.process(events(0, 20, 0) + events(0, 10, 1))

    checkpointer.save([(("t", 0), 20), (("t", 1), 10)])
    first = {p: saved(store, p)[0].stat().st_mtime_ns for p in (0, 1)}
    view_engine.process(events(20, 5, 0))
    checkpointer.save([(("t", 0), 25), (("t", 1), 10)])  # the final commit, then the revoke

    assert [p.name for p in saved(store, 0)] == ["o000000000000020.json", "o000000000000025.json"]
    assert [p.name for p in saved(store, 1)] == ["o000000000000010.json"]
    assert saved(store, 1)[0].stat().st_mtime_ns == first[1]  # not rewritten

    # The skipped partition's checkpoint is still its exact state.
    restored = ViewEngine(VIEW)
    found = store.latest("t", 1, 10)
    assert found is not None
    restored.restore(found[1]["v"])
    assert restored.snapshot(1) == view_engine.snapshot(1)


def test_a_recovered_or_dropped_partition_is_checkpointed_again(tmp_path: Path) -> None:
    engine = Engine([VIEW])
    store = CheckpointStore(tmp_path, "g")
    checkpointer = Checkpointer(engine, store, interval_s=30)
    [view_engine] = engine.for_topic("t")
    view_engine.process(events(0, 20, 0))
    checkpointer.save([(("t", 0), 20)])
    saved(store, 0)[0].unlink()  # e.g. discarded by a recovery elsewhere

    checkpointer.forget(("t", 0))
    checkpointer.save([(("t", 0), 20)])

    assert [p.name for p in saved(store, 0)] == ["o000000000000020.json"]


def test_a_background_checkpoint_is_the_same_file_written_by_a_child(tmp_path: Path) -> None:
    engine = Engine([VIEW])
    [view_engine] = engine.for_topic("t")
    view_engine.process(events(0, 20, 0))
    in_loop, forked = CheckpointStore(tmp_path / "a", "g"), CheckpointStore(tmp_path / "b", "g")
    Checkpointer(engine, in_loop, interval_s=30).save([(("t", 0), 20)])
    checkpointer = Checkpointer(engine, forked, interval_s=30)

    checkpointer.save([(("t", 0), 20)], background=True)
    view_engine.process(events(20, 5, 0))  # the loop goes on; the child has the state at 20
    checkpointer.reap(block=True)

    assert saved(forked, 0)[0].read_bytes() == saved(in_loop, 0)[0].read_bytes()
    checkpointer.save([(("t", 0), 20)])  # recorded once the child succeeded: not written again
    assert len(saved(forked, 0)) == 1
