"""How the kernel's loops are compiled: numba without its reference counting of arrays.

numba counts the references to every array a compiled function receives or unpacks from a
tuple, with an atomic increment at entry and a decrement at exit, and it removes those pairs
only where the control flow is simple. The kernel's loops call helpers once per event or per
key with a dozen arrays each, so these atomic operations were most of their time (perf,
2026-12-04: NRT_incref/NRT_decref ~60 % of the compiled loop's samples; the three-count view
went from 0.71 to 0.17 µs per event with 100 keys, the benchmark view from 3.5 to 2.3 µs).

A function compiled this way must not allocate (np.zeros, .copy(), a slice assignment):
numba refuses to compile it ("NRT required but not enabled"). Its Python caller allocates the
scratch it needs and passes it in (batch.loop_scratch, serving.step_scratch).
The arrays it reads are borrowed from that caller, which holds them for the whole call.
Helpers marked inline="always" are compiled into their caller and take its options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., object])


def unmanaged(function: F) -> F:
    """numba.njit(cache=True) without reference counting (`_nrt=False`; see the module docstring)."""
    return cast(F, numba.njit(cache=True, _nrt=False)(function))  # type: ignore[call-overload]
