"""Consumed records as per-partition runs (sources.PartitionRun), and which of them a worker admits.

KafkaReader builds runs from librdkafka's messages column by column; hosts' records go through
runs_of. Both must group by partition keeping each partition's order, and PartitionTable.admit
must drop exactly what the per-record rule drops: records of partitions not owned and records
below the position (an offset reset), counting each one skipped.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from confluent_kafka import Message

from streamfs.checkpoint import CommitLog
from streamfs.metrics import WorkerMetrics
from streamfs.sources import PartitionRun, SourceRecord, _runs_of_messages, runs_of
from streamfs.worker.partitions import PartitionTable


def as_lists(runs: list[PartitionRun]) -> dict[tuple[str, int], list[tuple[int, bytes | None, int | None]]]:
    out: dict[tuple[str, int], list[tuple[int, bytes | None, int | None]]] = {}
    for run in runs:
        assert (run.topic, run.partition) not in out  # one run per partition
        out[(run.topic, run.partition)] = list(zip(run.offsets, run.values, run.timestamps, strict=True))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_messages_and_records_group_alike_keeping_each_partitions_order(seed: int) -> None:
    rng = random.Random(seed)
    next_offset: dict[tuple[str, int], int] = {}
    records = []
    for _ in range(rng.randrange(1, 200)):
        tp = (rng.choice(["a", "b"]), rng.randrange(3))
        offset = next_offset[tp] = next_offset.get(tp, rng.randrange(100)) + 1
        stamp = rng.choice([None, rng.randrange(1, 10**12)])
        value = rng.choice([None, b"", f"v{offset}".encode()])
        records.append(SourceRecord(tp[0], tp[1], offset, value, stamp))
    messages = [
        Message(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            value=r.value,
            timestamp=(0, -1) if r.timestamp is None else (1, r.timestamp),
        )
        for r in records
    ]
    expected: dict[tuple[str, int], list[tuple[int, bytes | None, int | None]]] = {}
    for r in records:
        expected.setdefault((r.topic, r.partition), []).append((r.offset, r.value, r.timestamp))
    assert as_lists(_runs_of_messages(messages)) == expected
    assert as_lists(runs_of(records)) == expected


def test_a_batch_of_one_partition_is_one_run_and_one_partition_number_of_two_topics_two() -> None:
    def message(topic: str, partition: int, offset: int, stamp: int | None) -> Message:
        timestamp = (0, -1) if stamp is None else (1, stamp)
        value = b"v%d" % offset
        return Message(topic=topic, partition=partition, offset=offset, value=value, timestamp=timestamp)

    def stamp(offset: int) -> int | None:
        return None if offset % 3 == 0 else 10 * offset

    one = [message("a", 2, offset, stamp(offset)) for offset in range(5, 50)]
    runs = _runs_of_messages(one)
    assert len(runs) == 1
    assert as_lists(runs) == {("a", 2): [(o, b"v%d" % o, stamp(o)) for o in range(5, 50)]}
    two = [message("a" if offset % 2 else "b", 2, offset, offset) for offset in range(10)]
    assert as_lists(_runs_of_messages(two)) == {
        ("a", 2): [(o, b"v%d" % o, o) for o in range(1, 10, 2)],
        ("b", 2): [(o, b"v%d" % o, o) for o in range(0, 10, 2)],
    }
    assert _runs_of_messages([]) == []


def test_arrivals_are_timestamps_or_now() -> None:
    run = PartitionRun("t", 0, [1, 2], [b"x", b"y"], [5, None])
    first, second = run.arrivals()
    assert first == 5 and second > 1_700_000_000_000
    assert PartitionRun("t", 0, [1], [b"x"], [7]).arrivals() == [7]


def table(tmp_path: Path, positions: dict[tuple[str, int], int]) -> PartitionTable:
    partitions = PartitionTable(CommitLog(tmp_path, "g"), WorkerMetrics())
    partitions.positions.update(positions)
    return partitions


def skipped(partitions: PartitionTable, topic: str, partition: int) -> float:
    value = partitions.metrics.registry.get_sample_value(
        "streamfs_records_skipped_total", {"topic": topic, "partition": str(partition)}
    )
    return value or 0.0


def run_of(offsets: list[int]) -> PartitionRun:
    return PartitionRun("t", 0, offsets, [f"v{o}".encode() for o in offsets], list(offsets))


def test_a_run_at_the_position_is_admitted_whole_and_moves_it(tmp_path: Path) -> None:
    partitions = table(tmp_path, {("t", 0): 10})
    admitted = partitions.admit(run_of([10, 11, 13]))
    assert admitted is not None and admitted.offsets == [10, 11, 13]
    assert partitions.positions[("t", 0)] == 14


def test_runs_of_partitions_not_owned_are_dropped(tmp_path: Path) -> None:
    partitions = table(tmp_path, {("t", 1): 0})
    assert partitions.admit(run_of([0, 1])) is None
    assert partitions.positions == {("t", 1): 0}


@pytest.mark.parametrize(
    ("offsets", "kept", "dropped"),
    [
        ([5, 6, 7, 10, 11], [10, 11], 3),  # reset below the position
        ([10, 11, 4, 5, 12], [10, 11, 12], 2),  # the broker went back mid-batch
        ([3, 4], [], 2),
        ([10, 10, 11], [10, 11], 1),  # a repeated offset
    ],
)
def test_records_below_the_position_are_skipped_and_counted(
    tmp_path: Path, offsets: list[int], kept: list[int], dropped: int
) -> None:
    partitions = table(tmp_path, {("t", 0): 10})
    admitted = partitions.admit(run_of(offsets))
    if kept:
        assert admitted is not None
        assert admitted.offsets == kept
        assert admitted.values == [f"v{o}".encode() for o in kept]
        assert admitted.timestamps == kept
        assert partitions.positions[("t", 0)] == kept[-1] + 1
    else:
        assert admitted is None
        assert partitions.positions[("t", 0)] == 10
    assert skipped(partitions, "t", 0) == dropped
