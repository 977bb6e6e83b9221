"""Aggregations over tiles: one flat, in-place partial per window group (GroupAggregator).

A group's tiled features share one partial (a list): features over the same field share one
accumulator, so count/sum/mean/variance of `amount` keep one (n, Σx[, Σx²]) and each event's
value is made exact once (`exact_scaled`). Partials merge associatively with `empty()` as
identity, which is what lets the engine combine tiles in any grouping.

`add` is given the event time and the per-key arrival sequence number because `first` and
`last` order by (event time, arrival): `last` keeps the greatest, `first` the smallest, so ties
go to the later arrival for `last` and the earlier arrival for `first`.

Null inputs are ignored (SQL semantics). Empty windows: count and count_distinct 0, sum 0,
everything else None. Sums, means and variances are kept as exact binary fractions and rounded
once when read, so they do not depend on the order of merges or on batch boundaries. `stddev`
and `variance` are the *sample* statistics (n - 1, None below two values, like SQL's
STDDEV/VARIANCE); `stddev_pop` and `variance_pop` divide by n.

count_distinct is not tiled (unions of big sets per event are too slow); the engine keeps it
as a map of value → latest time instead (see engine._DistinctWindow).
"""

from __future__ import annotations

import math
from typing import Any


def exact_ratio(numerator: int, exponent: int, divisor: int) -> float:
    """numerator · 2**exponent / divisor, rounded once (int true division is correctly rounded)."""
    if exponent >= 0:
        return (numerator << exponent) / divisor
    return numerator / (divisor << -exponent)


def empty_result(function: str) -> Any:
    """What a feature reads as over an empty window."""
    return 0 if function in ("count", "count_distinct", "sum") else None


# --------------------------------------------------------------------------- fused group partials

_EVENTS, _COUNT, _STATS, _INT_SUM, _MIN, _MAX, _LAST, _FIRST = range(8)
CELL_KINDS = {
    "events": _EVENTS, "count": _COUNT, "stats": _STATS, "int_sum": _INT_SUM,
    "min": _MIN, "max": _MAX, "last": _LAST, "first": _FIRST,
}  # fmt: skip
"""The kinds of cells a GroupAggregator partial holds (engine/kernel maps them to its own)."""
_SPREADS = {
    "stddev": (True, True),
    "stddev_pop": (False, True),
    "variance": (True, False),
    "variance_pop": (False, False),
}
Exact = tuple[int, int]
"""A number as (numerator, k) with value == numerator / 2**k and k ≥ 0 (exact_scaled)."""


def exact_scaled(value: float) -> Exact:
    """value == numerator / 2**k exactly, with k ≥ 0."""
    numerator, denominator = value.as_integer_ratio()
    return numerator, denominator.bit_length() - 1


def spread_result(n: int, s1: int, e1: int, s2: int, e2: int, *, sample: bool, root: bool) -> float | None:
    """Variance or standard deviation from exact partials (n, s1·2**e1 = Σx, s2·2**e2 = Σx²)."""
    denominator = n * (n - 1) if sample else n * n
    if n == 0 or denominator == 0:
        return None
    e = min(e2, 2 * e1)
    numerator = n * (s2 << (e2 - e)) - ((s1 * s1) << (2 * e1 - e))
    variance = exact_ratio(max(numerator, 0), e, denominator)
    return math.sqrt(variance) if root else variance


