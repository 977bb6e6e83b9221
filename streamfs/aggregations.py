"""Aggregations as small monoids over immutable partial values: empty / add / merge / result.

A partial is a plain value (int, float, tuple or None) so tiles can be snapshotted, compared
and restored without custom serialisation, and merging never aliases state. `add` is given
the event time and the per-key arrival sequence number because `first` and `last` order by
(event time, arrival): `last` keeps the greatest, `first` the smallest, so ties go to the
later arrival for `last` and the earlier arrival for `first`.

Null inputs are ignored (SQL semantics). Empty windows: count and count_distinct 0, sum 0,
everything else None. Sums, means and variances are
computed from exact partials and rounded once when read, so they do not depend on the order
of merges or on batch boundaries. `stddev` and `variance` are the *sample* statistics (n - 1, None below
two values, like SQL's STDDEV/VARIANCE); `stddev_pop` and `variance_pop` divide by n.

count_distinct is not a monoid over tiles here (unions of big sets per event are too slow);
the engine keeps it as a map of value → latest time instead (see engine.DistinctWindow).
"""

from __future__ import annotations

import math
from typing import Any, Protocol


class Monoid(Protocol):
    """The four operations every tiled aggregation provides."""

    def empty(self) -> Any: ...

    def add(self, partial: Any, value: Any, time: int, seq: int) -> Any: ...

    def merge(self, older: Any, newer: Any) -> Any: ...

    def result(self, partial: Any) -> Any: ...


class Count:
    """Counts non-null values (or every event when the feature has no field)."""

    def empty(self) -> int:
        return 0

    def add(self, partial: int, value: Any, time: int, seq: int) -> int:
        return partial + 1

    def merge(self, older: int, newer: int) -> int:
        return older + newer

    def result(self, partial: int) -> int:
        return partial


def exact(value: float) -> tuple[int, int]:
    """A float (or int) as an exact (mantissa, exponent) pair: value == mantissa · 2**exponent."""
    numerator, denominator = value.as_integer_ratio()
    return numerator, 1 - denominator.bit_length()


