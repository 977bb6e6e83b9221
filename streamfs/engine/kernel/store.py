"""The kernel's state for one view: numpy arrays with one row per key, and the key ↔ row maps.

KernelStore owns the arrays batch.process updates, hands out rows (*slots*) to keys by source
partition, and converts one key's state to and from the Python engine's KeyState, which is how
everything that is not the hot loop (evaluation at any t, serving state, snapshots, restores,
falling back to the Python engine) reuses the Python engine's code unchanged.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial
from typing import Any

import numpy as np

from streamfs.engine.compiled import CompiledView
from streamfs.engine.kernel import batch
from streamfs.engine.kernel import distinct as table
from streamfs.engine.kernel.fixed import DIGITS, SCALE, exact_as_float, from_int, representable, to_int
from streamfs.engine.kernel.keyindex import KeyIndex
from streamfs.engine.kernel.layout import KernelLayout
from streamfs.engine.kernel.prepared import Prepared, taken
from streamfs.engine.state import Key, KeyState

_MIN_POOL = 1024
_PREPARE_FROM = 1 << 15
"""Tables and buffer pools of at least this many rows have their next growth prepared on a
thread (kernel/prepared.py); smaller ones grow in well under a millisecond."""
_PREPARE_KEYS = 2048
"""Stores of at least this many keys have their next growth's per-key arrays prepared likewise
(a doubling to 16,384 keys of the payments view stalled the loop 60-70 ms)."""


class KernelStore:
    """Kernel arrays of one view, keys by partition, and value ids for count_distinct."""

    def __init__(self, compiled: CompiledView, layout: KernelLayout) -> None:
        self.compiled = compiled
        self.layout = layout
        self.partitions: dict[int, dict[Key, int]] = {}
        self.key_indexes: dict[int, KeyIndex] = {}  # string keys' bytes → slots (keyindex.py)
        self.owner: list[tuple[int, Key] | None] = []
        self.free: list[int] = []
        self.ids: dict[Any, int] = {}
        self.id_values: list[Any] = []
        self.value_index = KeyIndex()  # string values' bytes → ids (a cache of `ids`)
        self.interned_checked = 0  # len(id_values) when compaction was last considered
        self.capacity = 0
        tids, icells, kcells, fcells, tots = layout.widths
        self.maxt = np.empty(0, np.int64)
        self.seq = np.empty(0, np.int64)
        self.tids = np.empty((0, tids), np.int64)
        self.icell = np.empty((0, icells), np.int64)
        self.kcell = np.empty((0, kcells), np.int64)
        self.fcell = np.empty((0, fcells), np.float64)
        self.tot = np.empty((0, tots), np.int64)
        # With allowed lateness each key also keeps *complete* tiles (every accepted event settled
        # at once, as engine/state.py's KeyState.complete): the row of a key's newest event reads
        # them instead of re-adding its buffer, which holds a lateness' worth of a hot key's events.
        # They are derived (rebuilt from the settled tiles and the buffer when cvalid is 0), and
        # their count_distinct times are the COMPLETE column of the same table rows. Only keys whose
        # buffer reached complete_at events keep them: for the others re-adding the buffer is cheaper.
        self.complete_at = batch.COMPLETE_AT
        # count_distinct: one table row per (key, field, value) for every feature over the field
        self.fields = max(len(layout.id_columns), 1)
        self.heads = np.empty((0, self.fields), np.int64)
        complete_width = (tids, icells, kcells, fcells, tots) if layout.lateness else (1, 1, 1, 1, 1)
        self.ctids = np.empty((0, complete_width[0]), np.int64)
        self.cicell = np.empty((0, complete_width[1]), np.int64)
        self.ckcell = np.empty((0, complete_width[2]), np.int64)
        self.cfcell = np.empty((0, complete_width[3]), np.float64)
        self.ctot = np.empty((0, complete_width[4]), np.int64)
        self.cvalid = np.empty(0, np.int8)
        # Keys changed since the online store last took them, marked per slot: a set of key
        # tuples built per batch cost ~0.2 µs per event (hashing fresh tuples of fresh strings).
        self.dirty = np.empty(0, np.bool_)
        self.table = table.empty_table(_MIN_POOL)
        self.meta = np.zeros(1, np.int64)  # rows ever used since the last rebuild
        # The next, twice as large, table made ahead while the table fills, as long as its last
        # rebuild grew it (a state still growing); a pruning rebuild reuses memory just freed.
        self.next_table: Prepared[np.ndarray] | None = None
        self.table_grew = True
        # the buffer: events after their key's watermark, a linked list per key in one pool
        width = max(len(compiled.input_fields), 1)
        self.btime = np.empty(0, np.int64)
        self.bseq = np.empty(0, np.int64)
        self.bnext = np.empty(0, np.int64)
        self.bvals = np.empty((0, width), np.float64)
        self.bids = np.empty((0, max(len(layout.id_columns), 1)), np.int64)
        self.bhead = np.empty(0, np.int64)
        self.btail = np.empty(0, np.int64)  # each key's last buffered event (-1: none)
        self.bmeta = np.array([-1, 0], np.int64)  # free list head, free entries
        self.next_buffer: Prepared[tuple[np.ndarray, ...]] | None = None  # its doubling, made ahead
        self.next_rows: Prepared[tuple[np.ndarray, ...]] | None = None  # the per-key arrays' too
        self._id_column = {slot: c for c, slot in enumerate(layout.id_columns)}

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        return (self.maxt, self.seq, self.tids, self.icell, self.kcell, self.fcell, self.tot)

    @property
    def distinct(self) -> tuple[np.ndarray, ...]:
        return (self.table, self.heads, self.meta)

    @property
    def complete(self) -> tuple[np.ndarray, ...]:
        return (self.maxt, self.seq, self.ctids, self.cicell, self.ckcell, self.cfcell, self.ctot)

    @property
    def buffer(self) -> tuple[np.ndarray, ...]:
        return (self.btime, self.bseq, self.bnext, self.bvals, self.bids, self.bhead, self.bmeta, self.btail)

    @property
    def _pool(self) -> tuple[np.ndarray, ...]:
        """The buffer pool's arrays with a row per entry, in the order reserve_buffer grows them."""
        return (self.btime, self.bseq, self.bvals, self.bids, self.bnext)

    def reserve_buffer(self, entries: int) -> None:
        """Make room for `entries` more buffered events. When a large pool is three-quarters
        full, its doubling is prepared on a thread (kernel/prepared.py)."""
        free, old = int(self.bmeta[1]), len(self.btime)
        if free >= entries:
            if free - entries < old // 4 and old >= _PREPARE_FROM and self.next_buffer is None:
                specs = [((2 * old, *a.shape[1:]), a.dtype, 2 * old) for a in self._pool]
                self.next_buffer = Prepared(2 * old, partial(_written, specs))
            return
        size = max(256, 2 * old)
        while size - old + free < entries:
            size *= 2
        extra = size - old
        made, self.next_buffer = taken(self.next_buffer, size), None
        into: tuple[np.ndarray | None, ...] = made if made is not None else (None,) * 5
        # (a doubling by np.concatenate stalled the worker's loop 125 ms at 20,000 events/s, where
        # 5 minutes of lateness keeps a growing pool of buffered events: _with_rows says why)
        self.btime, self.bseq, self.bvals, self.bids, self.bnext = (
            _with_rows(array, extra, into=target) for array, target in zip(self._pool, into, strict=True)
        )
        self.bnext[old:] = np.arange(old + 1, size + 1, dtype=np.int64)
        self.bnext[-1] = self.bmeta[0]  # the new entries go in front of the free list
        self.bmeta[0] = old
        self.bmeta[1] += extra

    # ------------------------------------------------------------------ slots

    def slot(self, partition: int, key: Key) -> int:
        """The key's row, allocated on first sight."""
        keys = self.partitions.get(partition)
        if keys is None:
            keys = self.partitions[partition] = {}
        slot = keys.get(key)
        if slot is None:
            slot = keys[key] = self._allocate((partition, key))
        return slot

    def partition_slots(self, partition: int, keys: list[Key]) -> list[int]:
        """slot() of each key of one partition, the new ones allocated together: a Python call
        and a growth check per new key cost ~2.5 µs each (10,000 in a fresh engine benchmark)."""
        known = self.partitions.setdefault(partition, {})
        new = [key for key in dict.fromkeys(keys) if key not in known]
        if new:
            known.update(zip(new, self._allocate_many([(partition, key) for key in new]), strict=True))
        return [known[key] for key in keys]

    def slots(self, partitions: list[int], keys: list[Key]) -> np.ndarray:
        """slot() of many (partition, key) pairs: one dict lookup each in bulk (a Python call per
        key cost ~1 µs, paid for every distinct key of every batch)."""
        found: list[int | None] = []
        if partitions and partitions.count(partitions[0]) == len(partitions):
            known = self.partitions.get(partitions[0])
            if known is not None:
                found = list(map(known.get, keys))
        if not found:
            found = [None] * len(keys)
        for i, slot in enumerate(found):
            if slot is None:
                found[i] = self.slot(partitions[i], keys[i])
        return np.array(found, dtype=np.int64)

    def newest(self, key: Key) -> int | None:
        """The key's newest accepted event time, None if unseen (without building its KeyState)."""
        slot = self.find(key)
        if slot is None or self.maxt[slot] == batch.UNSEEN:
            return None
        return int(self.maxt[slot])

    def find_slots(self, keys: list[Key]) -> list[int]:
        """find() of many keys (-1: not held), a bulk dict lookup per partition instead of a
        Python call per key (the online writer's keys are any partitions' keys)."""
        found: list[int | None] = [None] * len(keys)
        missing = list(range(len(keys)))
        for keyed in self.partitions.values():
            if not missing:
                break
            looked = list(map(keyed.get, [keys[i] for i in missing]))
            for i, slot in zip(missing, looked, strict=True):
                if slot is not None:
                    found[i] = slot
            missing = [i for i, slot in zip(missing, looked, strict=True) if slot is None]
        return [-1 if slot is None else slot for slot in found]

    def find(self, key: Key) -> int | None:
        for keys in self.partitions.values():
            slot = keys.get(key)
            if slot is not None:
                return slot
        return None

    def _allocate(self, owner: tuple[int, Key]) -> int:
        return self._allocate_many([owner])[0]

    def _allocate_many(self, owners: list[tuple[int, Key]]) -> list[int]:
        """A slot for each owner in turn: freed slots first (the last freed first), then new rows,
        with one growth for them all; the next growth is prepared (kernel/prepared.py) once
        three quarters of the rows were in use before the last of them."""
        slots = [self.free.pop() for _ in range(min(len(self.free), len(owners)))]
        for slot, owner in zip(slots, owners, strict=False):
            self.owner[slot] = owner
        rest = owners[len(slots) :]
        if rest:
            used, capacity = len(self.owner), self.capacity
            need = used + len(rest)
            if need > capacity:
                grown = max(1024, 2 * capacity)
                while grown < need:
                    grown *= 2
                self._grow(grown)
            elif need - 1 >= capacity * 3 // 4 and capacity >= _PREPARE_KEYS and self.next_rows is None:
                self._prepare_rows(2 * capacity)
            self.owner.extend(rest)
            slots.extend(range(used, need))
        return slots

    _WRITTEN_ROWS = ("maxt", "seq", "tids", "fcell", "tot", "heads", "bhead", "btail", "dirty")
    """The per-key arrays a growth writes whole (_with_rows); icell and kcell keep their new rows
    as calloc gives them (see _grow)."""

    def _prepare_rows(self, capacity: int) -> None:
        """The per-key arrays of `capacity` rows made on a thread (kernel/prepared.py), written
        where `_grow` will write: wholly, except icell and kcell, only in the rows it copies."""
        specs = [((capacity, *a.shape[1:]), a.dtype, capacity) for a in self._written_rows]
        specs += [((capacity, *a.shape[1:]), a.dtype, self.capacity) for a in (self.icell, self.kcell)]
        self.next_rows = Prepared(capacity, partial(_written, specs))

    @property
    def _written_rows(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in self._WRITTEN_ROWS)

    def _grow(self, capacity: int) -> None:
        """Room for `capacity` keys. The wide cell arrays (icell, kcell: ~3 KB per key of the
        payments view) get their new rows from calloc, zero without being written, so their
        memory is first touched when a key uses it: first touches are slow on VMs (a doubling
        to 16,384 keys of that view took 176 ms when numpy's resize wrote the zeros). The
        complete tiles are derived: they start over (cvalid 0: rebuilt when a row needs them,
        as after a restore), in untouched memory."""
        extra = capacity - self.capacity
        made, self.next_rows = taken(self.next_rows, capacity), None
        into: tuple[np.ndarray | None, ...] = made if made is not None else (None,) * 11
        maxt, seq, tids, fcell, tot, heads, bhead, btail, dirty, icell, kcell = into

        def zeros(array: np.ndarray, keep: bool = True, into: np.ndarray | None = None) -> np.ndarray:
            """The array with `extra` more rows of zeros, not written (calloc): its rows kept, or
            with `keep` False all rows zero (the complete tiles, which start over)."""
            grown = np.zeros((capacity, *array.shape[1:]), array.dtype) if into is None else into
            if keep:
                grown[: array.shape[0]] = array
            return grown

        self.maxt = _with_rows(self.maxt, extra, batch.UNSEEN, into=maxt)
        self.seq = _with_rows(self.seq, extra, 0, into=seq)
        self.tids = _with_rows(self.tids, extra, batch.EMPTY_TILE, into=tids)
        self.icell = zeros(self.icell, into=icell)
        self.kcell = zeros(self.kcell, into=kcell)
        self.fcell = _with_rows(self.fcell, extra, np.nan, into=fcell)
        self.tot = _with_rows(self.tot, extra, 0, into=tot)
        self.heads = _with_rows(self.heads, extra, -1, into=heads)
        self.bhead = _with_rows(self.bhead, extra, -1, into=bhead)
        self.btail = _with_rows(self.btail, extra, -1, into=btail)
        self.ctids = zeros(self.ctids, keep=False)
        self.cicell = zeros(self.cicell, keep=False)
        self.ckcell = zeros(self.ckcell, keep=False)
        self.cfcell = zeros(self.cfcell, keep=False)
        self.ctot = zeros(self.ctot, keep=False)
        self.cvalid = np.zeros(capacity, np.int8)
        self.dirty = _with_rows(self.dirty, extra, 0, into=dirty)
        self.capacity = capacity

    def _clear(self, slot: int) -> None:
        self.maxt[slot] = batch.UNSEEN
        self.seq[slot] = 0
        self.tids[slot] = batch.EMPTY_TILE
        self.tot[slot] = 0
        self.cvalid[slot] = 0
        self.dirty[slot] = False
        table.kill_slot(self.table, self.heads, slot)
        e = int(self.bhead[slot])
        while e != -1:
            following = int(self.bnext[e])
            self.bnext[e] = self.bmeta[0]
            self.bmeta[0] = e
            self.bmeta[1] += 1
            e = following
        self.bhead[slot] = -1
        self.btail[slot] = -1

    def key_index(self, partition: int) -> KeyIndex:
        """The partition's index of string keys by their bytes (a cache of `partitions`)."""
        index = self.key_indexes.get(partition)
        if index is None:
            index = self.key_indexes[partition] = KeyIndex()
        return index

    def drop(self, partition: int) -> None:
        self.key_indexes.pop(partition, None)  # (its slots are freed now)
        for slot in self.partitions.pop(partition, {}).values():
            self._clear(slot)
            self.owner[slot] = None
            self.free.append(slot)

    def take_dirty(self, partitions: Collection[int] | None = None) -> dict[int, list[Key]]:
        """The keys of the slots marked dirty (of the given partitions, or all), by partition;
        their marks are cleared."""
        marked = np.flatnonzero(self.dirty)
        taken: dict[int, list[Key]] = {}
        if not len(marked):
            return taken
        owner = self.owner
        chosen = []
        for slot in marked.tolist():
            held = owner[slot]
            assert held is not None  # (a freed slot's mark is cleared)
            partition, key = held
            if partitions is None or partition in partitions:
                taken.setdefault(partition, []).append(key)
                chosen.append(slot)
        self.dirty[chosen if partitions is not None else marked] = False
        return taken

    def reserve(self, inserts: int) -> None:
        """Make room for `inserts` new count_distinct rows: when more than 70 % of the table would
        be used, count its live rows (one cheap pass) and rebuild it once, at the same size if
        live and new rows fill at most half of it, else at twice their number or more (a rebuild
        stalls the loop for a pass over both tables, so it is done once, never to count).

        While the table still grows, the next one is made on a thread once 60 % of this one is
        used (kernel/prepared.py: its first writes were most of a doubling's stall; until the
        rebuild takes it, it is memory held ahead)."""
        used, size = int(self.meta[0]), len(self.table)
        if used + inserts <= size * 7 // 10:
            growing = self.table_grew and size >= _PREPARE_FROM
            if growing and self.next_table is None and used + inserts > size * 6 // 10:
                self.next_table = Prepared(2 * size, partial(table.empty_table, 2 * size))
            return
        reached = self.reach()
        need = int(table.count_live(self.table, self.fields, reached)) + inserts
        new_size = size
        while new_size < 2 * need:
            new_size *= 2
        fresh, self.next_table = taken(self.next_table, new_size), None
        self.table, self.meta = table.rebuild(self.table, self.heads, reached, new_size, fresh)
        self.table_grew = new_size > size

    def reach(self) -> np.ndarray:
        """distinct.reach of every slot: the earliest count_distinct time each key still needs."""
        layout = self.layout
        return table.reach(  # type: ignore[no-any-return]
            self.maxt, self.fields, layout.lateness,
            layout.distinct_field, layout.distinct_hop, layout.distinct_span,
        )  # fmt: skip

    def _live(self) -> int:
        return int(table.count_live(self.table, self.fields, self.reach()))

    def _prune(self, size: int) -> None:
        """Rebuild the count_distinct table at `size` rows with only its live rows."""
        self.table, self.meta = table.rebuild(self.table, self.heads, self.reach(), size)

    def interned_bound(self) -> int:
        """At most how many value ids the state still holds (live count_distinct entries,
        buffered events' ids, last/first cells): compact when far fewer than id_values."""
        buffered = len(self.btime) - int(self.bmeta[1])
        return self._live() + buffered * self.bids.shape[1] + len(self.owner) * self.kcell.shape[1]

    def value_id(self, value: Any) -> int:
        vid = self.ids.get(value)
        if vid is None:
            vid = self.ids[value] = len(self.id_values)
            self.id_values.append(value)
        return vid

    def value_ids(self, values: list[Any]) -> list[int]:
        """value_id of each value, in order (new ones get the next ids in that order)."""
        return list(map(self.value_id, values))

    # ------------------------------------------------------------------ KeyState in and out

    def key_state(self, slot: int) -> KeyState:
        """The Python engine's KeyState equal to this key's kernel state."""
        compiled, layout = self.compiled, self.layout
        state = KeyState(compiled.groups)
        maxt = int(self.maxt[slot])
        state.max_time = None if maxt == batch.UNSEEN else maxt
        state.seq = int(self.seq[slot])
        tids = self.tids[slot].tolist()
        icell = self.icell[slot]
        kcell = self.kcell[slot].tolist()
        fcell = self.fcell[slot].tolist()
        for g, (group, gs) in enumerate(zip(compiled.groups, state.groups, strict=True)):
            hop, ring, tid_off, i_off, ni, k_off, nk, f_off, nf, _tot = (int(x) for x in layout.groups[g])
            watermark = maxt - layout.lateness
            first = watermark // hop - group.span if hop and state.max_time is not None else None
            gs.floor = first
            aggregator = group.aggregator
            for r in range(ring):
                tile = tids[tid_off + r]
                if tile == batch.EMPTY_TILE or aggregator is None:
                    continue
                partial = aggregator.empty()
                base, kbase, fbase = i_off + r * ni, k_off + r * nk, f_off + r * nf
                for cell in layout.cells[g]:
                    at = cell.python_offset
                    if cell.kind in (batch.OP_EVENTS, batch.OP_COUNT):
                        partial[at] = int(icell[base + cell.icell])
                    elif cell.kind == batch.OP_STATS:
                        k = kcell[kbase + cell.kcell]
                        numerator = to_int(icell[base + cell.icell + 1 : base + cell.icell + 1 + DIGITS])
                        partial[at : at + 3] = [int(icell[base + cell.icell]), numerator >> (SCALE - k), k]
                    elif cell.kind == batch.OP_INT_SUM:
                        partial[at] = to_int(icell[base + cell.icell : base + cell.icell + DIGITS]) >> SCALE
                    elif cell.kind in (batch.OP_LAST, batch.OP_FIRST):
                        time, seq, vid = kcell[kbase + cell.kcell : kbase + cell.kcell + 3]
                        if seq == 0:
                            partial[at] = None
                        elif cell.fcell >= 0:
                            value = fcell[fbase + cell.fcell]
                            partial[at] = (time, seq, int(value) if cell.slot in layout.int_slots else value)
                        else:
                            partial[at] = (time, seq, self.id_values[vid])
                    else:
                        value = fcell[fbase + cell.fcell]
                        if value != value:
                            partial[at] = None
                        else:
                            partial[at] = int(value) if cell.slot in layout.int_slots else value
                gs.tiles[tile] = partial
            for j, window in zip(layout.distinct_j[g], gs.distinct, strict=True):
                vids, times = table.list_field(self.table, self.heads, slot, int(layout.distinct_field[j]))
                window.floor = first
                for vid, time in zip(vids.tolist(), times.tolist(), strict=True):
                    tile = time // hop if hop else 0
                    if first is not None and tile < first:
                        continue
                    window.latest[self.id_values[vid]] = time
                    window.per_tile[tile] = window.per_tile.get(tile, 0) + 1
        state.buffer = self._buffered(slot)
        return state

    def _buffered(self, slot: int) -> list[tuple[int, int, tuple[Any, ...]]]:
        layout = self.layout
        width = len(self.compiled.input_fields)
        items = []
        e = int(self.bhead[slot])
        while e != -1:
            floats = self.bvals[e].tolist()
            ids = self.bids[e].tolist()
            values: list[Any] = []
            for input_slot in range(width):
                if input_slot in layout.value_slots:
                    x = floats[input_slot]
                    values.append(None if x != x else int(x) if input_slot in layout.int_slots else x)
                else:
                    vid = ids[self._id_column[input_slot]]
                    values.append(None if vid < 0 else self.id_values[vid])
            items.append((int(self.btime[e]), int(self.bseq[e]), tuple(values)))
            e = int(self.bnext[e])
        items.sort(key=lambda item: item[1])
        return items

    def load(self, partition: int, key: Key, state: KeyState) -> bool:
        """Put a KeyState into the kernel; False (and nothing changed) if it cannot hold it exactly."""
        compiled, layout = self.compiled, self.layout
        if state.max_time is None or (state.buffer and not layout.lateness):
            return False
        maxt = state.max_time
        rows = self._rows(state, maxt - layout.lateness)
        buffered = self._buffer_rows(state)
        if rows is None or buffered is None:
            return False
        slot = self.slot(partition, key)
        self._clear(slot)
        tids, cells, kcell, fcell = rows
        icell = np.array(cells, dtype=np.int64)
        self.maxt[slot] = maxt
        self.seq[slot] = state.seq
        self.tids[slot] = tids
        self.icell[slot] = icell
        self.kcell[slot] = kcell
        self.fcell[slot] = fcell
        for g in range(len(compiled.groups)):
            _hop, ring, tid_off, i_off, ni, _k, _nk, _f, _nf, tot_off = (int(x) for x in layout.groups[g])
            for r in range(ring):
                if tids[tid_off + r] != batch.EMPTY_TILE:
                    self.tot[slot, tot_off : tot_off + ni] += icell[i_off + r * ni : i_off + (r + 1) * ni]
        # exact sums in the totals: carries must be normalized (sums of normalized digits are not)
        self._normalize_totals(slot)
        first_of = [
            (maxt - layout.lateness) // group.hop - group.span if group.hop else None
            for group in compiled.groups
        ]
        entries = [
            (int(layout.distinct_field[j]), value, time)
            for g, gs in enumerate(state.groups)
            for j, window in zip(layout.distinct_j[g], gs.distinct, strict=True)
            for value, time in window.latest.items()
            if first_of[g] is None or time // compiled.groups[g].hop >= first_of[g]  # type: ignore[operator]
        ]
        self.reserve_buffer(len(buffered))
        if buffered:
            times, seqs, floats, ids = zip(*buffered, strict=True)
            batch.buffer_push_all(
                self.buffer,
                np.full(len(buffered), slot, np.int64),
                np.array(times, np.int64),
                np.array(seqs, np.int64),
                np.array(floats, np.float64).reshape(len(buffered), self.bvals.shape[1]),
                np.array(ids, np.int64).reshape(len(buffered), self.bids.shape[1]),
            )
        self.reserve(len(entries))
        if entries:  # (a value in several features of one field: one row, its latest time)
            fields, values, times = zip(*entries, strict=True)
            table.insert_entries(
                self.table, self.heads, self.meta, np.full(len(entries), slot, np.int64),
                np.array(fields, np.int64), np.array([self.value_id(v) for v in values], np.int64),
                np.array(times, np.int64), self.fields,
            )  # fmt: skip
        return True

    def _normalize_totals(self, slot: int) -> None:
        layout = self.layout
        for g in range(len(layout.groups)):
            batch.normalize_sums(layout.ops, g, self.tot[slot], int(layout.groups[g, 9]))

    def _buffer_rows(self, state: KeyState) -> list[tuple[int, int, list[float], list[int]]] | None:
        """The buffered events as kernel rows, or None if a value is not representable."""
        layout = self.layout
        rows = []
        width = self.bvals.shape[1]
        for time, seq, values in state.buffer:
            floats = [float("nan")] * width
            ids = [-1] * self.bids.shape[1]
            for input_slot, value in enumerate(values):
                if input_slot in layout.value_slots and value is not None:
                    if not exact_as_float(value):
                        return None
                    if input_slot in layout.summed_slots and not representable(float(value)):
                        return None
                    floats[input_slot] = float(value)
                elif input_slot not in layout.value_slots:
                    floats[input_slot] = float("nan") if value is None else 0.0
                column = self._id_column.get(input_slot)
                if column is not None and value is not None:
                    ids[column] = self.value_id(value)
            rows.append((time, seq, floats, ids))
        return rows

    def _rows(
        self, state: KeyState, watermark: int
    ) -> tuple[list[int], list[int], list[int], list[float]] | None:
        """The kernel rows (tids, icell, kcell, fcell) of a KeyState, or None if not representable."""
        compiled, layout = self.compiled, self.layout
        widths = layout.widths
        tids = [int(batch.EMPTY_TILE)] * widths[0]
        icell = [0] * widths[1]
        kcell = [0] * widths[2]
        fcell = [float("nan")] * widths[3]
        digits = np.zeros(DIGITS, np.int64)
        for g, (group, gs) in enumerate(zip(compiled.groups, state.groups, strict=True)):
            hop, ring, tid_off, i_off, ni, k_off, nk, f_off, nf, _tot = (int(x) for x in layout.groups[g])
            first = watermark // hop - group.span if hop else 0
            used = {index for index in gs.tiles if index >= first}
            for window in gs.distinct:
                used.update(tile for tile in window.per_tile if tile >= first)
            for index in used:
                r = index % ring
                tids[tid_off + r] = index
                base, kbase, fbase = i_off + r * ni, k_off + r * nk, f_off + r * nf
                partial = gs.tiles.get(index)
                if partial is not None:
                    for cell in layout.cells[g]:
                        at = cell.python_offset
                        if cell.kind in (batch.OP_EVENTS, batch.OP_COUNT):
                            icell[base + cell.icell] = partial[at]
                        elif cell.kind in (batch.OP_STATS, batch.OP_INT_SUM):
                            if cell.kind == batch.OP_STATS:
                                n, numerator, k = partial[at : at + 3]
                                icell[base + cell.icell] = n
                                kcell[kbase + cell.kcell] = k
                                start = base + cell.icell + 1
                            else:
                                numerator, k, start = partial[at], 0, base + cell.icell
                            if k > SCALE or not from_int(numerator << (SCALE - k), digits, 0):
                                return None
                            icell[start : start + DIGITS] = digits.tolist()
                        elif cell.kind in (batch.OP_LAST, batch.OP_FIRST):
                            kept = partial[at]
                            if kept is not None:
                                time, seq, value = kept
                                vid = -1
                                if cell.fcell >= 0:
                                    if not exact_as_float(value):
                                        return None
                                    fcell[fbase + cell.fcell] = float(value)
                                else:
                                    vid = self.value_id(value)
                                kcell[kbase + cell.kcell : kbase + cell.kcell + 3] = [time, seq, vid]
                        else:
                            value = partial[at]
                            if value is not None:
                                if not exact_as_float(value):
                                    return None
                                fcell[fbase + cell.fcell] = float(value)
                for cell_at, window in zip(layout.distinct_cells[g], gs.distinct, strict=True):
                    icell[base + cell_at] = window.per_tile.get(index, 0)
        return tids, icell, kcell, fcell

    def states(self, partition: int) -> dict[Key, KeyState]:
        return {key: self.key_state(slot) for key, slot in self.partitions.get(partition, {}).items()}


