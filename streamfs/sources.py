"""The Kafka edge: a consumer-group reader that hands the worker plain batches and positions.

It knows nothing of features. Offsets are committed only by the worker, explicitly, after
its sinks have flushed (see streamfs.worker, the commit protocol).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
AssignmentCallback = Callable[[list[TopicPartitionKey]], None]
AssignCallback = Callable[[list[TopicPartitionKey]], dict[TopicPartitionKey, int]]
"""Called with newly assigned partitions; returns the offset to start each one from."""


class Record(Protocol):
    """What the worker needs of one source record, whoever consumed it (KafkaReader, a Faust app …)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None:
        """The record's Kafka timestamp in epoch milliseconds, or None when the broker gave none."""


class SourceRecord(NamedTuple):
    """A plain :class:`Record`, for hosts that consume Kafka themselves (KafkaReader.consume
    returns PartitionRuns instead). A named tuple: a host builds one per message, and a frozen
    dataclass costs ~1 µs more."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int | None = None


@dataclass(slots=True)
class PartitionRun:
    """Records of one partition in the order consumed (offset order, unless the broker went
    back), as columns: what the worker's data path takes.

    KafkaReader.consume builds these straight from librdkafka's messages (one list
    comprehension per field, no Python object per record); `runs_of` groups any hosts' Records.
    """

    topic: str
    partition: int
    offsets: list[int]
    values: list[bytes | None]
    timestamps: list[int | None]  # Kafka timestamps, epoch ms (None: the broker gave none)

    def arrivals(self) -> list[int]:
        """Each record's arrival time in ms: its timestamp, or now where there is none."""
        if None not in self.timestamps:
            return self.timestamps  # type: ignore[return-value]  # (no None in it)
        now = int(time.time() * 1000)
        return [now if stamp is None else stamp for stamp in self.timestamps]


def runs_of(records: Iterable[Record]) -> list[PartitionRun]:
    """Records grouped by partition, each partition's in the order given."""
    runs: dict[TopicPartitionKey, PartitionRun] = {}
    for record in records:
        tp = (record.topic, record.partition)
        run = runs.get(tp)
        if run is None:
            run = runs[tp] = PartitionRun(record.topic, record.partition, [], [], [])
        run.offsets.append(record.offset)
        run.values.append(record.value)
        run.timestamps.append(record.timestamp)
    return list(runs.values())


def _runs_of_messages(messages: list[Message]) -> list[PartitionRun]:
    """Data messages grouped by partition: columns first (C-level maps of the Message methods,
    ~150 ns per message where comprehensions cost ~240), then slices of them."""
    # (topic, partition and offset are set on data messages: the casts only tell mypy so)
    topics = cast(list[str], list(map(Message.topic, messages)))
    partitions = cast(list[int], list(map(Message.partition, messages)))
    offsets = cast(list[int], list(map(Message.offset, messages)))
    values = list(map(Message.value, messages))
    timestamps = [  # kind 0: NOT_AVAILABLE
        None if kind == 0 or stamp < 0 else stamp for kind, stamp in map(Message.timestamp, messages)
    ]
    count = len(messages)
    if not count:
        return []
    if partitions.count(partitions[0]) == count and topics.count(topics[0]) == count:
        return [PartitionRun(topics[0], partitions[0], offsets, values, timestamps)]  # the usual batch
    tps = list(zip(topics, partitions, strict=True))
    edges = [0, *(i for i in range(1, len(tps)) if tps[i] != tps[i - 1]), len(tps)]
    runs: dict[TopicPartitionKey, PartitionRun] = {}
    for begin, end in itertools.pairwise(edges):
        tp = tps[begin]
        piece = PartitionRun(tp[0], tp[1], offsets[begin:end], values[begin:end], timestamps[begin:end])
        run = runs.get(tp)
        if run is None:
            runs[tp] = piece
        else:  # the partition again, later in the batch
            run.offsets += piece.offsets
            run.values += piece.values
            run.timestamps += piece.timestamps
    return list(runs.values())


class KafkaReader:
    """A subscribed consumer: batches of messages, committed offsets, watermarks, pause/resume."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        *,
        on_assign: AssignCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None:
        self._consumer = Consumer(config)
        self._topics = list(topics)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self.assignment: set[TopicPartitionKey] = set()
        self._consumer.subscribe(
            self._topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    # Rebalance callbacks run inside consume(); the worker recovers or commits state there.
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.assignment.update(keys)
        starts = self._on_assign(keys)
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in keys])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._on_revoke(keys)
        self.assignment.difference_update(keys)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._on_lost(keys)
        self.assignment.difference_update(keys)

    def consume(self, max_messages: int, timeout: float) -> tuple[int, list[PartitionRun]]:
        """Up to `max_messages` data records, grouped by partition, and how many there are;
        transient errors are logged, fatal ones raise.

        Records already fetched are returned at once; only when there are none does this wait,
        up to `timeout`, for the first one, and then returns it with whatever else is there.
        (librdkafka's consume waits for the whole timeout unless `max_messages` records are
        there: at a steady 20,000 events/s every batch waited its 20 ms poll timeout, a third
        of each turn of the loop, and at 5,000 events/s each caught-up turn did.)"""
        messages = self._consumer.consume(num_messages=max_messages, timeout=0)
        if not messages:
            first = self._consumer.poll(timeout)
            if first is None:
                return 0, []
            messages = [first, *self._consumer.consume(num_messages=max_messages - 1, timeout=0)]
        if not messages:
            return 0, []
        errors = list(map(Message.error, messages))  # (C-level map and count: 24 ns per message
        if errors.count(None) != len(errors):  # against 37 for a comprehension and any() of a genexpr)
            messages = [m for m, error in zip(messages, errors, strict=True) if error is None]
            for error in errors:
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error (librdkafka retries): %s", error)
        return len(messages), _runs_of_messages(messages)

    def committed(
        self, partitions: Sequence[TopicPartitionKey], timeout: float = 30.0
    ) -> dict[TopicPartitionKey, int | None]:
        """The group's committed offset of each partition (None where nothing was committed)."""
        result = self._consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout)
        return {
            (tp.topic, tp.partition): (None if tp.offset == OFFSET_INVALID or tp.offset < 0 else tp.offset)
            for tp in result
        }

    def watermarks(self, partition: TopicPartitionKey, timeout: float = 10.0) -> tuple[int, int]:
        """(low, high) offsets of a partition as the broker reports them now."""
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(*partition), timeout=timeout, cached=False
        )
        return int(low), int(high)

    def seek(self, partition: TopicPartitionKey, offset: int) -> None:
        self._consumer.seek(TopicPartition(partition[0], partition[1], offset))

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Commit `offsets` (the next offset to read per partition) synchronously."""
        if not offsets:
            return
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )

    def pause(self) -> None:
        self._consumer.pause([TopicPartition(t, p) for t, p in self.assignment])

    def resume(self) -> None:
        self._consumer.resume([TopicPartition(t, p) for t, p in self.assignment])

    def close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the consumer: %s", exc)
