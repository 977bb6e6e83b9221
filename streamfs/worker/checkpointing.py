"""Step 4 of the commit protocol: engine checkpoints, every `checkpoint_interval_s`, on revoke
and at shutdown, at exactly the offsets about to be committed.

A partition whose position has not moved since this worker last checkpointed it is not
snapshotted again: its state is the one that checkpoint holds (state changes only by processing
its records). That is the common case at shutdown, whose final commit is followed by the
revoke of every partition when the consumer closes.

Periodic checkpoints can be written in the background (WorkerOptions.background_checkpoints):
the worker forks, and the child process snapshots the state it inherited (copy-on-write, frozen
at exactly the offsets about to be committed) and writes it while the loop goes on, the way
Redis's BGSAVE works. Snapshotting 10,000 keys takes about a second of pure Python, which
otherwise stalls consumption (and freshness) every interval. The commit does not wait for it:
recovery takes the newest checkpoint at or below the committed offset and replays the archive
from there, so a checkpoint that is late, or never written (the worker died first: the child
dies with it), only means a longer replay. Revoke and shutdown checkpoints are written in the
loop, so the next owner of a partition finds them.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable

from streamfs.checkpoint import CheckpointStore
from streamfs.engine import Engine
from streamfs.sources import TopicPartitionKey
from streamfs.worker.priority import lower_priority

log = logging.getLogger(__name__)

CAN_FORK = hasattr(os, "fork") and sys.platform == "linux"


class Checkpointer:
    def __init__(self, engine: Engine, store: CheckpointStore, interval_s: float) -> None:
        self.engine = engine
        self.store = store
        self.interval_s = interval_s
        self._last = time.monotonic()
        self._saved: dict[TopicPartitionKey, int] = {}  # offset of the checkpoint this worker saved last
        self._child: tuple[int, list[tuple[TopicPartitionKey, int]]] | None = None  # a background writer

    def due(self) -> bool:
        self.reap()
        return time.monotonic() - self._last >= self.interval_s

    def save(self, positions: Iterable[tuple[TopicPartitionKey, int]], *, background: bool = False) -> None:
        """Checkpoint each (partition, position) whose state is not already checkpointed there.

        With `background` (and fork available) a child process writes them and this returns at
        once; otherwise they are written before this returns. Either way a background writer
        still running from the previous call is waited for first (one at a time).
        """
        self.reap(block=True)
        self._last = time.monotonic()
        todo = [(tp, offset) for tp, offset in positions if self._saved.get(tp) != offset]
        if not todo:
            return
        if not (background and CAN_FORK):
            self._write(todo)
            self._saved.update(todo)
            return
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, measured by the worker tests
            _child_main(parent, lambda: self._write(todo))
        self._child = (pid, todo)

    def reap(self, *, block: bool = False) -> None:
        """Collect a finished background writer (wait for it with `block`)."""
        if self._child is None:
            return
        pid, todo = self._child
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done == 0:
            return  # still writing
        self._child = None
        if os.waitstatus_to_exitcode(status) == 0:
            self._saved.update(todo)
        else:
            log.warning(
                "background checkpoint of %s failed (exit status %s); recovery replays from the previous one",
                ", ".join(f"{t}[{p}]@{o}" for (t, p), o in todo),
                os.waitstatus_to_exitcode(status),
            )

    def forget(self, tp: TopicPartitionKey) -> None:
        """The partition's state is recovered or dropped: its next checkpoint must be written."""
        self.reap(block=True)  # a writer of its old state must not finish after a recovery started
        self._saved.pop(tp, None)

    def _write(self, todo: list[tuple[TopicPartitionKey, int]]) -> None:
        for (topic, partition), offset in todo:
            snapshots = {engine.name: engine.snapshot(partition) for engine in self.engine.for_topic(topic)}
            self.store.save(topic, partition, offset, snapshots)


def _child_main(
    parent: int, write: Callable[[], None]
) -> None:  # pragma: no cover - runs in the forked child
    """Write the checkpoint and exit without running any of the parent's cleanup (os._exit)."""
    code = 1
    try:
        gc.disable()  # a collection would touch (and so copy) every object of the parent
        lower_priority()  # the loop it forked from goes first
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # not the worker's stop handler
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == parent:  # else the worker died before prctl: write nothing
            write()
            code = 0
    finally:  # an exception is reported through the exit status
        os._exit(code)
