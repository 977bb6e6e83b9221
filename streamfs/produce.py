"""Publishing events the way streamfs expects them: JSON values, keyed by the topic's entity.

Applications can use any Kafka client; EventProducer is for the demo, benchmarks and tests, and
produce_waiting (backpressure from librdkafka's local queue) serves every producer here. The
message key is the entity key of the views reading the topic (keys.encode_key), so one entity's
events land in one partition, which is what per-entity order and state need.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from confluent_kafka import Producer

from streamfs.keys import encode_key
from streamfs.registry import Pipeline


def produce_waiting(producer: Producer, topic: str, *, wait_s: float = 0.05, **message: Any) -> None:
    """Producer.produce(topic, **message), polling `wait_s` at a time while librdkafka's local
    queue is full (BufferError) instead of failing."""
    while True:
        try:
            producer.produce(topic, **message)
            return
        except BufferError:
            producer.poll(wait_s)


class EventProducer:
    """Sends event dicts to a pipeline's topics, keyed by each topic's entity."""

    def __init__(self, pipeline: Pipeline, producer_config: Mapping[str, Any]) -> None:
        self.pipeline = pipeline
        self._producer = Producer({"linger.ms": 20, "batch.num.messages": 10_000, **producer_config})
        self._key_fields = {
            topic: pipeline.views_for_topic(topic)[0].entity.join_keys for topic in pipeline.topics
        }

    def send(self, event: Mapping[str, Any], topics: Sequence[str] | None = None) -> None:
        """Publish one event (JSON) to `topics` (default: every topic of the pipeline), keyed by the
        topic's entity, so each entity's events share a partition. It is not validated here: the
        workers validate it, and send an event a topic's schema rejects to that topic's DLQ."""
        value = orjson.dumps(event)
        for topic in topics if topics is not None else self.pipeline.topics:
            key = encode_key([event.get(name) for name in self._key_fields[topic]])
            produce_waiting(self._producer, topic, value=value, key=key.encode())
        self._producer.poll(0)

    def send_all(self, events: Iterable[Mapping[str, Any]], topics: Sequence[str] | None = None) -> int:
        count = 0
        for event in events:
            self.send(event, topics)
            count += 1
        return count

    def flush(self, timeout: float = 60.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise RuntimeError(f"{remaining} events not delivered within {timeout} s")