def exact_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The exact sum of two (mantissa, exponent) pairs; integer arithmetic, no rounding."""
    if a[1] <= b[1]:
        return a[0] + (b[0] << (b[1] - a[1])), a[1]
    return (a[0] << (a[1] - b[1])) + b[0], b[1]


def exact_ratio(numerator: int, exponent: int, divisor: int) -> float:
    """numerator · 2**exponent / divisor, rounded once (int true division is correctly rounded)."""
    if exponent >= 0:
        return (numerator << exponent) / divisor
    return numerator / (divisor << -exponent)


EXACT_ZERO = (0, 0)


class Sum:
    """Sums exactly: integer fields as Python ints, floats as exact binary fractions.

    Exact sums are associative, so a window's sum is the same whatever the order of tiles,
    merges, batches or restarts: online, offline and backfill agree to the last bit, and the
    one rounding happens when the result is read.
    """

    def __init__(self, *, integer: bool = False) -> None:
        self.integer = integer

    def empty(self) -> Any:
        return 0 if self.integer else EXACT_ZERO

    def add(self, partial: Any, value: float, time: int, seq: int) -> Any:
        if self.integer:
            return partial + value
        return exact_add(partial, exact(value))

    def merge(self, older: Any, newer: Any) -> Any:
        if self.integer:
            return older + newer
        return exact_add(older, newer)

    def result(self, partial: Any) -> float:
        if self.integer:
            return partial  # type: ignore[no-any-return]
        return exact_ratio(partial[0], partial[1], 1)


class Mean:
    """Partial (n, exact sum); the mean is rounded once from the exact sum."""

    def empty(self) -> tuple[int, tuple[int, int]]:
        return (0, EXACT_ZERO)

    def add(
        self, partial: tuple[int, tuple[int, int]], value: float, time: int, seq: int
    ) -> tuple[int, tuple[int, int]]:
        return (partial[0] + 1, exact_add(partial[1], exact(value)))

    def merge(
        self, older: tuple[int, tuple[int, int]], newer: tuple[int, tuple[int, int]]
    ) -> tuple[int, tuple[int, int]]:
        return (older[0] + newer[0], exact_add(older[1], newer[1]))

    def result(self, partial: tuple[int, tuple[int, int]]) -> float | None:
        n, (numerator, exponent) = partial
        return exact_ratio(numerator, exponent, n) if n else None


class Min:
    def empty(self) -> Any:
        return None

    def add(self, partial: Any, value: Any, time: int, seq: int) -> Any:
        return value if partial is None or value < partial else partial

    def merge(self, older: Any, newer: Any) -> Any:
        if older is None:
            return newer
        if newer is None:
            return older
        return newer if newer < older else older

    def result(self, partial: Any) -> Any:
        return partial


class Max:
    def empty(self) -> Any:
        return None

    def add(self, partial: Any, value: Any, time: int, seq: int) -> Any:
        return value if partial is None or value > partial else partial

    def merge(self, older: Any, newer: Any) -> Any:
        if older is None:
            return newer
        if newer is None:
            return older
        return newer if newer > older else older

    def result(self, partial: Any) -> Any:
        return partial


class Last:
    """Partial (time, seq, value): the value with the greatest (event time, arrival)."""

    def empty(self) -> Any:
        return None

    def add(self, partial: Any, value: Any, time: int, seq: int) -> Any:
        if partial is None or (time, seq) > (partial[0], partial[1]):
            return (time, seq, value)
        return partial

    def merge(self, older: Any, newer: Any) -> Any:
        if older is None:
            return newer
        if newer is None:
            return older
        return newer if (newer[0], newer[1]) > (older[0], older[1]) else older

    def result(self, partial: Any) -> Any:
        return None if partial is None else partial[2]


class First:
    """Partial (time, seq, value): the value with the smallest (event time, arrival)."""

    def empty(self) -> Any:
        return None

    def add(self, partial: Any, value: Any, time: int, seq: int) -> Any:
        if partial is None or (time, seq) < (partial[0], partial[1]):
            return (time, seq, value)
        return partial

    def merge(self, older: Any, newer: Any) -> Any:
        if older is None:
            return newer
        if newer is None:
            return older
        return newer if (newer[0], newer[1]) < (older[0], older[1]) else older

    def result(self, partial: Any) -> Any:
        return None if partial is None else partial[2]


class Spread:
    """Variance / standard deviation from exact partials (n, Σx, Σx²).

    With exact sums the textbook formula (n·Σx² - (Σx)²) / (n·(n-1)) has no cancellation error:
    the variance is rounded once, and the standard deviation is its correctly rounded square root.
    """

    def __init__(self, *, sample: bool, root: bool) -> None:
        self.sample = sample
        self.root = root

    def empty(self) -> tuple[int, tuple[int, int], tuple[int, int]]:
        return (0, EXACT_ZERO, EXACT_ZERO)

    def add(self, partial: Any, value: float, time: int, seq: int) -> Any:
        mantissa, exponent = exact(value)
        return (
            partial[0] + 1,
            exact_add(partial[1], (mantissa, exponent)),
            exact_add(partial[2], (mantissa * mantissa, 2 * exponent)),
        )

    def merge(self, older: Any, newer: Any) -> Any:
        return (older[0] + newer[0], exact_add(older[1], newer[1]), exact_add(older[2], newer[2]))

    def result(self, partial: Any) -> float | None:
        n, (s1, e1), (s2, e2) = partial
        denominator = n * (n - 1) if self.sample else n * n
        if n == 0 or denominator == 0:
            return None
        # n·Σx² - (Σx)² at the common exponent e = min(e2, 2·e1); both terms are exact integers.
        e = min(e2, 2 * e1)
        numerator = n * (s2 << (e2 - e)) - ((s1 * s1) << (2 * e1 - e))
        variance = exact_ratio(max(numerator, 0), e, denominator)
        return math.sqrt(variance) if self.root else variance


def monoid_for(function: str, *, integer: bool = False) -> Monoid:
    """The monoid implementing an aggregation name (count_distinct is handled by the engine).

    `integer` says the input field is an int, so `sum` can stay an exact Python int.
    """
    table: dict[str, Monoid] = {
        "count": Count(),
        "sum": Sum(integer=integer),
        "mean": Mean(),
        "min": Min(),
        "max": Max(),
        "last": Last(),
        "first": First(),
        "stddev": Spread(sample=True, root=True),
        "stddev_pop": Spread(sample=False, root=True),
        "variance": Spread(sample=True, root=False),
        "variance_pop": Spread(sample=False, root=False),
    }
    if function not in table:
        raise ValueError(f"no tiled monoid for aggregation {function!r}")
    return table[function]


def empty_result(function: str) -> Any:
    """What a feature reads as over an empty window."""
    return 0 if function in ("count", "count_distinct", "sum") else None
