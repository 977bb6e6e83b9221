"""The kernel's compiled functions loaded before the first batch needs them.

numba compiles each function once and caches the machine code on disk (cache=True), but every
process loads it again on the function's first call: 50-250 ms each, and the first one also
loads numba's own typing machinery (~170 ms). A worker that does this in its first batches
stalls them (2026-12-04: a 300 ms turn of the loop at the start of a steady 20,000 events/s,
when the count_distinct table first grew). `warm_up` calls each function the loop, the Redis
writes and the checkpoints use, with no events and no keys, so that happens before consuming
instead. (A forked checkpoint writer inherits what its parent loaded: 2026-12-05, its first
snapshot took 579 ms instead of ~100 when it had to load them itself.)
"""

from __future__ import annotations

import numpy as np

from streamfs.engine.kernel import distinct
from streamfs.engine.kernel import snapshot as kernel_snapshot
from streamfs.engine.kernel.keyindex import KeyIndex
from streamfs.engine.kernel.run import run_columns
from streamfs.engine.kernel.serving import serving_columns
from streamfs.engine.kernel.store import KernelStore


def warm_up(store: KernelStore) -> None:
    """Load the compiled functions a batch, a Redis write and a checkpoint of this store call (with the
    argument types they are called with: each type is compiled and loaded on its own)."""
    empty = np.empty(0, np.int64)
    values = np.empty((0, store.bvals.shape[1]), np.float64)
    ids = np.empty((0, store.bids.shape[1]), np.int64)
    run_columns(store, empty, empty, values, ids, 0, True, [], columnar=True)
    index = KeyIndex()  # a throwaway: its lookup, insert and rehash (keys of a batch's table)
    index.add(b"", 0)
    index.lookup(np.zeros(2, np.int64), np.zeros(0, np.uint8))
    index.rehash(len(index.table))
    serving_columns(store, [()], [-1])  # one key the store does not hold: every step is skipped
    store._live()
    # A checkpoint's: a partition with no keys (take lists its count_distinct values by one pass
    # over the table, as it does while the store holds no keys), and the other way of listing them
    kernel_snapshot.take(store, "", "", -1)
    distinct.live_entries(store.table, store.heads, empty, store.reach())
    if int(store.meta[0]) == 0:  # (an empty table: rebuilding it changes nothing)
        store._prune(len(store.table))
