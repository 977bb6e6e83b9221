"""Memory for the kernel's next growth, made ready on a thread before the loop needs it.

When the count_distinct table, the lateness buffer pool or the per-key arrays grow, the loop
used to allocate the bigger arrays and write them at once. Writing memory the process has
never touched costs page faults, and on a VM memory the guest never used is slow to fault in:
~145 ms for 64 MB here (2026-12-07), against ~5 ms for memory freed and taken again. A 20,000
events/s worker's state grows for minutes (5 minutes of allowed lateness keep 6 M buffered
events), so each doubling was a stall of the loop's turn, and so of freshness (a doubling of
the count_distinct table to 2 M rows stalled the loop 170 ms).

So the store asks for the next arrays well before it needs them: a thread makes them (numpy
allocates and fills without the GIL, so the loop runs on meanwhile) and the growth takes them
if they are of the shape it chose. The arrays are made as the loop would make them (the growth then
writes every row it reads), so results cannot depend on whether they were prepared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Prepared(Generic[T]):
    """`make()`, run on a thread from now on; `take(size)` waits for it if that is its size."""

    def __init__(self, size: int, make: Callable[[], T]) -> None:
        self.size = size
        self._make = make
        self._made: T | None = None
        self._thread = threading.Thread(target=self._run, name="streamfs-prepare", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._made = self._make()

    def take(self, size: int) -> T | None:
        """What `make` made if it was prepared for `size`, else None (then the caller makes it).

        None too in a forked child (a checkpoint writer), where the thread does not run."""
        if size != self.size:
            return None
        self._thread.join()
        made, self._made = self._made, None
        return made


def taken(prepared: Prepared[T] | None, size: int) -> T | None:
    """`prepared.take(size)`, or None when nothing was prepared."""
    return None if prepared is None else prepared.take(size)
