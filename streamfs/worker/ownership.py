"""Which worker may write a partition's Parquet output: an ownership epoch in the data directory.

Kafka tells a worker it lost a partition only at its next poll, so a worker cut off from the
broker (but not from the shared data directory) may still flush what it had fetched after the
group gave the partition to another worker: Parquet files whose offsets overlap the new
owner's, i.e. duplicate rows. Each new owner therefore bumps the partition's epoch (under a
file lock) before it truncates the uncommitted files, and every flush checks, under the same
lock and for as long as it writes, that the epoch is still the one its worker claimed. A
worker that finds it changed writes nothing for that partition and drops it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamfs import durable
from streamfs.checkpoint import CheckpointStore
from streamfs.sources import TopicPartitionKey


class PartitionOwnership:
    """`owner` (the epoch) and `owner.lock` in each partition's checkpoint directory."""

    def __init__(self, checkpoints: CheckpointStore) -> None:
        self.checkpoints = checkpoints
        self.epochs: dict[TopicPartitionKey, int] = {}

    def _paths(self, tp: TopicPartitionKey) -> tuple[Path, Path]:
        directory = self.checkpoints.partition_dir(*tp)
        return directory / "owner", directory / "owner.lock"

    def _read(self, path: Path) -> int:
        try:
            return int(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            return 0

    def claim(self, tp: TopicPartitionKey) -> int:
        """Become the partition's writer: bump its epoch; earlier owners' flushes stop writing."""
        epoch_path, lock_path = self._paths(tp)
        with durable.exclusive_lock(lock_path):
            epoch = self._read(epoch_path) + 1
            durable.write_bytes(epoch_path, str(epoch).encode("ascii"))
        self.epochs[tp] = epoch
        return epoch

    def release(self, tp: TopicPartitionKey) -> None:
        self.epochs.pop(tp, None)

    @contextmanager
    def writing(self, tp: TopicPartitionKey) -> Iterator[bool]:
        """Hold the partition's lock; yield whether this worker's claim is still the newest."""
        epoch_path, lock_path = self._paths(tp)
        mine = self.epochs.get(tp)
        with durable.exclusive_lock(lock_path):
            yield mine is not None and self._read(epoch_path) == mine
