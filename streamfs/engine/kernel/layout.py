"""A CompiledView as the kernel's integer tables, or the reason the kernel cannot run it.

The kernel runs the common shape of a streaming view: features among count,
sum, mean, min and max of int or float fields, count, first, last and count_distinct of any
field, and rings of at most MAX_RING_TILES tiles per key. Anything else (stddev/variance, min/max
of strings or datetimes) runs in the Python engine, which is the definition; the kernel is an
exact, faster twin of it. Values that are not numbers are interned (value → id, by equality).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from streamfs.aggregations import CELL_KINDS
from streamfs.engine.compiled import CompiledView
from streamfs.engine.kernel import batch
from streamfs.engine.kernel.fixed import DIGITS

MAX_RING_TILES = 512
"""Tiles per key over all groups; beyond this the dense rings cost more memory than the dicts."""

_KIND = {
    CELL_KINDS["events"]: batch.OP_EVENTS,
    CELL_KINDS["count"]: batch.OP_COUNT,
    CELL_KINDS["stats"]: batch.OP_STATS,
    CELL_KINDS["int_sum"]: batch.OP_INT_SUM,
    CELL_KINDS["min"]: batch.OP_MIN,
    CELL_KINDS["max"]: batch.OP_MAX,
    CELL_KINDS["last"]: batch.OP_LAST,
    CELL_KINDS["first"]: batch.OP_FIRST,
}


@dataclass(frozen=True)
class CellMap:
    """Where one Python partial cell lives in the kernel tile: kind, icell, kcell, fcell offsets."""

    python_offset: int
    kind: int
    slot: int
    icell: int
    kcell: int
    fcell: int


@dataclass(frozen=True)
class KernelLayout:
    """The integer tables batch.process loops over, and what turns its output back into rows."""

    groups: np.ndarray  # per group: hop, ring, tid_off, i_off, ni, k_off, nk, f_off, nf, tot_off
    ops: np.ndarray
    readers: np.ndarray
    cells: tuple[tuple[CellMap, ...], ...]  # per group, its aggregator's cells
    distinct_cells: tuple[tuple[int, ...], ...]  # per group, the icell of each distinct feature
    distinct_j: tuple[tuple[int, ...], ...]  # per group, the table's j of each distinct feature
    id_columns: tuple[int, ...]  # the input slot behind each column of the ids matrix (values
    # the kernel does not read as numbers are interned, so buffered events keep them exactly)
    distinct_hop: np.ndarray  # per j
    distinct_span: np.ndarray  # per j
    distinct_field: np.ndarray  # per j: its field, the ids column of its values (distinct.py)
    int_slots: frozenset[int]  # inputs declared int (min/max read back as int)
    value_slots: frozenset[int]  # inputs whose values the kernel reads (the rest only as present or not)
    summed_slots: tuple[int, ...]  # inputs summed exactly (each value must be representable)
    int_columns: tuple[int, ...]  # output columns read from out_int
    nullable_columns: tuple[int, ...]  # float output columns where NaN means None
    int_valued_columns: tuple[int, ...]  # float output columns holding an int field's min/max
    id_valued_columns: tuple[int, ...]  # out_int columns holding value ids (last/first of non-numbers)
    widths: tuple[int, int, int, int, int]  # row widths of tids, icell, kcell, fcell, tot
    features: int
    lateness: int

    @cached_property
    def settle_ops(self) -> np.ndarray:
        """The ops without count_distinct's (what kernel/serving.py settles buffered events with:
        it moves their count_distinct values itself, without touching the table)."""
        return np.ascontiguousarray(self.ops[self.ops[:, 0] != batch.OP_DISTINCT])

    @classmethod
    def build(cls, compiled: CompiledView) -> KernelLayout | str:
        """The layout, or why the kernel cannot run this view."""
        view = compiled.view
        int_slots = {slot for slot, name in enumerate(compiled.input_fields) if view.field_type(name) is int}
        numeric_slots = {
            slot for slot, name in enumerate(compiled.input_fields) if view.field_type(name) in (int, float)
        }
        group_rows: list[list[int]] = []
        op_rows: list[list[int]] = []
        reader_rows: list[list[int]] = []
        all_cells: list[tuple[CellMap, ...]] = []
        distinct_cells: list[tuple[int, ...]] = []
        distinct_j: list[tuple[int, ...]] = []
        distinct_hop: list[int] = []
        distinct_span: list[int] = []
        distinct_field: list[int] = []
        int_columns: list[int] = []
        nullable: list[int] = []
        int_valued: list[int] = []
        id_valued: list[int] = []
        value_slots: set[int] = set()
        kept_slots: set[int] = set()
        for group in compiled.groups:
            if group.aggregator is not None:
                for python_kind, _offset, slot, _squares in group.aggregator.ops:
                    kind = _KIND.get(python_kind)
                    if kind in (batch.OP_STATS, batch.OP_INT_SUM, batch.OP_MIN, batch.OP_MAX) or (
                        kind in (batch.OP_LAST, batch.OP_FIRST) and slot in numeric_slots
                    ):
                        value_slots.add(slot)
                    elif kind in (batch.OP_LAST, batch.OP_FIRST):
                        kept_slots.add(slot)
        distinct_slots = {feature.slot for group in compiled.groups for feature in group.distinct}
        # Values are interned where the kernel must give them back: count_distinct's values,
        # last/first of non-numbers, and (with lateness) every non-number a buffered event holds.
        id_columns = [
            slot
            for slot in range(len(compiled.input_fields))
            if slot in distinct_slots or slot in kept_slots or (compiled.lateness and slot not in value_slots)
        ]
        tid_off = i_off = k_off = f_off = tot_off = 0
        for g, group in enumerate(compiled.groups):
            ring = group.span + 1 if group.hop else 1
            cells: list[CellMap] = []
            ni = nk = nf = 0
            aggregator = group.aggregator
            if aggregator is not None:
                for python_kind, offset, slot, squares in aggregator.ops:
                    kind = _KIND.get(python_kind)
                    if kind is None or squares:
                        return "stddev or variance"
                    if kind in (batch.OP_STATS, batch.OP_INT_SUM, batch.OP_MIN, batch.OP_MAX) and (
                        slot not in numeric_slots
                    ):
                        return (
                            f"a numeric aggregation of {compiled.input_fields[slot]!r}, not an int or float"
                        )
                    icell = kcell = fcell = -1
                    if kind in (batch.OP_EVENTS, batch.OP_COUNT):
                        icell, ni = ni, ni + 1
                    elif kind == batch.OP_STATS:
                        icell, ni, kcell, nk = ni, ni + 1 + DIGITS, nk, nk + 1
                    elif kind == batch.OP_INT_SUM:
                        icell, ni = ni, ni + DIGITS
                    elif kind in (batch.OP_LAST, batch.OP_FIRST):
                        kcell, nk = nk, nk + 3
                        if slot in value_slots:
                            fcell, nf = nf, nf + 1
                    else:
                        fcell, nf = nf, nf + 1
                    cells.append(CellMap(offset, kind, slot, icell, kcell, fcell))
                    column = slot
                    if kind in (batch.OP_LAST, batch.OP_FIRST) and slot not in value_slots:
                        column = id_columns.index(slot)  # the value's id
                    op_rows.append([kind, g, max(column, 0), icell, kcell, fcell, 0])
                by_offset = {cell.python_offset: cell for cell in cells}
                for feature, (how, offset) in zip(group.tiled, aggregator.readers, strict=True):
                    cell = by_offset[offset]
                    column = feature.index
                    if how == "n":
                        reader_rows.append([batch.READ_N, g, column, cell.icell, 0, 0, 0, 0])
                        int_columns.append(column)
                    elif how == "int":
                        reader_rows.append([batch.READ_INT, g, column, cell.icell, 0, 0, 0, 0])
                        int_columns.append(column)
                    elif how == "sum":
                        reader_rows.append([batch.READ_SUM, g, column, 0, cell.icell + 1, 0, 0, 0])
                    elif how == "mean":
                        reader_rows.append([batch.READ_MEAN, g, column, cell.icell, cell.icell + 1, 0, 0, 0])
                        nullable.append(column)
                    elif how == "last":
                        kind = batch.READ_LAST if cell.kind == batch.OP_LAST else batch.READ_FIRST
                        numeric = cell.fcell >= 0
                        source = cell.slot if numeric else id_columns.index(cell.slot)
                        reader_rows.append([kind, g, column, cell.kcell, 0, cell.fcell, source, 0])
                        if numeric:
                            nullable.append(column)
                            if cell.slot in int_slots:
                                int_valued.append(column)
                        else:
                            int_columns.append(column)
                            id_valued.append(column)
                    elif how == "value":
                        kind = batch.READ_MIN if cell.kind == batch.OP_MIN else batch.READ_MAX
                        reader_rows.append([kind, g, column, 0, 0, cell.fcell, cell.slot, 0])
                        nullable.append(column)
                        if cell.slot in int_slots:
                            int_valued.append(column)
                    else:
                        return f"a {how} feature"
            group_distinct: list[int] = []
            group_j: list[int] = []
            for feature in group.distinct:
                j = len(distinct_hop)
                distinct_hop.append(group.hop)
                distinct_span.append(group.span)
                group_distinct.append(ni)
                group_j.append(j)
                ids = id_columns.index(feature.slot)
                distinct_field.append(ids)
                op_rows.append([batch.OP_DISTINCT, g, ids, ni, 0, 0, j])
                reader_rows.append([batch.READ_DISTINCT, g, feature.index, ni, 0, 0, ids, j])
                int_columns.append(feature.index)
                ni += 1
            group_rows.append([group.hop, ring, tid_off, i_off, ni, k_off, nk, f_off, nf, tot_off])
            tid_off += ring
            i_off += ring * ni
            k_off += ring * nk
            f_off += ring * nf
            tot_off += ni
            all_cells.append(tuple(cells))
            distinct_cells.append(tuple(group_distinct))
            distinct_j.append(tuple(group_j))
        if tid_off > MAX_RING_TILES:
            return f"{tid_off} tiles per key (more than {MAX_RING_TILES})"

        def table(rows: list[list[int]], width: int) -> np.ndarray:
            return np.array(rows, dtype=np.int64).reshape(len(rows), width)

        return cls(
            groups=table(group_rows, 10),
            ops=table(op_rows, 7),
            readers=table(reader_rows, 8),
            cells=tuple(all_cells),
            distinct_cells=tuple(distinct_cells),
            distinct_j=tuple(distinct_j),
            id_columns=tuple(id_columns),
            distinct_hop=np.array(distinct_hop, dtype=np.int64),
            distinct_span=np.array(distinct_span, dtype=np.int64),
            distinct_field=np.array(distinct_field, dtype=np.int64),
            int_slots=frozenset(int_slots),
            value_slots=frozenset(value_slots),
            summed_slots=tuple(
                sorted({int(op[2]) for op in op_rows if op[0] in (batch.OP_STATS, batch.OP_INT_SUM)})
            ),
            int_columns=tuple(int_columns),
            nullable_columns=tuple(nullable),
            int_valued_columns=tuple(int_valued),
            id_valued_columns=tuple(id_valued),
            widths=(tid_off, max(i_off, 1), max(k_off, 1), max(f_off, 1), max(tot_off, 1)),
            features=len(view.features),
            lateness=compiled.lateness,
        )
