"""Exact sums of floats in fixed point, compiled: DIGITS signed base-2**32 digits scaled by 2**-SCALE.

The Python engine sums floats exactly as (numerator, k) with unbounded ints; the kernel cannot
allocate, so it keeps every sum as the integer N = Σ x·2**SCALE in DIGITS int64 digits of 32 bits
(the top one signed). A float x is *representable* when x·2**SCALE is an integer and
|x| < 2**MAX_EXPONENT: then adding, subtracting (expiring a tile from a running total) and
merging are exact, so results do not depend on grouping, exactly as in the Python engine, and
reading rounds once, correctly (round half to even, like Python's int true division). An
event with a value that is not representable sends the view back to the Python engine.

Digits are kept normalized after every change: digits 0..DIGITS-2 in [0, 2**32), the top digit
holding the sign, so each add is a handful of integer operations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.cpython.unsafe import numbers as unsafe_numbers
from numba.extending import intrinsic

from streamfs.engine.kernel.unmanaged import unmanaged

SCALE = 96
"""Bits after the binary point: x is representable down to 2**-96 (every float ≥ ~1e-13 whole)."""
DIGITS = 7
"""224 bits: |N| < 2**223, i.e. |sum| < 2**127 (values below 2**MAX_EXPONENT, 2**47 of them)."""
MAX_EXPONENT = 80
_MASK = (1 << 32) - 1
EXACT_INT = 2**53
"""Ints strictly inside ±2**53 are exact as float64; the kernel holds no larger ones."""


@intrinsic
def _float_bits_intrinsic(typingctx, x):  # type: ignore[no-untyped-def]
    """The IEEE 754 bits of a float64, as an int64 (a reinterpretation, no conversion)."""
    signature = types.int64(types.float64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(64))

    return signature, codegen


@intrinsic
def _bits_float_intrinsic(typingctx, b):  # type: ignore[no-untyped-def]
    """The float64 whose IEEE 754 bits are b."""
    signature = types.float64(types.int64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())

    return signature, codegen


@intrinsic
def _fused_multiply_add_intrinsic(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a·b + c rounded once (the CPU's fused multiply-add)."""
    signature = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.fma(args[0], args[1], args[2])

    return signature, codegen


# (typed for mypy: compiled code calls them with the value alone)
_float_bits = cast(Callable[[float], int], _float_bits_intrinsic)
_bits_float = cast(Callable[[np.int64], float], _bits_float_intrinsic)
fused_multiply_add = cast(Callable[[float, float, float], float], _fused_multiply_add_intrinsic)
leading_zeros = cast(Callable[[int], int], unsafe_numbers.leading_zeros)
trailing_zeros = cast(Callable[[int], int], unsafe_numbers.trailing_zeros)


@numba.njit(cache=True, inline="always")
def split(x: float) -> tuple[int, int]:
    """(m, e) with |x| = m·2**e, m an integer < 2**53, read off the bits of x (finite), where
    math.frexp was a call into the C library per value."""
    b = _float_bits(x)
    biased = (b >> 52) & 0x7FF
    m = b & 0xFFFFFFFFFFFFF
    if biased == 0:
        return m, -1074  # zero or subnormal
    return m | 0x10000000000000, biased - 1075


@numba.njit(cache=True, inline="always")
def power_of_two(e: int) -> float:
    """2.0**e for -1022 ≤ e ≤ 1023, built from its bits: x·power_of_two(e) is exactly
    math.ldexp(x, e) whenever the result is a normal float (no C library call)."""
    return _bits_float(np.int64(e + 1023) << 52)


def exact_as_float(value: Any) -> bool:
    """An int or float that float64 holds exactly: any float, an int strictly inside ±2**53."""
    return type(value) is float or (type(value) is int and -EXACT_INT < value < EXACT_INT)


