"""A one-line progress bar on stderr: done/total, rate and ETA. No dependency, no threads.

It draws only when the stream is a terminal (and not asked to be quiet), at most every
`interval_s`, by rewriting one line with a carriage return; otherwise it is silent, so logs and
CI output stay clean. `close()` ends the line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_count", "format_seconds"]

_WIDTH = 24


class Progress:
    """Counts units of work; `update(n)` adds n and redraws when due."""

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "",
        unit: str = "events",
        stream: TextIO | None = None,
        quiet: bool = False,
        interval_s: float = 0.2,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = not quiet and callable(isatty) and bool(isatty())
        self.interval_s = interval_s
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def update(self, count: int) -> None:
        self.done += count
        if self.enabled and time.monotonic() - self._drawn >= self.interval_s:
            self.draw()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        head = f"{self.label} " if self.label else ""
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            left = max(0, self.total - self.done)
            eta = format_seconds(left / rate) if rate > 0 else "?"
            return (
                f"{head}[{bar}] {fraction:6.1%} {format_count(self.done)}/{format_count(self.total)} "
                f"{self.unit}  {format_count(int(rate))}/s  ETA {eta}"
            )
        return f"{head}{format_count(self.done)} {self.unit}  {format_count(int(rate))}/s"

    def draw(self) -> None:
        text = self.line()
        pad = " " * max(0, self._width - len(text))
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._width = len(text)
        self._drawn = time.monotonic()

    def close(self) -> None:
        if self.enabled:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


def format_count(n: int) -> str:
    """1234 -> '1,234'; 12_345_678 -> '12.3M'."""
    if n >= 10_000_000:
        return f"{n / 1_000_000:.1f}M"
    return f"{n:,}"


def format_seconds(seconds: float) -> str:
    """75 -> '1m15s'; 3700 -> '1h01m'."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
