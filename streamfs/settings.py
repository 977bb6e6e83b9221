"""Runtime configuration: STREAMFS_* environment variables into one frozen :class:`Settings`.

Only *where things are* and *how the process behaves* live here; what features to compute
lives in pipeline definitions. Every field can be set by its environment variable
(``STREAMFS_<FIELD>``, case-insensitive; dicts as JSON) or by keyword.

When ``kafka_bootstrap`` / ``redis_url`` are not set, the addresses come from the state file
that ``streamfs dev up`` writes (``<state_dir>/dev.json``), so a developer runs ``streamfs dev
up`` once and every other command finds the services. The lookup is lazy: a command that needs
neither (a training set from Parquet) never fails for want of a broker; one that needs Kafka
calls :meth:`Settings.require_kafka` and gets a :class:`~streamfs.errors.ConfigError` saying
what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamfs import dev
from streamfs.errors import ConfigError

ConfigValue = str | int | float | bool
"""A librdkafka configuration value."""

FETCH_QUEUE_BACKOFF_MS = 10
"""librdkafka waits ``fetch.queue.backoff.ms`` (default 1000 ms) before fetching again once its
local prefetch queue is over its thresholds. A consumer that drains the queue quickly then sits
idle for up to a second per partition: we measured ~155k events/s as the ceiling with the
default. 10 ms keeps fetches flowing at no cost to a slower consumer, on any broker."""

DEV_BROKER_CONSUMER: dict[str, ConfigValue] = {
    # The embedded broker (Tansu) holds a group join for about half the session timeout; the
    # librdkafka default of 45 s would make every consumer start take ~23 s. 6 s gives ~3 s joins.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    # Must be >= session.timeout.ms. A dev/test consumer that stops polling for a minute is stuck;
    # evicting it then (not after librdkafka's 5 minutes) lets a test see the rebalance.
    "max.poll.interval.ms": 60000,
    # Tansu answers a fetch only after fetch.wait.max.ms (default 500 ms) even when data is there
    # (measured: 201 ms p50 produce-to-consume with the default, 2 ms with 10).
    "fetch.wait.max.ms": 10,
}
"""Consumer settings applied ONLY when ``kafka_dev_broker`` is true. Production brokers keep
librdkafka's defaults, which suit real group coordinators and real network hiccups."""


class Settings(BaseSettings):
    """Where Kafka, Redis and the Parquet store are, and how the worker behaves."""

    model_config = SettingsConfigDict(env_prefix="STREAMFS_", frozen=True, extra="forbid")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers, e.g. 'kafka-0:9092,kafka-1:9092'."
    )
    redis_url: str | None = Field(default=None, description="Online store, e.g. 'redis://redis:6379/0'.")
    kafka_dev_broker: bool = Field(
        default=False,
        description="The broker is the embedded dev broker: use short group timeouts (set by `dev up`).",
    )
    data_dir: Path = Field(default=Path("./data"), description="Root of the offline store (Parquet).")
    state_dir: Path = Field(
        default=Path("./.streamfs"), description="Local state: dev.json, logs of the dev services."
    )
    group_id: str = Field(default="streamfs", description="Kafka consumer group of the workers.")
    metrics_port: int = Field(
        default=9108, ge=0, le=65535, description="HTTP port for /metrics, /healthz, /readyz."
    )
    consumer_overrides: dict[str, ConfigValue] = Field(
        default_factory=dict, description="librdkafka consumer settings applied last (JSON object)."
    )
    producer_overrides: dict[str, ConfigValue] = Field(
        default_factory=dict, description="librdkafka producer settings applied last (JSON object)."
    )
    online_namespace: str = Field(
        default="sfs", description="Prefix of every Redis key the online store writes and reads."
    )
    log_level: str = Field(default="INFO", description="Python logging level of the worker.")

    @classmethod
    def load(cls, **values: Any) -> Settings:
        """Build from the environment plus `values`; malformed input becomes a ConfigError."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"STREAMFS_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid streamfs settings: {problems}") from None

    @model_validator(mode="before")
    @classmethod
    def _fill_from_dev_state(cls, data: Any) -> Any:
        """Take the addresses `streamfs dev up` recorded for whatever was not set explicitly."""
        if not isinstance(data, dict) or (data.get("kafka_bootstrap") and data.get("redis_url")):
            return data
        state = dev.read_state(Path(data.get("state_dir") or cls.model_fields["state_dir"].default))
        if state is None or state.dead_processes():
            return data
        filled = dict(data)
        if not data.get("kafka_bootstrap"):
            filled["kafka_bootstrap"] = state.kafka_bootstrap
            if "kafka_dev_broker" not in data:
                filled["kafka_dev_broker"] = state.kafka_dev_broker
        if not data.get("redis_url"):
            filled["redis_url"] = state.redis_url
        return filled

    def require_kafka(self) -> str:
        """The bootstrap servers, or a ConfigError telling the user how to provide them."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        raise ConfigError(self._missing("Kafka", "STREAMFS_KAFKA_BOOTSTRAP"))

    def require_redis(self) -> str:
        """The Redis URL, or a ConfigError telling the user how to provide it."""
        if self.redis_url:
            return self.redis_url
        raise ConfigError(self._missing("Redis", "STREAMFS_REDIS_URL"))

    def _missing(self, what: str, env: str) -> str:
        state = dev.read_state(self.state_dir)
        if state is not None and state.dead_processes():
            why = f"the dev services recorded in {dev.state_path(self.state_dir)} are no longer running"
        else:
            why = f"no {what} address is configured and no dev services are recorded in {self.state_dir}"
        return f"{why}; run `streamfs dev up` or set {env}"

    def consumer_config(
        self, group_id: str | None = None, overrides: Mapping[str, ConfigValue] | None = None
    ) -> dict[str, ConfigValue]:
        """confluent-kafka Consumer settings: base, dev-broker tuning, `consumer_overrides`, `overrides`.

        Offsets are never auto-committed: the runner commits only after every sink has flushed
        (the commit protocol), so a crash replays rather than loses events.
        """
        config: dict[str, ConfigValue] = {
            "bootstrap.servers": self.require_kafka(),
            "group.id": group_id or self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        }
        if self.kafka_dev_broker:
            config.update(DEV_BROKER_CONSUMER)
        config.update(self.consumer_overrides)
        config.update(overrides or {})
        return config

    def producer_config(self, overrides: Mapping[str, ConfigValue] | None = None) -> dict[str, ConfigValue]:
        """confluent-kafka Producer settings: base, `producer_overrides`, then `overrides`."""
        config: dict[str, ConfigValue] = {
            "bootstrap.servers": self.require_kafka(),
            "linger.ms": 5,
        }
        config.update(self.producer_overrides)
        config.update(overrides or {})
        return config
