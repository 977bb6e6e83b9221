"""The compiled kernel: the engine's lateness-0 path over numpy arrays, compiled with numba.

The Python engine (engine/ingest, reads, ...) is the definition; the kernel is its exact twin for
the common shape of view (see layout.py), 5-8x faster per event through ViewEngine.process and
12x through the columnar process_table, and it hands a view back to the Python engine whenever
it meets something it cannot hold exactly. Modules: fixed (exact sums in fixed point), distinct
(count_distinct values: one table row per key, field and value), batch (the event loop), layout
(a view as the kernel's tables), store (the arrays and KeyState in and out), run (a batch in,
rows or answers out), columns (archive tables straight to the kernel's arrays), serving (Redis
serving states off the arrays), snapshot (a partition's arrays as a checkpoint snapshot and
back), unmanaged (the loops compiled without reference counting), cachestamp (numba's cache
emptied when any kernel source changed: numba itself only checks each function's own file).

STREAMFS_ENGINE=python turns the kernel off (every view runs on the Python engine).
"""

from __future__ import annotations

import os
from pathlib import Path

from streamfs.engine.kernel import batch, cachestamp
from streamfs.engine.kernel.layout import KernelLayout
from streamfs.engine.kernel.store import KernelStore

_SOURCES = Path(__file__).parent
cachestamp.drop_stale(
    cachestamp.cache_directory(batch.process, _SOURCES), cachestamp.sources_digest(_SOURCES)
)


def kernel_enabled() -> bool:
    return os.environ.get("STREAMFS_ENGINE", "kernel").lower() != "python"


__all__ = ["KernelLayout", "KernelStore", "kernel_enabled"]
