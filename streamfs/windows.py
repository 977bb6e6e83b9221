"""Pure window arithmetic on integer epoch milliseconds.

A window feature of length L and hop H evaluated at time t covers event times in
[start(t), t] with start(t) = floor(t / H)·H + H - L: the L/H most recent H-aligned tiles,
the newest of which contains t. Tiles are numbered by floor(time / H), so tile i covers
[i·H, (i+1)·H). Python's floor division makes this exact for times before 1970 too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A window of `length` ms moving by `hop` ms; both None means lifetime (no start)."""

    length: int | None
    hop: int | None

    @property
    def is_lifetime(self) -> bool:
        return self.length is None

    @property
    def tiles(self) -> int:
        """How many tiles one window spans (1 for lifetime)."""
        if self.length is None or self.hop is None:
            return 1
        return self.length // self.hop

    def tile(self, t: int) -> int:
        """The index of the tile that contains time t (always 0 for lifetime)."""
        return 0 if self.hop is None else t // self.hop

    def first_tile(self, t: int) -> int:
        """The oldest tile inside the window evaluated at t."""
        if self.hop is None:
            return 0
        return t // self.hop + 1 - self.tiles

    def start(self, t: int) -> int | None:
        """start(t), the inclusive lower bound of the window at t; None for lifetime."""
        if self.length is None or self.hop is None:
            return None
        return (t // self.hop) * self.hop + self.hop - self.length

    def tile_start(self, index: int) -> int:
        assert self.hop is not None
        return index * self.hop

    def label(self) -> str:
        from streamfs.durations import label

        if self.length is None or self.hop is None:
            return "lifetime"
        if self.length == self.hop:
            return f"tumbling {label(self.length)}"
        return f"{label(self.length)} every {label(self.hop)}"
