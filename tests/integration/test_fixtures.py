"""The shared fixtures give a real broker and a real Redis, isolated per test."""

from __future__ import annotations

import time

import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from fixtures.topics import TopicFactory

from streamfs.settings import ConfigValue, Settings


def _consume(config: dict[str, ConfigValue], topic: str, count: int, timeout_s: float = 30.0) -> list[bytes]:
    consumer = Consumer(config)
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            value = message.value()
            assert value is not None
            values.append(value)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def test_topic_factory_creates_topics_with_partitions(
    topic_factory: TopicFactory, kafka_admin: AdminClient
) -> None:
    first, second = topic_factory(3), topic_factory(1)

    topics = kafka_admin.list_topics(timeout=10).topics
    assert first != second
    assert len(topics[first].partitions) == 3
    assert len(topics[second].partitions) == 1


def test_produce_then_consume_through_a_consumer_group(
    topic_factory: TopicFactory, producer_config: dict[str, ConfigValue], kafka_config: dict[str, ConfigValue]
) -> None:
    topic = topic_factory(3)
    producer = Producer(producer_config)
    sent = [f"event-{i}".encode() for i in range(300)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i % 17).encode(), value=value)
    assert producer.flush(10) == 0

    started = time.monotonic()
    received = _consume(kafka_config, topic, len(sent))

    assert sorted(received) == sorted(sent)
    assert time.monotonic() - started < 20, "group join + consume should be quick with dev settings"


def test_committed_offsets_resume_the_group(
    topic_factory: TopicFactory, producer_config: dict[str, ConfigValue], kafka_config: dict[str, ConfigValue]
) -> None:
    topic = topic_factory(1)
    producer = Producer(producer_config)
    for i in range(10):
        producer.produce(topic, value=f"a{i}".encode())
    producer.flush(10)
    assert len(_consume(kafka_config, topic, 10)) == 10

    for i in range(5):
        producer.produce(topic, value=f"b{i}".encode())
    producer.flush(10)

    assert _consume(kafka_config, topic, 5) == [f"b{i}".encode() for i in range(5)]


def test_settings_point_at_the_test_services(
    settings: Settings, kafka_bootstrap: str, redis_url: str
) -> None:
    assert settings.require_kafka() == kafka_bootstrap
    assert settings.require_redis() == redis_url
    assert settings.consumer_config()["group.id"] == settings.group_id
    assert settings.data_dir.parent.is_dir()


def test_redis_write_and_read(redis_client: redis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}card:42"
    redis_client.hset(key, mapping={"amount_sum_1h": b"12.5", "count_1h": b"3"})
    redis_client.pexpire(key, 60_000)

    assert redis_client.hgetall(key) == {b"amount_sum_1h": b"12.5", b"count_1h": b"3"}
    assert 0 < redis_client.pttl(key) <= 60_000


def test_redis_prefixes_are_unique_per_test(redis_client: redis.Redis, redis_prefix: str) -> None:
    assert redis_client.keys(f"{redis_prefix}*") == []
    redis_client.set(f"{redis_prefix}x", b"1")
    assert redis_client.get(f"{redis_prefix}x") == b"1"