@numba.njit(cache=True, inline="always")
def representable(x: float) -> bool:
    """x·2**SCALE is an integer and |x| < 2**MAX_EXPONENT (x finite)."""
    if x == 0.0:
        return True
    m, e = split(x)
    if e + 64 - leading_zeros(m) > MAX_EXPONENT:  # (frexp's exponent: the bit length of m, plus e)
        return False
    return e + trailing_zeros(m) >= -SCALE


@numba.njit(cache=True, inline="always")
def exponent_k(x: float) -> int:
    """k of exact_scaled(x): the number of binary digits after the point (0 for integers)."""
    if x == 0.0:
        return 0
    m, e = split(x)
    e += trailing_zeros(m)  # (one instruction: a whole float had a 50-step loop here)
    return -e if e < 0 else 0


@numba.njit(cache=True, inline="always")
def normalize(d: np.ndarray, at: int) -> None:
    """Propagate carries so digits at..at+DIGITS-2 are in [0, 2**32) and the top one is signed."""
    carry = np.int64(0)
    for i in range(at, at + DIGITS - 1):
        x = d[i] + carry
        carry = x >> 32
        d[i] = x & _MASK
    d[at + DIGITS - 1] += carry


@numba.njit(cache=True, inline="always")
def add_float(d: np.ndarray, at: int, x: float, sign: int) -> None:
    """d[at:at+DIGITS] += sign·x·2**SCALE (x representable). Digits at and above the lowest one
    touched end normalized; digits below it are left as they were (normalize() them if they
    may not be)."""
    if x == 0.0:
        return
    m, e = split(x)
    if x < 0:
        sign = -sign
    p = e + SCALE  # N_x = m·2**p; p ≤ MAX_EXPONENT - 53 + SCALE keeps j + 2 < DIGITS
    if p < 0:
        m >>= -p  # only zero bits go: x is representable
        p = 0
    j = at + p // 32
    r = p % 32
    low = (m & _MASK) << r  # < 2**63
    high = (m >> 32) << r  # < 2**52
    d[j] += sign * (low & _MASK)
    d[j + 1] += sign * ((low >> 32) + (high & _MASK))
    d[j + 2] += sign * (high >> 32)
    # Carries from digit j up, stopping once they die out past the digits touched: the digits
    # below j did not change, and those above stay as they were (normalized, if they were).
    carry = np.int64(0)
    top = at + DIGITS - 1
    i = j
    while i < top:
        digit = d[i] + carry
        carry = digit >> 32
        d[i] = digit & _MASK
        i += 1
        if carry == 0 and i > j + 2:
            return
    d[top] += carry


@numba.njit(cache=True, inline="always")
def _top_digit(d: np.ndarray, at: int, count: int) -> int:
    """Which of the digits d[at:at+count] is the highest nonzero one (-1: all are zero)."""
    for i in range(count - 1, -1, -1):
        if d[at + i] != 0:
            return i
    return -1


@unmanaged
def _round_magnitude(mag: np.ndarray, at: int, count: int, shift: int, sticky: bool) -> float:
    """Correctly rounded value of Σ mag[at+i]·2**(32i) · 2**-shift for i < count (+ a nonzero
    remainder below it if sticky), for nonnegative digits in [0, 2**32)."""
    top = _top_digit(mag, at, count)
    if top < 0:
        return 0.0
    bits = 32 * top + 64 - leading_zeros(mag[at + top])
    if bits <= 63 and not sticky:
        whole = np.int64(0)
        for i in range(top, -1, -1):
            whole = (whole << 32) | mag[at + i]
        return float(whole) * power_of_two(-shift)  # int64 → float rounds correctly; the scaling is exact
    # The top 63 bits of the magnitude, then round to 53 with the bits below as sticky.
    cut = bits - 63
    head = np.int64(0)
    for i in range(top, -1, -1):
        digit = mag[at + i]
        position = 32 * i - cut  # where digit i's lowest bit lands in head
        if position >= 0:
            head += digit << position
        elif position > -32:
            head += digit >> (-position)
            if digit & ((np.int64(1) << (-position)) - 1):
                sticky = True
        elif digit != 0:
            sticky = True
    keep = head >> 10
    rest = head & 0x3FF
    if rest > 0x200 or (rest == 0x200 and (sticky or (keep & 1) == 1)):
        keep += 1
    return float(keep) * power_of_two(cut + 10 - shift)  # (exact: sums and means are far from 2**-1022)


