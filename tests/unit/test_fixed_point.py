"""The kernel's exact fixed-point sums (engine/kernel/fixed.py) against Python's exact integers.

The kernel reads every sum and mean through to_float and mean_float: each must round once,
correctly (round half to even), exactly as Python's int true division does.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs.engine.kernel.fixed import (
    DIGITS,
    MAX_EXPONENT,
    SCALE,
    _nearest_quotient,
    add_float,
    exponent_k,
    from_int,
    mean_float,
    power_of_two,
    representable,
    split,
    to_float,
    to_int,
)

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


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(st.integers(2**52, 2**53 - 1), st.just(2**52), st.just(2**53 - 1)),
    st.sampled_from([0, 1]),
    st.integers(0, 130),
    st.one_of(st.integers(1, 20), st.integers(1, (1 << 31) - 1), st.just((1 << 31) - 1)),
    st.one_of(st.integers(-3, 3), st.integers(-(2**12), 2**12)),
    st.integers(0, 130),
    st.sampled_from([1, -1]),
)
def test_mean_float_rounds_ties_and_near_ties_like_python(
    mantissa: int, halfway: int, shift: int, n: int, nudge: int, nudge_shift: int, sign: int
) -> None:
    """Quotients at or next to a rounding boundary (a float, or the midpoint of two: ties go
    to even), where mean_float's float division is not enough and its exact check must send
    it to the long division; also just below powers of two, where the floats get denser."""
    value = sign * (((2 * mantissa + halfway) << shift) * n + (nudge << min(nudge_shift, shift)))
    if not -LIMIT < value < LIMIT:
        return
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


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-(2**53), 2**53).map(float),
        st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.0**-96, 2.0**-97, 2.0**80, 2.0**80 - 2.0**28, 123.45]),
    )
)
def test_float_parts_read_off_the_bits_match_frexp(x: float) -> None:
    """split, exponent_k and representable read a float's bits (no C library call): they must
    agree with math.frexp and with the exact fraction x is."""
    m, e = split(x)
    assert math.ldexp(m, e) == abs(x) and 0 <= m < 2**53
    denominator = Fraction(x).denominator
    k = denominator.bit_length() - 1  # (a power of two)
    assert exponent_k(x) == k
    assert representable(x) == (x == 0 or (math.frexp(x)[1] <= MAX_EXPONENT and k <= SCALE))


def test_powers_of_two_built_from_bits_are_exact() -> None:
    for e in range(-1022, 1024):
        assert power_of_two(e) == math.ldexp(1.0, e)


def test_the_checked_float_division_answers_almost_every_mean_itself() -> None:
    """_nearest_quotient gives up (NaN, then the long division answers) only near a rounding
    boundary: a k taken wrongly would send every mean the slow way, still exact, so only this
    count would show it."""
    rng = random.Random(11)
    answered = 0
    for _ in range(20_000):
        head, n = rng.randrange(1, 1 << 62), rng.choice([rng.randrange(1, 21), rng.randrange(1, 1 << 31)])
        quotient = _nearest_quotient(head, False, n)
        if quotient == quotient:
            answered += 1
            assert quotient == head / n
    assert answered >= 19_900
