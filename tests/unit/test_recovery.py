"""Partition recovery from checkpoints and the event archive (files only; no services needed)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from streamfs.checkpoint import CheckpointStore
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.offline import OfflineWriter
from streamfs.records import Position, SourceEvent
from streamfs.recovery import recover_partition


class Ev(BaseModel):
    k: str
    x: float
    ts: int


SOURCE = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts", allowed_lateness=5)
ENTITY = Entity("e", join_keys=["k"])


def view(window: str) -> FeatureView:
    return FeatureView("v", entity=ENTITY, source=SOURCE, features=[Aggregate("x", "sum", window=window)])


def events(n: int) -> list[SourceEvent]:
    return [
        SourceEvent({"k": f"k{i % 3}", "x": float(i), "ts": t}, t, t, Position("t", 0, i))
        for i, t in ((i, 1_000 * i) for i in range(n))
    ]


def archive(root: Path, feature_view: FeatureView, stream: list[SourceEvent]) -> None:
    writer = OfflineWriter(root, [feature_view])
    writer.add_events(SOURCE, stream)
    writer.flush()


def test_a_checkpoint_of_a_changed_definition_is_rebuilt_from_the_archive(tmp_path: Path) -> None:
    stream = events(40)
    old, new = view("10s"), view("20s")
    archive(tmp_path, new, stream)
    checkpoints = CheckpointStore(tmp_path / "checkpoints", "g")
    before = ViewEngine(old)
    before.process(stream[:30])
    checkpoints.save("t", 0, 30, {"v": before.snapshot(0)})

    engine = ViewEngine(new)
    replayed = recover_partition(
        SOURCE, 0, 40, engines=[engine], offline=OfflineWriter(tmp_path, [new]),
        checkpoints=checkpoints, data_dir=tmp_path,
    )  # fmt: skip

    assert replayed == 40  # the old checkpoint could not be used: everything was replayed
    reference = ViewEngine(new)
    reference.process(stream)
    for key in reference.keys():  # noqa: SIM118 (ViewEngine.keys, not a dict)
        assert engine.evaluate(key, 40_000) == reference.evaluate(key, 40_000)


def test_recovery_replays_only_after_a_matching_checkpoint(tmp_path: Path) -> None:
    stream = events(40)
    current = view("10s")
    archive(tmp_path, current, stream)
    checkpoints = CheckpointStore(tmp_path / "checkpoints", "g")
    before = ViewEngine(current)
    before.process(stream[:30])
    checkpoints.save("t", 0, 30, {"v": before.snapshot(0)})

    engine = ViewEngine(current)
    replayed = recover_partition(
        SOURCE, 0, 40, engines=[engine], offline=OfflineWriter(tmp_path, [current]),
        checkpoints=checkpoints, data_dir=tmp_path,
    )  # fmt: skip

    assert replayed == 10
    reference = ViewEngine(current)
    reference.process(stream)
    for key in reference.keys():  # noqa: SIM118 (ViewEngine.keys, not a dict)
        assert engine.evaluate(key, 40_000) == reference.evaluate(key, 40_000)
