"""The ownership fence: a worker that lost a partition without being told writes none of its
Parquet output and none of its Redis entries once the new owner has claimed it (real files, a
real Redis, two owners in one process)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from pathlib import Path

import redis
from pydantic import BaseModel

from streamfs.checkpoint import CheckpointStore
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import Engine, ViewEngine
from streamfs.metrics import WorkerMetrics
from streamfs.offline import OfflineWriter, archived_events, scan_features
from streamfs.online import FeatureClient, OnlineWriter
from streamfs.records import Position, SourceEvent
from streamfs.worker.online_sync import OnlineSync
from streamfs.worker.options import WorkerOptions
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


def online_sync(
    engine: Engine, client: redis.Redis, namespace: str, owner: PartitionOwnership
) -> tuple[OnlineSync, list[tuple[str, int]]]:
    fenced: list[tuple[str, int]] = []
    writer = OnlineWriter(client, list(engine.views.values()), namespace=namespace)
    sync = OnlineSync(
        engine, client, writer, namespace=namespace, group_id="g", options=WorkerOptions(),
        metrics=WorkerMetrics(), guard=owner.writing_online, on_fenced=fenced.extend,
    )  # fmt: skip
    return sync, fenced


def write(sync: OnlineSync) -> None:
    sync.write(pause=lambda: None, resume=lambda: None, idle=lambda s: None, give_up=lambda: False)


def test_a_fenced_owner_writes_no_redis_entry_for_the_partition_it_lost(
    tmp_path: Path, redis_url: str
) -> None:
    """The zombie's older state of a0 must not overwrite what the new owner wrote."""
    client = redis.Redis.from_url(redis_url)
    namespace = f"fence-{uuid.uuid4().hex}"
    old, new = (
        PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g")),
        PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g")),
    )
    old.claim(("txns", 0)), old.claim(("txns", 1))
    zombie = Engine([VIEW])
    zombie.views["spend"].process(events(0, range(0, 3)) + events(1, range(0, 2)))
    zombie_sync, fenced = online_sync(zombie, client, namespace, old)

    new.claim(("txns", 0))  # the group moved partition 0; the old owner was not told yet
    owner = Engine([VIEW])
    owner.views["spend"].process(events(0, range(0, 5)))
    owner_sync, _ = online_sync(owner, client, namespace, new)
    write(owner_sync)
    write(zombie_sync)  # too late for partition 0

    assert fenced == [("txns", 0)]
    features = FeatureClient(client, [VIEW], namespace=namespace)
    values = features.get_features("spend", ["a0", "a1"], as_of=T0 + 10).to_dicts()
    assert [row["amount_sum"] for row in values] == [5.0, 2.0]  # a0: the new owner's 5 events
    client.close()


def hold_and_release(owner: PartitionOwnership, tp: tuple[str, int]) -> None:
    with owner.writing_online(tp):
        pass


def test_a_claim_waits_for_a_redis_write_under_way_and_parquet_does_not_block_redis(tmp_path: Path) -> None:
    old, new = (
        PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g")),
        PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g")),
    )
    tp = ("txns", 0)
    old.claim(tp)
    with old.writing_online(tp) as mine:
        assert mine
        claiming = threading.Thread(target=new.claim, args=(tp,))
        claiming.start()
        claiming.join(0.3)
        assert claiming.is_alive(), "the claim did not wait for the Redis write under way"
    claiming.join(10)
    assert not claiming.is_alive()
    with old.writing_online(tp) as mine:
        assert not mine

    with new.writing(tp) as mine:  # a Parquet write under way on the writer thread ...
        assert mine
        online = threading.Thread(target=hold_and_release, args=(new, tp))
        online.start()
        online.join(5)
        assert not online.is_alive(), "a Parquet write held up a Redis write"


def test_redis_run_id_is_asked_at_most_once_a_second_unless_a_check_is_due(
    tmp_path: Path, redis_url: str
) -> None:
    """OnlineSync asks INFO for Redis's run_id (a restart means rewriting every key) on its first
    write, then at most every RESTART_CHECK_S, and at once after check_restart_next (what a
    failed write and the worker's final commit call)."""
    client = redis.Redis.from_url(redis_url)
    owner = PartitionOwnership(CheckpointStore(tmp_path / "checkpoints", "g"))
    owner.claim(("txns", 0))
    engine = Engine([VIEW])
    sync, _ = online_sync(engine, client, f"runid-{uuid.uuid4().hex}", owner)

    def info_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_info", {"calls": 0})["calls"])

    def write_batch(first: int) -> int:
        """INFO calls a write of three more events makes (the counting INFO itself taken out)."""
        engine.views["spend"].process(events(0, range(first, first + 3)))
        before = info_calls()
        write(sync)
        return info_calls() - before - 1

    assert write_batch(0) == 1  # the first write learns the run_id
    assert write_batch(3) == 0  # within the second: not asked again
    sync.check_restart_next()
    assert write_batch(6) == 1
    client.close()
