"""Bounded event sources for a backfill: the event archive, or the Kafka topic from the beginning.

Both yield `Batch`es of SourceEvents in each partition's offset order (the order the worker
processed them in, which is all the engine's results depend on) and say when a partition has
reached its bound. The Kafka source decodes with the worker's Decoder and takes the arrival
time the worker takes (the record timestamp), so both sources give the engine the same events.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamfs.decode import Decoder
from streamfs.definitions import KafkaSource
from streamfs.errors import ServiceError
from streamfs.offline import archived_events
from streamfs.records import Position, Rejected, SourceEvent
from streamfs.settings import Settings

__all__ = ["Batch", "archive_batches", "kafka_batches"]

BATCH = 10_000


@dataclass
class Batch:
    events: list[SourceEvent]
    finished: list[int] = field(default_factory=list)
    """Partitions that reached their bound with this batch."""
    skipped: int = 0
    """Messages the decoder rejected (Kafka source; the worker dead-lettered them already)."""


def archive_batches(
    root: Path, source: KafkaSource, starts: dict[int, int], bounds: dict[int, int], *, size: int = BATCH
) -> Iterator[Batch]:
    """Archived events of each partition in [starts[p], bounds[p]), one partition after another."""
    for partition in sorted(bounds):
        start, stop = starts.get(partition, 0), bounds[partition]
        batch: list[SourceEvent] = []
        if start < stop:
            for event in archived_events(root, source, partition=partition, offsets=(start, stop)):
                batch.append(event)
                if len(batch) >= size:
                    yield Batch(batch)
                    batch = []
        yield Batch(batch, [partition])


def kafka_batches(
    settings: Settings,
    source: KafkaSource,
    starts: dict[int, int],
    bounds: dict[int, int],
    *,
    size: int = BATCH,
    stall_timeout_s: float = 60.0,
) -> Iterator[Batch]:
    """The topic's records in [starts[p], bounds[p]) per partition, read by explicit assignment.

    No consumer group is joined and nothing is committed: the worker group is left alone.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    decoder = Decoder(source)
    pending = {p: starts.get(p, 0) for p, bound in bounds.items() if starts.get(p, 0) < bound}
    done = [p for p in bounds if p not in pending]
    if done:
        yield Batch([], sorted(done))
    if not pending:
        return
    config = settings.consumer_config(
        group_id=f"{settings.group_id}.backfill", overrides={"enable.partition.eof": False}
    )
    consumer = Consumer(config)
    try:
        consumer.assign([TopicPartition(source.topic, p, offset) for p, offset in pending.items()])
        last_progress = time.monotonic()
        while pending:
            messages = consumer.consume(num_messages=size, timeout=0.5)
            events: list[SourceEvent] = []
            skipped = 0
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None or partition not in pending:
                    continue
                if offset >= bounds[partition]:
                    continue
                decoded = decoder.decode(
                    message.value(),
                    arrival_time=_arrival_ms(message.timestamp()),
                    position=Position(source.topic, partition, offset),
                )
                if isinstance(decoded, Rejected):
                    skipped += 1
                else:
                    events.append(decoded)
                pending[partition] = offset + 1
            finished = sorted(p for p, position in pending.items() if position >= bounds[p])
            for p in finished:
                del pending[p]
                consumer.pause([TopicPartition(source.topic, p)])
            if messages:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout_s:
                where = ", ".join(f"[{p}] at {o} of {bounds[p]}" for p, o in sorted(pending.items()))
                raise ServiceError(
                    f"Kafka delivered nothing for {stall_timeout_s:.0f} s while reading {source.topic}{where}"
                )
            if events or finished or skipped:
                yield Batch(events, finished, skipped)
    finally:
        consumer.close()


def _arrival_ms(timestamp: tuple[int, int | None]) -> int:
    """The record's Kafka timestamp in ms, or now when the broker gave none (as the worker does)."""
    kind, stamp = timestamp
    if kind == 0 or stamp is None or stamp < 0:  # TIMESTAMP_NOT_AVAILABLE
        return int(time.time() * 1000)
    return int(stamp)