@unmanaged
def _magnitude(d: np.ndarray, at: int, out: np.ndarray, extra: int) -> int:
    """|N| as nonnegative digits into out[extra:extra+DIGITS] (out[:extra] zero); returns the sign."""
    for i in range(extra):
        out[i] = 0
    negative = d[at + DIGITS - 1] < 0
    for i in range(DIGITS):
        out[extra + i] = -d[at + i] if negative else d[at + i]
    # normalize the (possibly negated) digits to [0, 2**32)
    carry = np.int64(0)
    for i in range(extra, extra + DIGITS):
        x = out[i] + carry
        carry = x >> 32
        out[i] = x & _MASK
    return -1 if negative else 1


# Reads inline the common case (a nonnegative sum, a mean by checked float division) into the
# loop: called, each passed its two arrays as structs of 7 words, and a row reads a sum and a
# mean per window (6 calls a row for the benchmark view). The rare cases stay calls.
_round_magnitude_inline = cast(
    Callable[[np.ndarray, int, int, int, bool], float],
    numba.njit(cache=True, inline="always")(_round_magnitude.py_func),  # type: ignore[attr-defined]
)


@numba.njit(cache=True, inline="always")
def to_float(d: np.ndarray, at: int, scratch: np.ndarray) -> float:
    """N·2**-SCALE rounded once to the nearest float."""
    if d[at + DIGITS - 1] >= 0:  # normalized and nonnegative: the digits are the magnitude
        return _round_magnitude_inline(d, at, DIGITS, SCALE, False)
    sign = _magnitude(d, at, scratch, 0)
    return sign * _round_magnitude(scratch, 0, DIGITS, SCALE, False)


@numba.njit(cache=True, inline="always")
def _head(d: np.ndarray, at: int) -> tuple[int, int, bool]:
    """(H, cut, inexact) with N = H·2**cut + ε, 0 ≤ ε < 2**cut, H < 2**62, for a normalized
    nonnegative N; inexact says whether ε may be nonzero (it is zero when cut is 0)."""
    top = _top_digit(d, at, DIGITS)
    if top < 0:
        return 0, 0, False
    bits = 32 * top + 64 - leading_zeros(d[at + top])
    cut = max(bits - 62, 0)
    head = np.int64(0)
    for i in range(top, -1, -1):
        position = 32 * i - cut  # where digit i's lowest bit lands in head
        if position >= 0:
            head += d[at + i] << position
        elif position > -32:
            head += d[at + i] >> (-position)
        else:
            break  # (the digits below only make ε)
    return int(head), cut, cut > 0


