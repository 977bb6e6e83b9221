"""The partitions a worker owns: where it is in each, what it committed, where it resumes.

Positions (the next offset to read) move in the data path, committed offsets in the commit
protocol; `resume_offset` is where an assigned partition starts again (docs/worker.md, recovery).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from streamfs.checkpoint import CommitLog
from streamfs.metrics import WorkerMetrics
from streamfs.sources import PartitionRun, TopicPartitionKey

log = logging.getLogger(__name__)


class PartitionTable:
    """Per owned partition: position, committed offset and the end offset to catch up with."""

    def __init__(self, commit_log: CommitLog, metrics: WorkerMetrics) -> None:
        self.commit_log = commit_log
        self.metrics = metrics
        self.positions: dict[TopicPartitionKey, int] = {}  # next offset to read, per owned partition
        self.committed: dict[TopicPartitionKey, int] = {}
        self.targets: dict[TopicPartitionKey, int] = {}  # end offsets, for until_caught_up
        self._rewound: set[TopicPartitionKey] = set()  # partitions whose records went below the position

    def resume_offset(self, tp: TopicPartitionKey, kafka_committed: int | None, low: int = 0) -> int:
        """Where to resume: the larger of Kafka's committed offset and the commit log's, else `low`."""
        known = [o for o in (kafka_committed, self.commit_log.offset(*tp)) if o is not None]
        return max(known) if known else low

    def warn_beyond_end(self, tp: TopicPartitionKey, start: int, high: int) -> None:
        self.metrics.resume_beyond_end.labels(*map(str, tp)).inc()
        log.error(
            "%s[%d]: resuming at offset %d beyond the end offset %d: the broker lost records or "
            "the topic was re-created (an in-memory broker restarted?). Records it now holds below "
            "%d will not be processed; committed output is kept (docs/worker.md, broker restarts)",
            tp[0], tp[1], start, high, start,
        )  # fmt: skip

    def take(self, tp: TopicPartitionKey, committed: int, high: int | None) -> None:
        """Own a partition whose output is committed up to `committed` (its state is recovered)."""
        self.positions[tp] = committed
        self.committed[tp] = committed
        self._rewound.discard(tp)
        if high is not None:
            self.targets[tp] = high

    def forget(self, tp: TopicPartitionKey) -> None:
        self.positions.pop(tp, None)
        self.committed.pop(tp, None)
        self.targets.pop(tp, None)

    def owned(self, partitions: Sequence[TopicPartitionKey] | None = None) -> list[TopicPartitionKey]:
        """All owned partitions, or those of `partitions` that are owned."""
        if partitions is None:
            return list(self.positions)
        return [tp for tp in partitions if tp in self.positions]

    def moved(self, partitions: Sequence[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The position of each partition that moved since its last commit: the offsets to commit."""
        return {tp: self.positions[tp] for tp in partitions if self.positions[tp] != self.committed.get(tp)}

    def admit(self, run: PartitionRun) -> PartitionRun | None:
        """The run's records to process, and the partition's position moved past them; None if
        nothing is left. Records of a partition not owned are dropped (late records of a
        revoked partition), and so are records below the position: they were processed already,
        and a broker only sends them again after an offset reset (e.g. a restarted in-memory
        broker whose topic was re-created); they are counted and logged (skipped_below)."""
        tp = (run.topic, run.partition)
        position = self.positions.get(tp)
        if position is None or not run.offsets:
            return None
        offsets = run.offsets
        if offsets[0] < position or not all(map(int.__lt__, offsets, offsets[1:])):
            run = self._above(run, position)
            if not run.offsets:
                return None
        self.positions[tp] = run.offsets[-1] + 1
        return run

    def _above(self, run: PartitionRun, position: int) -> PartitionRun:
        """The run's records at or beyond the position, which moves past each one kept."""
        kept = PartitionRun(run.topic, run.partition, [], [], [])
        tp = (run.topic, run.partition)
        for offset, value, stamp in zip(run.offsets, run.values, run.timestamps, strict=True):
            if offset < position:
                self.skipped_below(tp, offset, position)
                continue
            kept.offsets.append(offset)
            kept.values.append(value)
            kept.timestamps.append(stamp)
            position = offset + 1
        return kept

    def skipped_below(self, tp: TopicPartitionKey, offset: int, position: int) -> None:
        """A record below the position (offsets reset): count it, log once per partition."""
        self.metrics.skipped.labels(tp[0], str(tp[1])).inc()
        if tp not in self._rewound:
            self._rewound.add(tp)
            log.error(
                "%s[%d]: the broker sent offset %d below this worker's position %d (offsets reset: topic "
                "re-created or broker data lost?); skipping records below %d, committed output untouched",
                tp[0], tp[1], offset, position, position,
            )  # fmt: skip

    def update_lag(self) -> None:
        for tp, position in self.positions.items():
            target = self.targets.get(tp)
            if target is not None:
                self.metrics.lag.labels(tp[0], str(tp[1])).set(max(0, target - position))