class GroupAggregator:
    """The tiled features of one window group as one flat partial (a list), updated in place.

    Features over the same field share one accumulator (n, Σx as numerator/2**k[, Σx² likewise]),
    and each event's value is made exact once (`exacts`) for all groups. Exact sums are kept at
    the largest k seen. `partials` / `from_partials` convert to and from the per-feature
    representation that snapshots store (stable across changes of this layout).
    """

    def __init__(self, features: list[tuple[str, int, bool]]) -> None:
        """features: (function, input slot or -1 for "count events", input is an int field)."""
        self.features = features
        stats: dict[int, bool] = {}  # slot -> needs squares
        for function, slot, integer in features:
            if function == "mean" or function in _SPREADS or (function == "sum" and not integer):
                stats[slot] = stats.get(slot, False) or function in _SPREADS
        cells: list[Any] = []
        ops: list[tuple[int, int, int, bool]] = []
        where: dict[tuple[int, int], int] = {}

        def cell(kind: int, slot: int, size: int, squares: bool = False) -> int:
            if (kind, slot) not in where:
                where[kind, slot] = len(cells)
                ops.append((kind, len(cells), slot, squares))
                cells.extend([0] * size if kind in (_EVENTS, _COUNT, _STATS, _INT_SUM) else [None])
            return where[kind, slot]

        for slot, squares in stats.items():
            cell(_STATS, slot, 5 if squares else 3, squares)
        readers: list[tuple[str, int]] = []
        for function, slot, integer in features:
            if function == "count":
                if slot < 0:
                    readers.append(("n", cell(_EVENTS, -1, 1)))
                else:
                    readers.append(("n", where[_STATS, slot] if slot in stats else cell(_COUNT, slot, 1)))
            elif function == "sum":
                readers.append(("int", cell(_INT_SUM, slot, 1)) if integer else ("sum", where[_STATS, slot]))
            elif function == "mean":
                readers.append(("mean", where[_STATS, slot]))
            elif function in _SPREADS:
                readers.append((function, where[_STATS, slot]))
            else:
                kind = {"min": _MIN, "max": _MAX, "last": _LAST, "first": _FIRST}[function]
                readers.append(("last" if kind in (_LAST, _FIRST) else "value", cell(kind, slot, 1)))
        self._cells = cells
        self._ops = tuple(ops)
        self._readers = tuple(readers)
        self.stat_slots = tuple(stats)

    @property
    def ops(self) -> tuple[tuple[int, int, int, bool], ...]:
        """(cell kind, offset in the partial, input slot, keeps squares) of each accumulator."""
        return self._ops

    @property
    def readers(self) -> tuple[tuple[str, int], ...]:
        """(how it is read, offset of its accumulator) of each feature, in the features' order."""
        return self._readers

    def empty(self) -> list[Any]:
        return list(self._cells)

    def add(self, p: list[Any], values: tuple[Any, ...], exacts: list[Any], time: int, seq: int) -> None:
        """Add one event to partial p in place; exacts[slot] = exact_scaled(values[slot])."""
        for kind, off, slot, squares in self._ops:
            if kind == _EVENTS:
                p[off] += 1
                continue
            value = values[slot]
            if value is None:
                continue
            if kind == _STATS:
                p[off] += 1
                numerator, k = exacts[slot]
                have = p[off + 2]
                if k == have:
                    p[off + 1] += numerator
                elif k < have:
                    p[off + 1] += numerator << (have - k)
                else:
                    p[off + 1] = (p[off + 1] << (k - have)) + numerator
                    p[off + 2] = k
                if squares:
                    numerator *= numerator
                    k += k
                    have = p[off + 4]
                    if k == have:
                        p[off + 3] += numerator
                    elif k < have:
                        p[off + 3] += numerator << (have - k)
                    else:
                        p[off + 3] = (p[off + 3] << (k - have)) + numerator
                        p[off + 4] = k
            elif kind == _MAX:
                old = p[off]
                if old is None or value > old:
                    p[off] = value
            elif kind == _MIN:
                old = p[off]
                if old is None or value < old:
                    p[off] = value
            elif kind == _COUNT:
                p[off] += 1
            elif kind == _INT_SUM:
                p[off] = p[off] + value
            elif kind == _LAST:
                old = p[off]
                if old is None or (time, seq) > (old[0], old[1]):
                    p[off] = (time, seq, value)
            else:  # _FIRST
                old = p[off]
                if old is None or (time, seq) < (old[0], old[1]):
                    p[off] = (time, seq, value)

    def merge_into(self, p: list[Any], newer: list[Any]) -> None:
        """p := merge(p, newer), in place; p holds the older events."""
        for kind, off, _slot, squares in self._ops:
            if kind == _STATS:
                p[off] += newer[off]
                _merge_exact(p, newer, off + 1)
                if squares:
                    _merge_exact(p, newer, off + 3)
                continue
            if kind in (_EVENTS, _COUNT, _INT_SUM):
                p[off] = p[off] + newer[off]
                continue
            b = newer[off]
            if b is None:
                continue
            a = p[off]
            if a is None:
                p[off] = b
            elif kind == _MAX:
                if b > a:
                    p[off] = b
            elif kind == _MIN:
                if b < a:
                    p[off] = b
            elif kind == _LAST:
                if (b[0], b[1]) > (a[0], a[1]):
                    p[off] = b
            elif (b[0], b[1]) < (a[0], a[1]):  # _FIRST
                p[off] = b

    def results(self, p: list[Any]) -> list[Any]:
        """The features' values, in the order they were given."""
        out: list[Any] = []
        for how, off in self._readers:
            if how == "n" or how == "value" or how == "int":
                out.append(p[off])
            elif how == "sum":
                out.append(p[off + 1] / (1 << p[off + 2]))
            elif how == "mean":
                n = p[off]
                out.append(p[off + 1] / (n << p[off + 2]) if n else None)
            elif how == "last":
                cell = p[off]
                out.append(None if cell is None else cell[2])
            else:
                sample, root = _SPREADS[how]
                out.append(
                    spread_result(
                        p[off], p[off + 1], -p[off + 2], p[off + 3], -p[off + 4], sample=sample, root=root
                    )
                )
        return out

    def partials(self, p: list[Any]) -> list[Any]:
        """p as per-feature partials (the snapshot representation)."""
        out: list[Any] = []
        for how, off in self._readers:
            if how in ("n", "value", "int", "last"):
                out.append(p[off])
            elif how == "sum":
                out.append((p[off + 1], -p[off + 2]))
            elif how == "mean":
                out.append((p[off], (p[off + 1], -p[off + 2])))
            else:
                out.append((p[off], (p[off + 1], -p[off + 2]), (p[off + 3], -p[off + 4])))
        return out

    def from_partials(self, partials: list[Any]) -> list[Any]:
        """The inverse of `partials` (a shared accumulator takes its parts from any feature)."""
        p = self.empty()
        for (how, off), partial in zip(self._readers, partials, strict=True):
            if how in ("n", "value", "int", "last"):
                p[off] = partial
            elif how == "sum":
                p[off + 1], p[off + 2] = partial[0], -partial[1]
            elif how == "mean":
                p[off], p[off + 1], p[off + 2] = partial[0], partial[1][0], -partial[1][1]
            else:
                n, (s1, e1), (s2, e2) = partial
                p[off : off + 5] = [n, s1, -e1, s2, -e2]
        return p


def _merge_exact(p: list[Any], newer: list[Any], at: int) -> None:
    """p[at] / 2**p[at+1] += newer[at] / 2**newer[at+1], kept at the larger k (exact)."""
    have, k = p[at + 1], newer[at + 1]
    if k == have:
        p[at] += newer[at]
    elif k < have:
        p[at] += newer[at] << (have - k)
    else:
        p[at] = (p[at] << (k - have)) + newer[at]
        p[at + 1] = k
