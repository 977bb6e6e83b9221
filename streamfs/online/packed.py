"""Packed entries: a key's serving state as little-endian 64-bit words, packed in bulk by
compiled code. online/layout.py decides which entries are packed; docs/storage-online.md.

Writing JSON spent most of its time turning numbers into Python objects and then into text
(for a 15-feature view over 24 h: 17 of the 42 µs each key cost, Redis included), and reading
it turned them all back. When every feature of a view is a number (counts, sums, means,
min/max/last of numbers...), its entries are words instead:

    word 0      MAGIC: b"\\xb5sfs", the format version (1), three zero bytes
    words 1-2   the fingerprint: its 16 hex digits in ASCII
    words 3-5   max_time, events, written_ms
    word 6      G, the number of window groups
    G words     n_g: group g's number of steps
    kinds       one letter per group column, group after group, zero-padded to a whole word:
                ``i`` int64; ``f`` float64, NaN for None; ``n`` an int held in a float64, NaN
                for None (StepArrays.kinds)
    per group   its n_g starts (int64), then its n_g rows of values, row after row

The reader decodes many entries in one compiled call: it bisects each group's starts for the
read time and takes the values of that row (PackedReader).

A JSON entry starts with "[", a packed one with 0xB5: readers tell them apart by the first byte.
Packing needs a little-endian host (the words are written as the CPU holds them; elsewhere
every entry is JSON); reading converts, so any host reads them.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np

from streamfs.engine.kernel.unmanaged import unmanaged
from streamfs.engine.serving import StepArrays

MAGIC = b"\xb5sfs\x01\x00\x00\x00"
PACKED_PREFIX = MAGIC[:1]
CAN_PACK = sys.byteorder == "little"
_MAGIC_WORD = int.from_bytes(MAGIC, "little")
_HEAD_WORDS = 7
_INT, _INT_IN_FLOAT = b"i"[0], b"n"[0]


def fingerprint_bytes(fingerprint: str) -> bytes:
    """What words 1-2 hold: the fingerprint's first 16 characters, zero-padded."""
    return fingerprint.encode()[:16].ljust(16, b"\0")


