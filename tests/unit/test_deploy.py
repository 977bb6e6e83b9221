"""The Kubernetes manifests in deploy/ hang together (parsed with PyYAML; no cluster, no kubectl)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfs.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = DEPLOY / "base"
PRODUCTION = DEPLOY / "overlays" / "production"


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object the base kustomization lists, keyed by (kind, name)."""
    kustomization = _load(BASE / "kustomization.yaml")[0]
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in _load(BASE / resource):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


@pytest.fixture(scope="module")
def worker(base: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return base[("Deployment", "streamfs-worker")]


@pytest.fixture(scope="module")
def container(worker: dict[str, Any]) -> dict[str, Any]:
    (only,) = worker["spec"]["template"]["spec"]["containers"]
    return dict(only)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def test_base_lists_existing_files_of_the_expected_kinds(base: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = {kind for kind, _ in base}

    assert kinds == {
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    assert all(doc["apiVersion"] for doc in base.values())


def test_selectors_match_the_pod_labels(
    base: dict[tuple[str, str], dict[str, Any]], worker: dict[str, Any]
) -> None:
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]

    assert worker["spec"]["selector"]["matchLabels"] == {
        key: pod_labels[key] for key in worker["spec"]["selector"]["matchLabels"]
    }
    assert _selects(worker["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(base[("Service", "streamfs-worker-metrics")]["spec"]["selector"], pod_labels)
    assert _selects(
        base[("PodDisruptionBudget", "streamfs-worker")]["spec"]["selector"]["matchLabels"], pod_labels
    )


def test_probes_use_the_health_contract(container: dict[str, Any]) -> None:
    port = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert port == {"metrics": 9108}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_metrics_service_targets_the_metrics_port(
    base: dict[tuple[str, str], dict[str, Any]], worker: dict[str, Any]
) -> None:
    service = base[("Service", "streamfs-worker-metrics")]
    annotations = worker["spec"]["template"]["metadata"]["annotations"]

    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9108, "targetPort": "metrics"}]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "9108"


def test_environment_comes_from_the_configmap_and_secret(
    base: dict[tuple[str, str], dict[str, Any]], container: dict[str, Any]
) -> None:
    refs = container["envFrom"]
    config = base[("ConfigMap", refs[0]["configMapRef"]["name"])]
    secret = base[("Secret", refs[1]["secretRef"]["name"])]
    known = {f"STREAMFS_{name.upper()}" for name in Settings.model_fields}

    assert set(config["data"]) <= known, "every ConfigMap key must be a Settings field"
    assert set(secret["stringData"]) <= known
    assert "STREAMFS_KAFKA_BOOTSTRAP" in config["data"]
    assert "STREAMFS_REDIS_URL" in secret["stringData"]
    assert config["data"]["STREAMFS_METRICS_PORT"] == "9108"


def test_resources_grace_period_and_rollout(worker: dict[str, Any], container: dict[str, Any]) -> None:
    pod = worker["spec"]["template"]["spec"]

    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    assert pod["terminationGracePeriodSeconds"] >= 30, "time to flush sinks and commit on SIGTERM"
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "never more pods than replicas"
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_volumes_are_mounted_where_settings_point(
    base: dict[tuple[str, str], dict[str, Any]], worker: dict[str, Any], container: dict[str, Any]
) -> None:
    config = base[("ConfigMap", "streamfs-config")]["data"]
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    claims = {
        volume["persistentVolumeClaim"]["claimName"]
        for volume in worker["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }

    assert {config["STREAMFS_DATA_DIR"], config["STREAMFS_STATE_DIR"]} <= mounts
    assert claims == {"streamfs-offline"}
    assert base[("PersistentVolumeClaim", "streamfs-offline")]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_production_overlay_patches_existing_objects(base: dict[tuple[str, str], dict[str, Any]]) -> None:
    overlay = _load(PRODUCTION / "kustomization.yaml")[0]

    assert overlay["resources"] == ["../../base"]
    assert (
        PRODUCTION / overlay["resources"][0] / "kustomization.yaml"
    ).resolve() == BASE / "kustomization.yaml"
    for patch in overlay["patches"]:
        doc = _load(PRODUCTION / patch["path"])[0] if "path" in patch else yaml.safe_load(patch["patch"])
        assert (doc["kind"], doc["metadata"]["name"]) in base, patch
    (replicas,) = overlay["replicas"]
    assert replicas["name"] == "streamfs-worker"
    assert overlay["images"][0]["name"] == "streamfs"
