"""Written offline output is freed a few tables at a time (SealedOutput.release)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from streamfs.offline.writer import OfflineWriter, SealedOutput


def test_written_output_is_freed_a_few_tables_at_a_time(tmp_path: Path) -> None:
    """Each call frees at most `limit` tables or rows and says whether anything is left, so the
    worker's loop spreads a commit's frees over its turns (Committer.release_written)."""
    row_tables = {("view", "t", p): [pa.table({"x": [p, i]}) for i in range(5)] for p in range(3)}
    events: dict[tuple[str, str, int], list[object]] = {("source", "t", 0): [object() for _ in range(4)]}
    sealed = SealedOutput(OfflineWriter(tmp_path, []), {}, events, row_tables, {})
    partial_calls = 0
    while not sealed.release(limit=4):  # 15 tables and 4 events, 4 a call: done at the 5th call
        partial_calls += 1
        assert partial_calls < 10
        left = sum(map(len, row_tables.values())) + sum(map(len, events.values()))
        assert left == 19 - 4 * partial_calls
    assert partial_calls == 4
    assert not sealed.row_tables and not sealed.events
    assert sealed.release(limit=4)  # (nothing left: done at once)