def pack_entries(
    arrays: StepArrays,
    chosen: list[int],
    fingerprint: str,
    written_ms: int,
    max_times: list[int],
    events: list[int],
) -> list[bytes]:
    """The packed entry of each key index in `chosen` (keys with steps in `arrays`)."""
    if not chosen:
        return []
    columns = arrays.columns
    widths = np.array([len(group) for group in columns], np.int64)
    groups = len(columns)
    kind_words = (len(arrays.kinds) + 7) // 8
    picked = np.asarray(chosen, np.int64)
    steps = np.ascontiguousarray(arrays.steps[picked])
    sizes = _HEAD_WORDS + groups + kind_words + steps @ (1 + widths)
    offsets = np.zeros(len(chosen) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    firsts = np.cumsum(arrays.steps, axis=0) - arrays.steps + arrays.region  # every key's first row
    words = np.zeros(int(offsets[-1]), np.int64)
    fingerprint_words = np.frombuffer(fingerprint_bytes(fingerprint), np.int64)
    _pack(
        words,
        words.view(np.float64),
        words.view(np.uint8),
        offsets,
        np.ascontiguousarray(firsts[picked]),
        steps,
        widths,
        np.cumsum(np.concatenate(([0], widths))),
        np.array([c for group in columns for c in group], np.int64),
        np.frombuffer(arrays.kinds, np.uint8),
        arrays.starts,
        arrays.ints,
        arrays.floats,
        np.array([_MAGIC_WORD, fingerprint_words[0], fingerprint_words[1], written_ms], np.int64),
        np.asarray(max_times, np.int64)[picked],
        np.asarray(events, np.int64)[picked],
    )
    raw = words.tobytes()
    bounds = (offsets * 8).tolist()
    return [raw[bounds[i] : bounds[i + 1]] for i in range(len(chosen))]


@unmanaged
def _pack(
    words: np.ndarray, floats: np.ndarray, octets: np.ndarray, offsets: np.ndarray,
    firsts: np.ndarray, steps: np.ndarray, widths: np.ndarray, column_at: np.ndarray,
    columns: np.ndarray, kinds: np.ndarray, starts: np.ndarray, ints: np.ndarray,
    values: np.ndarray, constants: np.ndarray, max_times: np.ndarray, events: np.ndarray,
) -> None:  # fmt: skip
    """Write entry i into words[offsets[i]:offsets[i + 1]] (floats and octets: views of words)."""
    groups = widths.shape[0]
    total = columns.shape[0]
    head = _HEAD_WORDS + groups + (total + 7) // 8
    for i in range(offsets.shape[0] - 1):
        w = offsets[i]
        words[w] = constants[0]
        words[w + 1] = constants[1]
        words[w + 2] = constants[2]
        words[w + 3] = max_times[i]
        words[w + 4] = events[i]
        words[w + 5] = constants[3]
        words[w + 6] = groups
        for g in range(groups):
            words[w + _HEAD_WORDS + g] = steps[i, g]
        kinds_at = (w + _HEAD_WORDS + groups) * 8
        for c in range(total):
            octets[kinds_at + c] = kinds[c]
        at = w + head
        for g in range(groups):
            n = steps[i, g]
            first = firsts[i, g]
            for r in range(n):
                words[at + r] = starts[first + r]
            at += n
            for r in range(first, first + n):
                for c in range(column_at[g], column_at[g + 1]):
                    column = columns[c]
                    if kinds[c] == _INT:
                        words[at] = ints[r, column]
                    else:
                        floats[at] = values[r, column]
                    at += 1


Pick = tuple[int, tuple[int, ...] | None]
"""(group index, positions in the group's values, or None for all of them): layout.EntryReader's."""

_VALID, _MAX_TIME, _EVENTS, _WRITTEN = range(4)
_AS_INT, _AS_FLOAT, _AS_NONE = 0, 1, 2


class PackedRead(NamedTuple):
    """PackedReader.read's answer, entry by entry."""

    valid: list[bool]
    """False for an entry of another definition or format (it reads as absent)."""
    max_times: list[int]
    events: list[int]
    written: list[int]
    rows: list[list[Any]]


class PackedReader:
    """Reads the requested features of many packed entries of one view in one compiled call:
    the entries joined into one buffer, each one's steps found by bisection, the values put
    into arrays and turned into Python values column by column (no Python loop per value)."""

    __slots__ = ("_fingerprint", "_order", "_pick_group", "_pick_position", "_widths")

    def __init__(
        self,
        fingerprint: str,
        group_widths: tuple[int, ...],
        picks: tuple[Pick, ...],
        order: tuple[int, ...] | None,
    ) -> None:
        self._fingerprint = _native(fingerprint_bytes(fingerprint), "<i8")
        self._widths = np.asarray(group_widths, np.int64)
        groups, positions = [], []
        for group, chosen in picks:
            for position in range(group_widths[group]) if chosen is None else chosen:
                groups.append(group)
                positions.append(position)
        self._pick_group = np.asarray(groups, np.int64)
        self._pick_position = np.asarray(positions, np.int64)
        self._order = None if order is None else list(order)

    def read(self, raws: list[bytes], as_of: int) -> PackedRead:
        """Each entry's header and its values at max(as_of, its max_time), in the requested
        feature order (ints int, floats float, None where the value is None)."""
        count, width = len(raws), len(self._pick_group)
        lengths = np.fromiter((len(raw) for raw in raws), np.int64, count)
        if (lengths % 8).any():  # not whole words: not an entry (it reads as absent)
            raws = [raw if len(raw) % 8 == 0 else b"" for raw in raws]
            lengths[lengths % 8 != 0] = 0
        offsets = np.zeros(count + 1, np.int64)
        np.cumsum(lengths // 8, out=offsets[1:])
        joined = b"".join(raws)  # (every entry is whole words)
        words = _native(joined, "<i8")
        ints = np.zeros((count, width), np.int64)
        floats = np.zeros((count, width), np.float64)
        kinds = np.zeros((count, width), np.uint8)
        head = np.zeros((count, 4), np.int64)
        groups = len(self._widths)
        _read(
            words, _native(joined, "<f8"), np.frombuffer(joined, np.uint8), offsets, as_of,
            self._fingerprint, self._widths, self._pick_group, self._pick_position,
            np.zeros(groups, np.int64), np.zeros(groups, np.int64), ints, floats, kinds, head,
        )  # fmt: skip
        values = floats.astype(object)
        as_int = kinds == _AS_INT
        if as_int.any():
            values[as_int] = ints[as_int].astype(object)
        as_none = kinds == _AS_NONE
        if as_none.any():
            values[as_none] = None
        if self._order is not None:
            values = values[:, self._order]
        columns = head.T.tolist()
        return PackedRead(
            [bool(v) for v in columns[_VALID]], columns[_MAX_TIME], columns[_EVENTS], columns[_WRITTEN],
            values.tolist(),
        )  # fmt: skip


_NATIVE = {"<i8": np.dtype(np.int64), "<f8": np.dtype(np.float64)}


def _native(raw: bytes, little_endian: str) -> np.ndarray:
    """The little-endian words of `raw` as native numbers (no copy on a little-endian host)."""
    return np.frombuffer(raw, little_endian).astype(_NATIVE[little_endian], copy=False)


@unmanaged
def _read(
    words: np.ndarray, floats: np.ndarray, octets: np.ndarray, offsets: np.ndarray, as_of: int,
    fingerprint: np.ndarray, widths: np.ndarray, pick_group: np.ndarray, pick_position: np.ndarray,
    group_at: np.ndarray, group_column: np.ndarray, ints: np.ndarray, values: np.ndarray, kinds: np.ndarray,
    head: np.ndarray,
) -> None:  # fmt: skip
    """Entry e (words[offsets[e]:offsets[e + 1]]): its header into head[e], the picked values
    into ints[e] or values[e], how to read each into kinds[e]. An entry that is not one of
    this view's packed entries (or is cut short) gets head[e, _VALID] = 0."""
    groups = widths.shape[0]
    total = 0
    for g in range(groups):
        total += widths[g]
    first_value = _HEAD_WORDS + groups + (total + 7) // 8
    for e in range(offsets.shape[0] - 1):
        w = offsets[e]
        end = offsets[e + 1]
        if (
            end - w < first_value or words[w] != _MAGIC_WORD or words[w + 1] != fingerprint[0]
            or words[w + 2] != fingerprint[1] or words[w + 6] != groups
        ):  # fmt: skip
            continue
        at = w + first_value
        column = 0
        for g in range(groups):
            group_at[g] = at
            group_column[g] = column
            at += words[w + _HEAD_WORDS + g] * (1 + widths[g])
            column += widths[g]
        if at != end:
            continue
        max_time = words[w + 3]
        head[e, _VALID] = 1
        head[e, _MAX_TIME] = max_time
        head[e, _EVENTS] = words[w + 4]
        head[e, _WRITTEN] = words[w + 5]
        t = as_of if as_of > max_time else max_time
        kinds_at = (w + _HEAD_WORDS + groups) * 8
        for j in range(pick_group.shape[0]):
            g = pick_group[j]
            p = pick_position[j]
            n = words[w + _HEAD_WORDS + g]
            starts = group_at[g]
            lo, hi = 0, n  # the steps starting at or before t
            while lo < hi:
                mid = (lo + hi) // 2
                if words[starts + mid] <= t:
                    lo = mid + 1
                else:
                    hi = mid
            at = starts + n + (lo - 1) * widths[g] + p  # (starts[0] = max_time <= t: lo >= 1)
            kind = octets[kinds_at + group_column[g] + p]
            if kind == _INT:
                ints[e, j] = words[at]
                kinds[e, j] = _AS_INT
            else:
                x = floats[at]
                if x != x:
                    kinds[e, j] = _AS_NONE
                elif kind == _INT_IN_FLOAT:
                    ints[e, j] = np.int64(x)
                    kinds[e, j] = _AS_INT
                else:
                    values[e, j] = x
                    kinds[e, j] = _AS_FLOAT
