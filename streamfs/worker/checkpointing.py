"""Step 4 of the commit protocol: engine checkpoints, every `checkpoint_interval_s`, on revoke
and at shutdown, at exactly the offsets about to be committed.

A partition whose position has not moved since this worker last checkpointed it is not
snapshotted again: its state is the one that checkpoint holds (state changes only by processing
its records). That is the common case at shutdown, whose final commit is followed by the
revoke of every partition when the consumer closes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from streamfs.checkpoint import CheckpointStore
from streamfs.engine import Engine
from streamfs.sources import TopicPartitionKey


class Checkpointer:
    def __init__(self, engine: Engine, store: CheckpointStore, interval_s: float) -> None:
        self.engine = engine
        self.store = store
        self.interval_s = interval_s
        self._last = time.monotonic()
        self._saved: dict[TopicPartitionKey, int] = {}  # offset of the checkpoint this worker saved last

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval_s

    def save(self, positions: Iterable[tuple[TopicPartitionKey, int]]) -> None:
        """Checkpoint each (partition, position) whose state is not already checkpointed there."""
        for tp, offset in positions:
            if self._saved.get(tp) == offset:
                continue
            topic, partition = tp
            snapshots = {engine.name: engine.snapshot(partition) for engine in self.engine.for_topic(topic)}
            self.store.save(topic, partition, offset, snapshots)
            self._saved[tp] = offset
        self._last = time.monotonic()

    def forget(self, tp: TopicPartitionKey) -> None:
        """The partition's state is recovered or dropped: its next checkpoint must be written."""
        self._saved.pop(tp, None)
