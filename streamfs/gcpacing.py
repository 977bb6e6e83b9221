"""Fewer cyclic garbage collections while a long-running loop processes batches.

CPython collects its youngest generation every 700 net container allocations, and each batch
builds lists of thousands of tuples (columns, steps, rows) that reference counting frees a
moment later anyway; the collections it triggers also promote objects and so start full
collections, which scan every object the process holds (keys, interned values, dirty sets).
Measured in the worker (benchmarks/worker.py, 1 M payments): 9,041 collections took 5.7 s of a
35.5 s run (16 %); with the first threshold at 50,000 there were 4, taking 0.05 s. Cycles are
still collected, once 50,000 more containers are alive than at the last collection, so the
memory that cyclic garbage can hold stays bounded.

The objects alive when the loop starts (modules, compiled functions, the pipeline: ~170,000 in
a worker) are frozen (gc.freeze) for its duration: they live as long as the process, and every
full collection scanned them (63 ms each here, a stall at 20,000 events/s). Objects made later
are collected as before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BATCH_THRESHOLDS = (50_000, 20, 100)


@contextmanager
def batch_pacing(thresholds: tuple[int, int, int] | None = BATCH_THRESHOLDS) -> Iterator[None]:
    """Collect with `thresholds` inside the block (None: Python's own, and nothing frozen),
    restoring them after; what is alive when it starts is frozen until it ends."""
    if thresholds is None:
        yield
        return
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*previous)
