"""Shared fixtures: a real Kafka-compatible broker and a real Redis, plus per-test isolation.

Session-scoped (started lazily, once, only if a test asks; see fixtures/services.py for where
they come from):
    kafka_service -> fixtures.services.Service   address, origin ("env"|"docker"|"embedded"), dev_broker
    kafka_bootstrap -> str                        "127.0.0.1:PORT"
    redis_url -> str                              "redis://127.0.0.1:PORT/0"
    kafka_admin -> confluent_kafka.admin.AdminClient

Function-scoped (unique per test, cleaned up afterwards; tests run in any order):
    topic_factory(partitions=1, *, prefix="t") -> str   a new topic that already exists
    settings -> streamfs.settings.Settings        test services, tmp data_dir/state_dir, unique group_id
    kafka_config -> dict                          consumer config (settings.consumer_config()), unique group
    producer_config -> dict                       producer config (settings.producer_config())
    redis_prefix -> str                           unique key prefix "test-<hex>:"; its keys deleted after
    redis_client -> redis.Redis                   client on redis_url (decode_responses=False)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient
from fixtures.keyspace import delete_prefix
from fixtures.services import Service
from fixtures.services import kafka_service as _kafka_service
from fixtures.services import redis_service as _redis_service
from fixtures.topics import TopicFactory, unique_name

from streamfs.settings import ConfigValue, Settings


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[Service]:
    with _kafka_service() as service:
        yield service


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: Service) -> str:
    return kafka_service.address


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with _redis_service() as service:
        yield service.address


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic_factory(kafka_admin: AdminClient) -> Iterator[TopicFactory]:
    factory = TopicFactory(kafka_admin)
    yield factory
    factory.delete_all()


@pytest.fixture
def settings(kafka_service: Service, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_service.address,
        redis_url=redis_url,
        kafka_dev_broker=kafka_service.dev_broker,
        data_dir=tmp_path / "data",
        state_dir=tmp_path / ".streamfs",
        group_id=unique_name("g"),
    )


@pytest.fixture
def kafka_config(settings: Settings) -> dict[str, ConfigValue]:
    return settings.consumer_config()


@pytest.fixture
def producer_config(settings: Settings) -> dict[str, ConfigValue]:
    return settings.producer_config()


@pytest.fixture
def redis_prefix() -> str:
    return unique_name("test") + ":"


@pytest.fixture
def redis_client(redis_url: str, redis_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    delete_prefix(client, redis_prefix)
    client.close()
