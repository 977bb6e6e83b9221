"""The commit log under concurrent workers: one worker's record never undoes another's."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from streamfs.checkpoint import CommitLog


def _record_many(root: str, partition: int, rounds: int, regressions: multiprocessing.Queue[int]) -> None:
    log = CommitLog(Path(root), "group")
    seen = 0
    for offset in range(1, rounds + 1):
        if (log.offset("payments", partition) or 0) != offset - 1:
            seen += 1  # another worker wrote back an older copy of this partition's entry
        log.record({("payments", partition): offset})
    regressions.put(seen)


def test_concurrent_records_of_different_partitions_are_all_kept(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    regressions: multiprocessing.Queue[int] = context.Queue()
    rounds = 300
    workers = [
        context.Process(target=_record_many, args=(str(tmp_path), partition, rounds, regressions))
        for partition in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert [regressions.get(timeout=5) for _ in workers] == [0, 0, 0]
    assert CommitLog(tmp_path, "group").read() == {f"payments:{p}": rounds for p in range(3)}
