"""Background writers run at a lower CPU priority than the loop (streamfs/worker/priority.py)."""

from __future__ import annotations

import os
import threading

from streamfs.worker.priority import BACKGROUND_NICENESS, lower_priority


def test_lower_priority_lowers_only_the_calling_thread() -> None:
    seen: dict[str, int] = {}

    def background() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        lower_priority()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    assert seen["after"] == min(seen["before"] + BACKGROUND_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