@numba.njit(cache=True, inline="always")
def _nearest_quotient(head: int, inexact: bool, n: int) -> float:
    """The float nearest (head + ε)/n for 0 < head < 2**62, 1 ≤ n < 2**31 and an unknown
    0 ≤ ε < 1 (ε = 0 unless inexact), or NaN when ε or a tie could decide it (rarely: then
    the long division answers).

    q = RN(hi/n) for hi = RN(head); the fused multiply-add gives hi - q·n exactly, and head -
    hi is exact, so D = head - q·n is known exactly (every term a multiple of min(ulp(q), 1),
    under 2**41 of them). The quotient is q + (D + ε)/n: q moves by the whole ulps nearest
    D/(ulp·n), and the rest decides the rounding unless it lies within ε of half an ulp."""
    hi = float(head)
    lo = float(head - np.int64(hi))
    nf = float(n)
    q = hi / nf
    remainder = fused_multiply_add(-q, nf, hi) + lo
    bits = _float_bits(q)
    biased = (bits >> 52) & 0x7FF
    ulp = power_of_two(biased - 1075)
    ulps = ulp * nf
    half = 0.5 * ulps
    # k = floor(remainder / ulps + 0.5) by comparisons: |remainder| is under ~1.5 ulps (q is
    # RN(hi/n), |lo| ≤ ulp(hi)/2), and a division here sat on the read's critical path (perf:
    # the mean was ~9 % of the benchmark loop's samples). Any k is safe: the checks below
    # accept nearest only when rest proves it.
    k = (
        np.int64(remainder >= half) + np.int64(remainder >= 3.0 * half)
        - np.int64(remainder < -half) - np.int64(remainder < -3.0 * half)
    )  # fmt: skip
    nearest = q + k * ulp
    rest = remainder - k * ulps
    nearest_bits = _float_bits(nearest)
    if (nearest_bits >> 52) & 0x7FF != biased:
        return np.nan  # it left q's binade: the ulp changed
    if nearest_bits & 0xFFFFFFFFFFFFF == 0 and rest < 0:
        return np.nan  # just below a power of two, where the floats are twice as dense
    if -half < rest and rest + (1.0 if inexact else 0.0) < half:
        return nearest
    return np.nan


@numba.njit(cache=True, inline="always")
def mean_float(d: np.ndarray, at: int, n: int, scratch: np.ndarray) -> float:
    """N·2**-SCALE / n rounded once (n ≥ 1, n < 2**31): a float division checked exactly
    (_nearest_quotient) for a nonnegative N, else long division."""
    if d[at + DIGITS - 1] >= 0:
        head, cut, inexact = _head(d, at)
        if head == 0:
            return 0.0
        quotient = _nearest_quotient(head, inexact, n)
        if quotient == quotient:
            return quotient * power_of_two(cut - SCALE)  # (exact: far from the float range's ends)
    return _mean_by_long_division(d, at, n, scratch)


@unmanaged
def _mean_by_long_division(d: np.ndarray, at: int, n: int, scratch: np.ndarray) -> float:
    """mean_float by long division with 3 extra digits: every case, at ~1.7 times the cost
    (84 against 50 ns on a Zen 1 core: up to 3 int64 divisions, each 14-45 cycles there)."""
    sign = _magnitude(d, at, scratch, 3)
    count = DIGITS + 3
    remainder = np.int64(0)
    top = count - 1
    while top >= 0 and scratch[top] == 0:  # leading zero digits: quotient digit 0, remainder 0
        top -= 1  # (a sum's top digits mostly are: no division for them)
    first = -1  # the quotient's first nonzero digit
    i = top
    while i >= 0:
        current = (remainder << 32) | scratch[i]
        q = current // n
        scratch[i] = q
        remainder = current - q * n
        if first < 0 and q != 0:
            first = i
        if first >= 0 and i <= first - 2:
            break  # ≥ 65 quotient bits: the rest only says whether the quotient goes on
        i -= 1
    sticky = remainder != 0
    for k in range(max(i, 0)):  # the dividend digits not divided: part of that rest
        if scratch[k] != 0:
            sticky = True
        scratch[k] = 0
    return sign * _round_magnitude(scratch, 0, count, SCALE + 96, sticky)


def to_int(digits: np.ndarray) -> int:
    """N as a Python int (for snapshots: numerator at scale 2**-SCALE)."""
    value = 0
    for i in range(DIGITS - 1, -1, -1):
        value = (value << 32) + int(digits[i])
    return value


def from_int(value: int, out: np.ndarray, at: int) -> bool:
    """Store N = value into out[at:at+DIGITS]; False if it does not fit."""
    if value >= 1 << (32 * DIGITS - 2) or value < -(1 << (32 * DIGITS - 2)):
        return False
    for i in range(DIGITS - 1):
        out[at + i] = (value >> (32 * i)) & _MASK
    out[at + DIGITS - 1] = value >> (32 * (DIGITS - 1))
    return True