def _with_rows(array: np.ndarray, extra: int, fill: float = 0, into: np.ndarray | None = None) -> np.ndarray:
    """A copy of the array with `extra` more rows set to `fill`, in memory from numpy (or in
    `into`, of that shape, made ahead: kernel/prepared.py).

    numpy asks for transparent huge pages on large blocks (madvise), so writing a new block
    takes a page fault per 2 MB. Measured here for 2^20 rows of 3 floats: a new block and a copy
    5 ms and ~15 faults; `ndarray.resize` (realloc, in place) 4-34 ms and up to 12,000 faults,
    as the grown block's pages are 4 KB; np.concatenate 80-180 ms."""
    old = array.shape[0]
    grown = np.empty((old + extra, *array.shape[1:]), array.dtype) if into is None else into
    grown[:old] = array
    grown[old:] = fill
    return grown


def _written(specs: list[tuple[tuple[int, ...], np.dtype[Any], int]]) -> tuple[np.ndarray, ...]:
    """Zero arrays of these shapes and dtypes whose first `rows` rows are written (np.zeros
    alone leaves calloc's pages untouched: their first writes would fault on the loop)."""
    made = []
    for shape, dtype, rows in specs:
        array = np.zeros(shape, dtype)
        array[:rows] = 0
        made.append(array)
    return tuple(made)
