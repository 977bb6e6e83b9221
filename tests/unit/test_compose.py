"""docker-compose.yml and the Dockerfile describe a runnable stack (checked by parsing, no Docker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfs.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(compose["services"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _settings_env_names() -> set[str]:
    return {f"STREAMFS_{name.upper()}" for name in Settings.model_fields}


def test_services_present(services: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker", "feature-server"} <= set(services)


def test_kafka_is_a_single_node_kraft_broker(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = _env(kafka)

    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "INTERNAL://kafka:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert any(volume.endswith(":/var/lib/kafka/data") for volume in kafka["volumes"])


def test_redis_persists_with_an_append_only_file(services: dict[str, Any]) -> None:
    redis = services["redis"]
    command = redis["command"]

    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_worker_runs_the_payments_pipeline_against_the_compose_services(services: dict[str, Any]) -> None:
    worker = services["worker"]
    env = _env(worker)

    assert worker["command"] == ["run", "pipelines.payments"]
    assert env["STREAMFS_KAFKA_BOOTSTRAP"].startswith("kafka:")
    assert env["STREAMFS_REDIS_URL"] == "redis://redis:6379/0"
    assert set(env) <= _settings_env_names(), "every variable must be a Settings field"
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert "9108/healthz" in " ".join(worker["healthcheck"]["test"])


def test_feature_server_is_an_opt_in_placeholder(services: dict[str, Any]) -> None:
    assert services["feature-server"]["profiles"] == ["feature-server"]
    assert set(_env(services["feature-server"])) <= _settings_env_names()


@pytest.mark.parametrize("name", ["kafka", "redis", "worker"])
def test_health_checks_and_loopback_ports(services: dict[str, Any], name: str) -> None:
    service = services[name]

    assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert service["ports"], f"{name} publishes a port"
    assert all(str(port).startswith("127.0.0.1:") for port in service["ports"]), "loopback only"


def test_dockerfile_installs_the_package_on_python_311_slim() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]

    assert instructions[0] == "FROM python:3.11-slim"
    assert "RUN pip install . \\" in instructions
    assert 'ENTRYPOINT ["streamfs"]' in instructions
    assert "USER 10001" in instructions
