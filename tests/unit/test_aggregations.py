"""Tile partials (GroupAggregator): the laws tiling relies on, and exactness of sums and spreads.

Tiles are merged in whatever grouping the window, the cache and the batch boundaries produce,
so `merge` must be associative with `empty` as identity; and results must be the exact value
rounded once, which is what makes them independent of that grouping.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamfs.aggregations import GroupAggregator, empty_result, exact_scaled

FLOATS = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 2.5e-8, 1 / 3, 5e-324, -0.0]),
)
INTS = st.integers(-(10**20), 10**20)
TILED = [
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "last",
    "first",
    "stddev",
    "stddev_pop",
    "variance",
    "variance_pop",
]


class Monoid:
    """One feature's partial through the engine's GroupAggregator: empty / add / merge / result."""

    def __init__(self, function: str, integer: bool = False) -> None:
        self.aggregator = GroupAggregator([(function, 0, integer)])

    def empty(self) -> list[Any]:
        return self.aggregator.empty()

    def add(self, partial: list[Any], value: Any, time: int, seq: int) -> list[Any]:
        exacts = [None if value is None or isinstance(value, str) else exact_scaled(value)]
        out = list(partial)
        self.aggregator.add(out, (value,), exacts, time, seq)
        return out

    def merge(self, older: list[Any], newer: list[Any]) -> list[Any]:
        out = list(older)
        self.aggregator.merge_into(out, newer)
        return out

    def result(self, partial: list[Any]) -> Any:
        return self.aggregator.results(partial)[0]


def monoid_for(function: str, *, integer: bool = False) -> Monoid:
    return Monoid(function, integer)


def fold(monoid: Monoid, values: list[Any], seq0: int = 0) -> Any:
    """Add values in order; value i has event time i // 2 (so times tie) and arrival seq0 + i."""
    partial = monoid.empty()
    for i, value in enumerate(values):
        partial = monoid.add(partial, value, (seq0 + i) // 2, seq0 + i)
    return partial


def three(values: list[Any], a: int, b: int) -> tuple[list[Any], list[Any], list[Any]]:
    a, b = sorted((a % (len(values) + 1), b % (len(values) + 1)))
    return values[:a], values[a:b], values[b:]


@given(st.sampled_from(TILED), st.booleans(), st.data())
def test_merge_is_associative_with_empty_as_identity(
    function: str, integer: bool, data: st.DataObject
) -> None:
    monoid = monoid_for(function, integer=integer)
    values = data.draw(st.lists(INTS if integer else FLOATS, max_size=12))
    x, y, z = three(values, data.draw(st.integers(0, 12)), data.draw(st.integers(0, 12)))
    px, py, pz = fold(monoid, x), fold(monoid, y, len(x)), fold(monoid, z, len(x) + len(y))

    left = monoid.merge(monoid.merge(px, py), pz)
    right = monoid.merge(px, monoid.merge(py, pz))
    whole = fold(monoid, values)
    assert monoid.result(left) == monoid.result(right) == monoid.result(whole)

    empty = monoid.empty()
    assert monoid.result(monoid.merge(empty, px)) == monoid.result(px)
    assert monoid.result(monoid.merge(px, empty)) == monoid.result(px)
    assert monoid.result(empty) == empty_result(function)


@given(st.lists(FLOATS, max_size=30))
def test_float_sum_is_exact_then_rounded_once(values: list[float]) -> None:
    monoid = monoid_for("sum")
    assert monoid.result(fold(monoid, values)) == math.fsum(values)
    assert monoid.result(fold(monoid, values[::-1])) == math.fsum(values)


@given(st.lists(INTS, max_size=30))
def test_int_sum_stays_an_exact_int(values: list[int]) -> None:
    monoid = monoid_for("sum", integer=True)
    total = monoid.result(fold(monoid, values))
    assert total == sum(values) and type(total) is int


@given(st.lists(FLOATS, min_size=1, max_size=30))
def test_mean_is_the_exact_mean_rounded_once(values: list[float]) -> None:
    monoid = monoid_for("mean")
    exact = sum((Fraction(v) for v in values), Fraction(0)) / len(values)
    assert monoid.result(fold(monoid, values)) == float(exact)


@given(st.lists(FLOATS, max_size=30))
def test_variance_is_the_exact_variance_rounded_once(values: list[float]) -> None:
    n = len(values)
    exact = [Fraction(v) for v in values]
    mean = sum(exact, Fraction(0)) / n if n else Fraction(0)
    squares = sum(((x - mean) ** 2 for x in exact), Fraction(0))
    for function, divisor in (("variance", n - 1), ("variance_pop", n)):
        expected = float(squares / divisor) if divisor > 0 else None
        assert monoid_for(function).result(fold(monoid_for(function), values)) == expected
        root = monoid_for(function.replace("variance", "stddev"))
        assert root.result(fold(root, values)) == (None if expected is None else math.sqrt(expected))


def test_variance_of_equal_values_is_exactly_zero() -> None:
    monoid = monoid_for("variance")
    assert monoid.result(fold(monoid, [0.1] * 7)) == 0.0


def test_last_and_first_break_time_ties_by_arrival() -> None:
    last, first = monoid_for("last"), monoid_for("first")
    # fold gives values 0 and 1 the same event time (0); 1 arrived later.
    assert last.result(fold(last, ["a", "b"])) == "b"
    assert first.result(fold(first, ["a", "b"])) == "a"
    # merging in either order keeps the tie-break
    early, late = fold(last, ["a"]), fold(last, ["b"], 1)
    assert last.result(last.merge(late, early)) == last.result(last.merge(early, late)) == "b"
