"""String keys → slots without a Python object per key: one partition's keys, by their UTF-8 bytes.

A worker's batch names each key once per row as Arrow strings. Turning the distinct ones into
Python tuples and looking them up in the store's dicts cost ~0.45 µs per distinct key per batch
(2026-12-04: ~0.3 s of the engine benchmark's 1.5 s, where most of a batch's keys are distinct).
This index answers from the Arrow buffers themselves, in compiled code; only keys it has not
seen yet go to the store (KernelStore.slot, the source of truth), and are then added here.

It can only be stale if a key's slot changed, and a slot changes only when its partition is
dropped (KernelStore.drop), which drops the partition's index too. Two strings are the same
key exactly when their UTF-8 bytes are equal, as for Python's str. KernelStore also keeps one
that gives string values their interned ids the same way (its `slots` are those ids).
"""

from __future__ import annotations

import numba
import numpy as np

from streamfs.engine.kernel.prefetch import prefetch_item

EMPTY = -1
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, inline="always")
def _hash(data: np.ndarray, start: int, end: int) -> np.uint64:
    """FNV-1a of data[start:end], then a multiply-xorshift so nearby keys spread over the table."""
    h = _FNV_OFFSET
    for i in range(start, end):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    h = (h ^ (h >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    return h ^ (h >> np.uint64(32))


@numba.njit(cache=True, inline="always")
def _same(pool: np.ndarray, at: int, length: int, data: np.ndarray, start: int, end: int) -> bool:
    if end - start != length:
        return False
    for i in range(length):  # noqa: SIM110 (compiled: a loop, not a generator)
        if pool[at + i] != data[start + i]:
            return False
    return True


LOOKUP_AHEAD = 16
"""_lookup asks for the entry of the string this many ahead (and the key bytes of the one half as
far): a batch's keys are spread over an index the kernel's loop has since pushed out of the
caches, so each lookup's table → entry → bytes chain was three waits on memory (10,000 card keys
timed alone: 59-63 ns per string with the caches flushed, 26 with these prefetches; 18-20 warm
either way)."""


@numba.njit(cache=True)
def _lookup(  # type: ignore[no-untyped-def]
    table, hashes, slots, starts, lengths, pool, offsets, data, out
):
    """out[i] = the slot of string i (offsets[i]:offsets[i+1] of data), or EMPTY if unknown.
    First every string's hash (asking for its table line), then the probes, each asking ahead
    for a later string's entry and key bytes (prefetch.py: hints, no value depends on them)."""
    mask = len(table) - 1
    n = len(out)
    wanted = np.empty(n, np.uint64)
    for i in range(n):
        h = _hash(data, offsets[i], offsets[i + 1])
        wanted[i] = h
        prefetch_item(table, np.int64(h & np.uint64(mask)))
    for i in range(n):
        ahead = i + LOOKUP_AHEAD
        if ahead < n:
            entry = table[np.int64(wanted[ahead] & np.uint64(mask))]
            if entry != EMPTY:
                prefetch_item(hashes, entry)
                prefetch_item(starts, entry)
                prefetch_item(lengths, entry)
                prefetch_item(slots, entry)
        nearer = i + LOOKUP_AHEAD // 2
        if nearer < n:
            entry = table[np.int64(wanted[nearer] & np.uint64(mask))]
            if entry != EMPTY:
                prefetch_item(pool, starts[entry])
        start, end = offsets[i], offsets[i + 1]
        h = wanted[i]
        p = np.int64(h & np.uint64(mask))
        out[i] = EMPTY
        while table[p] != EMPTY:
            entry = table[p]
            if hashes[entry] == h and _same(pool, starts[entry], lengths[entry], data, start, end):
                out[i] = slots[entry]
                break
            p = (p + 1) & mask


@numba.njit(cache=True, inline="always")
def _place(table, hashes, entry):  # type: ignore[no-untyped-def]
    h = hashes[entry]
    mask = len(table) - 1
    p = np.int64(h & np.uint64(mask))
    while table[p] != EMPTY:
        p = (p + 1) & mask
    table[p] = entry


@numba.njit(cache=True)
def _insert(table, hashes, starts, lengths, pool, entry):  # type: ignore[no-untyped-def]
    """Put entry (its bytes already in the pool) into the table (the caller keeps it < half full)."""
    start, length = starts[entry], lengths[entry]
    h = _hash(pool, start, start + length)
    hashes[entry] = h
    _place(table, hashes, entry)


@numba.njit(cache=True)
def _add_strings(  # type: ignore[no-untyped-def]
    table, hashes, slots, starts, lengths, pool, pool_used, count, offsets, data, rows, numbers
):
    """Entries count, count+1, ... for the strings of `rows` (offsets[row]:offsets[row+1] of
    data) with their numbers; the caller made room in every array. Returns the pool's new use."""
    for k in range(len(rows)):
        start, end = offsets[rows[k]], offsets[rows[k] + 1]
        entry = count + k
        for i in range(end - start):
            pool[pool_used + i] = data[start + i]
        starts[entry] = pool_used
        lengths[entry] = end - start
        slots[entry] = numbers[k]
        pool_used += end - start
        _insert(table, hashes, starts, lengths, pool, entry)
    return pool_used


@numba.njit(cache=True)
def _rehash(table, hashes, count):  # type: ignore[no-untyped-def]
    """Every entry into a new (empty) table, by its stored hash."""
    for entry in range(count):
        _place(table, hashes, entry)


def _doubled(size: int, need: int) -> int:
    """size doubled until it holds `need`."""
    while size < need:
        size *= 2
    return size


def _grown(array: np.ndarray, need: int) -> np.ndarray:
    """The array, or a copy doubled in length until it holds `need` items (zeros after its own)."""
    if need <= len(array):
        return array
    return np.concatenate([array, np.zeros(_doubled(len(array), need) - len(array), array.dtype)])


class KeyIndex:
    """One partition's string keys (UTF-8 bytes) → their slots in a KernelStore."""

    def __init__(self) -> None:
        self.count = 0
        self.table = np.full(1024, EMPTY, np.int64)  # entry numbers, open addressing
        self.hashes = np.zeros(512, np.uint64)
        self.slots = np.zeros(512, np.int64)
        self.starts = np.zeros(512, np.int64)
        self.lengths = np.zeros(512, np.int64)
        self.pool = np.zeros(4096, np.uint8)
        self.pool_used = 0

    def lookup(self, offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
        """The slot of each string of an Arrow string array's buffers (EMPTY: not known here)."""
        out = np.empty(len(offsets) - 1, np.int64)
        _lookup(
            self.table, self.hashes, self.slots, self.starts, self.lengths, self.pool, offsets, data, out
        )  # fmt: skip
        return out

    def rehash(self, size: int) -> None:
        """Every key into a new table of `size` (a power of two, more than twice the keys)."""
        self.table = np.full(size, EMPTY, np.int64)
        _rehash(self.table, self.hashes, self.count)

    def add(self, key: bytes, slot: int) -> None:
        """Remember a key's slot (a key not added before). (Its bytes as a writable array, the
        type a batch's Arrow buffers give add_strings: warm_up loads that one.)"""
        self.add_strings(
            np.array([0, len(key)], np.int64), np.frombuffer(bytearray(key), np.uint8), np.zeros(1, np.int64),
            np.array([slot], np.int64),
        )  # fmt: skip

    def add_strings(
        self, offsets: np.ndarray, data: np.ndarray, rows: np.ndarray, numbers: np.ndarray
    ) -> None:
        """Remember the slots (`numbers`) of strings `rows` of an Arrow string array's buffers
        (`offsets` as int64), none of them added before and no two equal: one compiled call for
        a batch's new keys (a Python call each cost ~5 µs, 10,000 of them in the engine
        benchmark's first million events)."""
        if not len(rows):
            return
        need = self.count + len(rows)
        if need > len(self.slots):
            self.hashes, self.slots, self.starts, self.lengths = (
                _grown(array, need) for array in (self.hashes, self.slots, self.starts, self.lengths)
            )
        if 2 * need > len(self.table):
            self.rehash(_doubled(len(self.table), 2 * need))
        self.pool = _grown(self.pool, self.pool_used + int((offsets[rows + 1] - offsets[rows]).sum()))
        self.pool_used = _add_strings(
            self.table, self.hashes, self.slots, self.starts, self.lengths, self.pool, self.pool_used,
            self.count, offsets, data, rows, numbers,
        )  # fmt: skip
        self.count = need
