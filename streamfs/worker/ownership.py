"""Which worker may write a partition's output: an ownership epoch in the data directory.

Kafka tells a worker it lost a partition only at its next poll, so a worker cut off from the
broker (but not from the shared data directory) may still flush what it had fetched after the
group gave the partition to another worker: Parquet files whose offsets overlap the new
owner's (duplicate rows), and Redis entries holding an older state of a key than the new owner
wrote (stale values until the key's next event). Each new owner therefore bumps the partition's
epoch before it truncates the uncommitted files, and every Parquet flush and every Redis write
checks, under a lock and for as long as it writes, that the epoch is still the one its worker
claimed. A worker that finds it changed writes nothing for that partition and drops it.

Parquet and Redis have a lock each (`owner.lock`, `owner.online.lock`), so that a Parquet write
on the writer thread never holds up the loop's Redis writes; a claim takes both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from streamfs import durable
from streamfs.checkpoint import CheckpointStore
from streamfs.sources import TopicPartitionKey


class PartitionOwnership:
    """`owner` (the epoch), `owner.lock` and `owner.online.lock` in each partition's checkpoint
    directory."""

    def __init__(self, checkpoints: CheckpointStore) -> None:
        self.checkpoints = checkpoints
        self.epochs: dict[TopicPartitionKey, int] = {}

    def _paths(self, tp: TopicPartitionKey) -> tuple[Path, Path, Path]:
        directory = self.checkpoints.partition_dir(*tp)
        return directory / "owner", directory / "owner.lock", directory / "owner.online.lock"

    def _read(self, path: Path) -> int:
        try:
            return int(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            return 0

    def claim(self, tp: TopicPartitionKey) -> int:
        """Become the partition's writer: bump its epoch; earlier owners' flushes stop writing
        (a write under way ends first: the claim waits for both locks)."""
        epoch_path, lock_path, online_lock_path = self._paths(tp)
        with ExitStack() as locks:
            locks.enter_context(durable.exclusive_lock(lock_path))
            locks.enter_context(durable.exclusive_lock(online_lock_path))
            epoch = self._read(epoch_path) + 1
            durable.write_bytes(epoch_path, str(epoch).encode("ascii"))
        self.epochs[tp] = epoch
        return epoch

    def release(self, tp: TopicPartitionKey) -> None:
        self.epochs.pop(tp, None)

    def writing(self, tp: TopicPartitionKey) -> AbstractContextManager[bool]:
        """Hold the partition's Parquet lock; yield whether this worker's claim is still the newest."""
        return self._holding(tp, self._paths(tp)[1])

    def writing_online(self, tp: TopicPartitionKey) -> AbstractContextManager[bool]:
        """Hold the partition's Redis lock; yield whether this worker's claim is still the newest."""
        return self._holding(tp, self._paths(tp)[2])

    @contextmanager
    def _holding(self, tp: TopicPartitionKey, lock_path: Path) -> Iterator[bool]:
        with durable.exclusive_lock(lock_path):
            mine = self.epochs.get(tp)
            yield mine is not None and self._read(self._paths(tp)[0]) == mine
