"""Cache prefetches for the kernel's loop: a later event's key state is asked for before it is needed.

With 10,000 keys a view's state (~8 KB per key for the benchmark view) is far larger than the
CPU caches, so each event's first touch of its key's rows waits on memory: batch.process cost
~1.0 µs per event with 10,000 keys and ~0.45 µs with 100 on the same stream (2026-12-04). The
loop knows the keys and times of the events to come, so it asks the memory system for the
cache lines a later event will touch (its tile ids, totals, the current tiles' cells, its
count_distinct probes; one event ahead, the cells of the tiles it will expire and, with
allowed lateness, the buffered events it will settle or read and the free buffer entries it
will take) while the current one is worked on. A prefetch is a hint: it never
faults and changes no value, so results cannot depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LINE = 8
"""int64/float64 items per 64-byte cache line."""


def _emit_prefetch(context: Any, builder: Any, array_type: Any, array_value: Any, indices: list[Any]) -> Any:
    """llvm.prefetch (a read, kept in every cache level) of the item at `indices`."""
    array_struct = context.make_array(array_type)(context, builder, value=array_value)
    pointer = cgutils.get_item_pointer(context, builder, array_type, array_struct, indices)  # type: ignore[no-untyped-call]
    bytes_pointer = ir.IntType(8).as_pointer()
    int32 = ir.IntType(32)
    function_type = ir.FunctionType(ir.VoidType(), [bytes_pointer, int32, int32, int32])
    function = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
        builder.module, function_type, "llvm.prefetch.p0"
    )
    builder.call(function, [builder.bitcast(pointer, bytes_pointer), int32(0), int32(3), int32(1)])
    return context.get_dummy_value()


@intrinsic
def _prefetch_intrinsic(typingctx, array, row, column):  # type: ignore[no-untyped-def]
    """Prefetch &array[row, column] of a 2-D array."""
    signature = types.void(array, row, column)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        indices = [context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2)]
        return _emit_prefetch(context, builder, sig.args[0], args[0], indices)

    return signature, codegen


@intrinsic
def _prefetch_item_intrinsic(typingctx, array, index):  # type: ignore[no-untyped-def]
    """Prefetch &array[index] of a 1-D array."""
    signature = types.void(array, index)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        indices = [context.cast(builder, args[1], sig.args[1], types.intp)]
        return _emit_prefetch(context, builder, sig.args[0], args[0], indices)

    return signature, codegen


prefetch_item = cast(Callable[[np.ndarray, Any], None], _prefetch_item_intrinsic)
prefetch = cast(Callable[[np.ndarray, Any, Any], None], _prefetch_intrinsic)


@numba.njit(cache=True, inline="always")
def prefetch_cells(array: np.ndarray, row: int, start: int, count: int) -> None:
    """The cache lines of array[row, start:start+count] (count ≥ 1)."""
    for column in range(start, start + count, LINE):
        prefetch(array, row, column)
    prefetch(array, row, start + count - 1)  # (the row need not start on a line)
