"""The kernel's exact fixed-point sums (engine/kernel/fixed.py) against Python's exact integers.

The kernel reads every sum and mean through to_float and mean_float: each must round once,
correctly (round half to even), exactly as Python's int true division does.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs.engine.kernel.fixed import DIGITS, SCALE, add_float, from_int, mean_float, to_float, to_int

LIMIT = 1 << (32 * DIGITS - 2)
scratch = np.zeros(2 * DIGITS + 4, np.int64)


def digits_of(value: int) -> np.ndarray:
    d = np.zeros(DIGITS, np.int64)
    assert from_int(value, d, 0)
    return d


# Integers of every size the digits hold, with runs of ones and zeros (rounding's hard cases).
fixed_values = st.one_of(
    st.integers(-LIMIT + 1, LIMIT - 1),
    st.builds(
        lambda top, low, sign: sign * ((1 << top) - 1 - low) if top else 0,
        st.integers(0, 32 * DIGITS - 3),
        st.integers(0, 3),
        st.sampled_from([1, -1]),
    ),
    st.builds(lambda k, sign: sign * (1 << k), st.integers(0, 32 * DIGITS - 3), st.sampled_from([1, -1])),
    st.builds(
        lambda hi, lo, sign: sign * ((hi << 64) | lo),
        st.integers(0, (1 << 60) - 1),
        st.integers(0, (1 << 64) - 1),
        st.sampled_from([1, -1]),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(fixed_values)
def test_to_float_rounds_once_like_python(value: int) -> None:
    expected = value / (1 << SCALE)
    assert to_float(digits_of(value), 0, scratch) == expected
    assert to_int(digits_of(value)) == value


@settings(max_examples=3000, deadline=None)
@given(fixed_values, st.one_of(st.integers(1, 20), st.integers(1, (1 << 31) - 1)))
def test_mean_float_rounds_once_like_python(value: int, n: int) -> None:
    expected = value / (n << SCALE)
    assert mean_float(digits_of(value), 0, n, scratch) == expected


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 2)), max_size=50
    )
)
def test_sums_of_floats_are_exact(values: list[float]) -> None:
    d = np.zeros(DIGITS, np.int64)
    exact = 0
    for x in values:
        add_float(d, 0, x, 1)
        numerator, denominator = x.as_integer_ratio()
        exact += numerator * (1 << SCALE) // denominator
    assert to_int(d) == exact
    assert to_float(d, 0, scratch) == exact / (1 << SCALE)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, -1]),
            st.integers(-(2**53) + 1, 2**53 - 1),
            st.integers(-SCALE, 80 - 53),
        ),
        max_size=60,
    )
)
def test_adds_and_subtracts_keep_digits_normalized(terms: list[tuple[int, int, int]]) -> None:
    """add_float propagates carries only as far as they go: after every add or subtract of
    values of any representable magnitude the digits are normalized and the sum is exact."""
    d = np.zeros(DIGITS, np.int64)
    exact = 0
    for sign, mantissa, exponent in terms:
        x = math.ldexp(float(mantissa), exponent)
        add_float(d, 0, x, sign)
        exact += sign * (mantissa << (exponent + SCALE))
        assert all(0 <= digit < 2**32 for digit in d[: DIGITS - 1].tolist())
        assert to_int(d) == exact
