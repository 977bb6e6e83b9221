"""SIGTERM/SIGINT ask a running worker to stop after the current batch (it then flushes and commits)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def stop_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """Call `request_stop` on SIGTERM/SIGINT while inside; the previous handlers come back on exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after this batch", signum)
        request_stop()

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: the caller stops the worker itself
        yield
        return
    try:
        yield
    finally:
        for sig, restored in previous.items():
            signal.signal(sig, restored)
