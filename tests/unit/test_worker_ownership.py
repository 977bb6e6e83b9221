"""The ownership fence: a worker that lost a partition without being told writes none of its
Parquet output once the new owner has claimed it (real files, two owners in one process)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from streamfs.checkpoint import CheckpointStore
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.offline import OfflineWriter, archived_events, scan_features
from streamfs.records import Position, SourceEvent
from streamfs.worker.ownership import PartitionOwnership


class Txn(BaseModel):
    account: str
    amount: float
    ts: datetime


SOURCE = KafkaSource("txns", topic="txns", schema=Txn, timestamp_field="ts")
VIEW = FeatureView(
    "spend",
    entity=Entity("account", join_keys=["account"]),
    source=SOURCE,
    features=[Aggregate("amount", "sum")],
)
T0 = 1_767_225_600_000


def events(partition: int, offsets: range) -> list[SourceEvent]:
    return [
        SourceEvent(
            {
                "account": f"a{partition}",
                "amount": 1.0,
                "ts": datetime.fromtimestamp((T0 + o) / 1000).astimezone(),
            },
            T0 + o,
            T0 + o,
            Position("txns", partition, o),
        )
        for o in offsets
    ]


def buffered(root: Path, batches: list[list[SourceEvent]]) -> OfflineWriter:
    writer = OfflineWriter(root, [VIEW])
    engine = ViewEngine(VIEW)
    for batch in batches:
        writer.add_events(SOURCE, batch)
        writer.add_rows(engine.process(batch).rows)
    return writer


def offsets(root: Path, partition: int) -> list[int]:
    table = scan_features(root, VIEW)
    return sorted(
        o
        for p, o in zip(table["partition"].to_pylist(), table["offset"].to_pylist(), strict=True)
        if p == partition
    )


def test_a_fenced_owner_writes_nothing_for_the_partition_it_lost(tmp_path: Path) -> None:
    old, new = (
        PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g")),
        PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g")),
    )
    assert old.claim(("txns", 0)) == 1 and old.claim(("txns", 1)) == 1
    stale = buffered(tmp_path, [events(0, range(0, 5)), events(1, range(0, 3))])

    assert new.claim(("txns", 0)) == 2  # the group moved partition 0; the old owner was not told yet
    assert stale.flush(old.writing) == [("txns", 0)]
    assert offsets(tmp_path, 0) == [] and offsets(tmp_path, 1) == [0, 1, 2]
    assert [
        e.position.offset
        for e in archived_events(tmp_path, SOURCE)
        if e.position and e.position.partition == 0
    ] == []
    assert stale.pending == 0

    buffered(tmp_path, [events(0, range(0, 7))]).flush(new.writing)
    assert offsets(tmp_path, 0) == list(range(7))  # the new owner's rows, once


def test_without_a_claim_nothing_is_written_and_without_a_guard_everything_is(tmp_path: Path) -> None:
    unclaimed = PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g"))
    assert buffered(tmp_path, [events(0, range(3))]).flush(unclaimed.writing) == [("txns", 0)]
    assert buffered(tmp_path, [events(0, range(3))]).flush() == []
    assert offsets(tmp_path, 0) == [0, 1, 2]
