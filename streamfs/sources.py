"""The Kafka edge: a consumer-group reader that hands the worker plain batches and positions.

It knows nothing of features. Offsets are committed only by the worker, explicitly, after
its sinks have flushed (see streamfs.worker, the commit protocol).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

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
    """A plain :class:`Record`: what KafkaReader.consume returns, and what hosts can build.

    (A named tuple: one is built per consumed message, and a frozen dataclass costs ~1 µs more.)"""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int | None = None


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

    def consume(self, max_messages: int, timeout: float) -> list[SourceRecord]:
        """Up to `max_messages` data records; transient errors are logged, fatal ones raise."""
        messages = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                kind, stamp = message.timestamp()
                good.append(
                    SourceRecord(
                        message.topic(),  # type: ignore[arg-type]  # set on data messages
                        message.partition(),  # type: ignore[arg-type]
                        message.offset(),  # type: ignore[arg-type]
                        message.value(),
                        None if kind == 0 or stamp is None or stamp < 0 else stamp,  # NOT_AVAILABLE
                    )
                )
            elif error.code() == KafkaError._PARTITION_EOF:
                continue
            elif error.fatal():
                raise KafkaException(error)
            else:
                log.warning("consumer error (librdkafka retries): %s", error)
        return good

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


def arrival_ms(record: Record) -> int:
    """The record's Kafka timestamp in ms, or now if the broker gave none."""
    stamp = record.timestamp
    return int(time.time() * 1000) if stamp is None else int(stamp)
