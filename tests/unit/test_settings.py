"""Settings: STREAMFS_* environment, the dev.json fallback, and the Kafka client configs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamfs.dev import DevState, state_path
from streamfs.errors import ConfigError
from streamfs.settings import DEV_BROKER_CONSUMER, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STREAMFS_* from the developer's shell, and no ./.streamfs/dev.json from their checkout."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMFS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_state(state_dir: Path, **fields: object) -> None:
    values: dict[str, object] = {
        "mode": "docker",
        "kafka_bootstrap": "127.0.0.1:19092",
        "redis_url": "redis://127.0.0.1:16379/0",
        "kafka_dev_broker": True,
        "started_at": datetime.now(UTC),
    }
    values.update(fields)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path(state_dir).write_text(DevState.model_validate(values).model_dump_json())


def test_defaults() -> None:
    settings = Settings()

    assert settings.kafka_bootstrap is None
    assert settings.redis_url is None
    assert settings.data_dir == Path("data")
    assert settings.state_dir == Path(".streamfs")
    assert settings.group_id == "streamfs"
    assert settings.metrics_port == 9108
    assert settings.kafka_dev_broker is False


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFS_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("STREAMFS_REDIS_URL", "redis://r:6379/1")
    monkeypatch.setenv("STREAMFS_METRICS_PORT", "9200")
    monkeypatch.setenv("STREAMFS_CONSUMER_OVERRIDES", '{"fetch.min.bytes": 1024}')
    monkeypatch.setenv("STREAMFS_DATA_DIR", "/srv/features")

    settings = Settings()

    assert settings.require_kafka() == "k1:9092,k2:9092"
    assert settings.require_redis() == "redis://r:6379/1"
    assert settings.metrics_port == 9200
    assert settings.data_dir == Path("/srv/features")
    assert settings.consumer_config()["fetch.min.bytes"] == 1024


def test_missing_kafka_says_what_to_do() -> None:
    settings = Settings()

    with pytest.raises(ConfigError, match=r"streamfs dev up.*STREAMFS_KAFKA_BOOTSTRAP"):
        settings.require_kafka()
    with pytest.raises(ConfigError, match="STREAMFS_REDIS_URL"):
        settings.require_redis()
    with pytest.raises(ConfigError):
        settings.consumer_config()


def test_addresses_come_from_the_dev_state_file(tmp_path: Path) -> None:
    _write_state(tmp_path / ".streamfs")

    settings = Settings()

    assert settings.require_kafka() == "127.0.0.1:19092"
    assert settings.require_redis() == "redis://127.0.0.1:16379/0"
    assert settings.kafka_dev_broker is True


def test_explicit_addresses_win_over_the_state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_state(tmp_path / "state")
    monkeypatch.setenv("STREAMFS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STREAMFS_KAFKA_BOOTSTRAP", "prod:9092")

    settings = Settings()

    assert settings.require_kafka() == "prod:9092"
    assert settings.kafka_dev_broker is False, "dev tuning follows the dev broker, not the state file"
    assert settings.require_redis() == "redis://127.0.0.1:16379/0"


def test_stale_state_file_is_ignored_with_a_clear_message(tmp_path: Path) -> None:
    _write_state(tmp_path / ".streamfs", mode="embedded", kafka_pid=_dead_pid(), redis_pid=_dead_pid())

    settings = Settings()

    assert settings.kafka_bootstrap is None
    with pytest.raises(ConfigError, match=r"no longer running; run `streamfs dev up`"):
        settings.require_kafka()


def test_consumer_config_always_tunes_fetch_backoff() -> None:
    config = Settings(kafka_bootstrap="k:9092").consumer_config("g1")

    assert config["bootstrap.servers"] == "k:9092"
    assert config["group.id"] == "g1"
    assert config["fetch.queue.backoff.ms"] == 10
    assert config["enable.auto.commit"] is False
    assert not set(DEV_BROKER_CONSUMER) & set(config), "production keeps librdkafka's group timeouts"


def test_dev_broker_gets_short_group_timeouts() -> None:
    config = Settings(kafka_bootstrap="k:9092", kafka_dev_broker=True).consumer_config()

    assert config["group.id"] == "streamfs"
    assert config["session.timeout.ms"] == 6000
    assert config["heartbeat.interval.ms"] == 1000
    assert int(config["max.poll.interval.ms"]) >= int(config["session.timeout.ms"])


def test_overrides_apply_last() -> None:
    settings = Settings(
        kafka_bootstrap="k:9092",
        kafka_dev_broker=True,
        consumer_overrides={"session.timeout.ms": 10000, "fetch.queue.backoff.ms": 50},
        producer_overrides={"linger.ms": 20},
    )

    config = settings.consumer_config(overrides={"fetch.queue.backoff.ms": 5})

    assert config["session.timeout.ms"] == 10000
    assert config["fetch.queue.backoff.ms"] == 5
    assert settings.producer_config() == {"bootstrap.servers": "k:9092", "linger.ms": 20}


def test_load_turns_bad_input_into_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFS_METRICS_PORT", "not-a-port")

    with pytest.raises(ConfigError, match="STREAMFS_METRICS_PORT"):
        Settings.load()


def test_settings_are_frozen_and_reject_unknown_fields() -> None:
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.group_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(kafka_bootstap="typo:9092")  # type: ignore[call-arg]
