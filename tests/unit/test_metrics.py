"""observe_many (the worker's bulk freshness observation) counts as observe does, value by value."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streamfs.metrics import FRESHNESS_BUCKETS, observe_many


def exposition(histogram_values: np.ndarray, bulk: bool) -> dict[str, float]:
    registry = CollectorRegistry()
    histogram = Histogram("f", "freshness", buckets=FRESHNESS_BUCKETS, registry=registry)
    if bulk:
        observe_many(histogram, histogram_values)
    else:
        for value in histogram_values.tolist():
            histogram.observe(value)
    lines = generate_latest(registry).decode().splitlines()
    return {
        name: float(value)
        for name, value in (
            line.rsplit(" ", 1) for line in lines if line.startswith("f_") and "created" not in line
        )
    }


def test_bulk_observation_fills_the_same_buckets() -> None:
    values = np.concatenate(
        [np.random.default_rng(1).exponential(0.3, 5_000), [*FRESHNESS_BUCKETS, 0.0, 99.0]]
    )
    one_by_one, bulk = exposition(values, False), exposition(values, True)
    assert one_by_one.pop("f_sum") == pytest.approx(bulk.pop("f_sum"))
    assert one_by_one == bulk
    assert bulk["f_count"] == len(values) and bulk['f_bucket{le="+Inf"}'] == len(values)
    assert bulk['f_bucket{le="0.005"}'] == int((values <= 0.005).sum())


def test_nothing_observed() -> None:
    assert exposition(np.array([]), True)["f_count"] == 0
