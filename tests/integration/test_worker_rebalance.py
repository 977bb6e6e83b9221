"""Two workers in one consumer group, with rebalances mid-stream, against the real broker and Redis.

Worker A starts alone on a 4-partition topic (about a dozen accounts per partition); worker B
joins while events are still being produced (A gives up partitions: flush, checkpoint, commit;
B recovers them at A's commit); then A leaves gracefully (SIGTERM) and B takes everything.
The final Parquet rows (none missing, none twice) and Redis values must equal the engine's
own evaluation of the whole topic.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

from worker_checks import assert_outputs_exact, committed_offsets, load_pipe, produce, stop, worker_process

from streamfs.settings import Settings

PARTITIONS = 4
PHASE = 6_000


def _wait(condition: Any, timeout: float, what: str, *logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


def _assigned(log: Path) -> list[tuple[int, int]]:
    """(partition, offset) of every assignment a worker logged."""
    return [(int(p), int(o)) for p, o in re.findall(r"\[(\d+)\]@(\d+)", log.read_text())]


def test_join_and_graceful_leave_mid_stream(topic_factory: Any, settings: Settings, tmp_path: Path) -> None:
    pipe = load_pipe(topic_factory(PARTITIONS, prefix="rebalance"))
    events = list(pipe.generate(3 * PHASE, accounts=50, seed=11))
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"

    def done() -> int:
        return sum(max(o, 0) for o in committed_offsets(settings, pipe.TOPIC, PARTITIONS).values())

    produce(pipe, settings, events[:PHASE])
    a = worker_process(settings, pipe.TOPIC, log=log_a, until_caught_up=False)
    b = None
    try:
        _wait(lambda: done() > 0, 60, "worker A to commit", log_a)
        b = worker_process(settings, pipe.TOPIC, log=log_b, until_caught_up=False)
        _wait(lambda: bool(_assigned(log_b)), 60, "worker B to be assigned partitions", log_a, log_b)
        at_join = done()
        produce(pipe, settings, events[PHASE : 2 * PHASE])
        _wait(lambda: done() >= PHASE + PHASE // 2, 60, "both workers to make progress", log_a, log_b)

        a.send_signal(signal.SIGTERM)  # A leaves gracefully: its partitions go to B
        assert a.wait(30) == 0, log_a.read_text()[-3000:]
        at_leave = done()
        produce(pipe, settings, events[2 * PHASE :])
        _wait(lambda: done() == len(events), 90, "worker B to commit every record", log_a, log_b)
        b.send_signal(signal.SIGTERM)
        assert b.wait(30) == 0, log_b.read_text()[-3000:]
    finally:
        stop(a)
        if b is not None:
            stop(b)

    assert 0 < at_join < len(events) and at_leave < len(events), (at_join, at_leave)
    handed_over = [p for p, offset in _assigned(log_b) if offset > 0]
    assert handed_over, "B never took over a partition with committed progress"
    assert {p for p, _ in _assigned(log_b)} == set(range(PARTITIONS)), "B did not end up with every partition"
    assert len(_assigned(log_a)) > PARTITIONS, "A was never reassigned (no rebalance while it ran)"
    assert_outputs_exact(pipe, settings, total=len(events))
