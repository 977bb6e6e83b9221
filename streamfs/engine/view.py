"""ViewEngine, one feature view's engine, and Engine, all views of a pipeline by topic.

This is the engine's public face; the work is done by the modules beside it (compiled, state,
ingest, running, reads, serving, snapshot), each a set of plain functions over plain state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streamfs.aggregations import empty_result
from streamfs.definitions import Aggregate, FeatureView
from streamfs.engine import snapshot as snapshots
from streamfs.engine.compiled import CompiledView
from streamfs.engine.ingest import accept, add_to_complete, ingest_buffered, ingest_newest
from streamfs.engine.kernel import KernelLayout, KernelStore, kernel_enabled
from streamfs.engine.kernel import snapshot as kernel_snapshot
from streamfs.engine.kernel.columns import TableColumns, table_columns
from streamfs.engine.kernel.run import Admitted, KernelOutput, first_unrepresentable
from streamfs.engine.kernel.run import run as kernel_run
from streamfs.engine.kernel.run import run_columns as kernel_run_columns
from streamfs.engine.kernel.serving import serving_columns as kernel_serving_columns
from streamfs.engine.kernel.warmup import warm_up as kernel_warm_up
from streamfs.engine.reads import evaluate_all, row
from streamfs.engine.serving import ServingColumns, ServingState, serving_state
from streamfs.engine.state import Key, KeyState
from streamfs.errors import StateError
from streamfs.records import (
    BAD_VALUE,
    MISSING_KEY,
    TOO_LATE,
    TRANSFORM_FAILED,
    FeatureRow,
    Rejected,
    SourceEvent,
)

COMPACT_AT = 1_000_000
"""Interned values a view's kernel may hold before it checks whether to compact them."""


@dataclass(slots=True)
class TableResult:
    """What process_table produced: the offline rows as a table, and the rows not accepted
    (too late), as indices of the input table, with their key's newest event time then."""

    rows: pa.Table
    rejected: np.ndarray
    newest: np.ndarray


@dataclass(slots=True)
class ProcessResult:
    """What one micro-batch produced for one view."""

    rows: list[FeatureRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    filtered: int = 0


class ViewEngine:
    """Runs one FeatureView: per-key tiles, offline rows, exact evaluation, snapshots."""

    def __init__(self, view: FeatureView, *, kernel: bool = True) -> None:
        """kernel=False keeps the view on the Python engine even where the compiled kernel could
        run it (the kernel is an exact twin; tests compare the two)."""
        self.compiled = CompiledView.build(view)
        self.view = view
        self.name = view.name
        self.ttl = view.ttl
        # partition -> key -> state; keys never move between partitions on their own.
        self._partitions: dict[int, dict[Key, KeyState]] = {}
        self._dirty: dict[int, set[Key]] = {}
        layout = KernelLayout.build(self.compiled) if kernel and kernel_enabled() else None
        self._kernel = KernelStore(self.compiled, layout) if isinstance(layout, KernelLayout) else None
        self.kernel_refusal = layout if isinstance(layout, str) else None
        """Why the kernel does not run this view (None when it does, or was not asked to)."""

    @property
    def uses_kernel(self) -> bool:
        """Whether the compiled kernel runs this view now (it leaves for good on a value it
        cannot hold exactly)."""
        return self._kernel is not None

    @property
    def feature_names(self) -> list[str]:
        return self.view.feature_names

    @property
    def group_features(self) -> list[list[str]]:
        """Feature names of each window group, in the order GroupSteps.values holds them."""
        return self.compiled.group_features

    # ---------------------------------------------------------------- ingest

    def process(self, events: Iterable[SourceEvent], *, rows: bool = True) -> ProcessResult:
        """Aggregate a micro-batch in order; one offline row per accepted event.

        rows=False only updates the state (rebuilding it from an archive, replaying for a
        training set): no row is evaluated, which is most of the per-event cost.
        """
        result = ProcessResult()
        if self._kernel_for_batch() is not None:
            self._process_kernel(events, rows, result)
            return result
        for event in events:
            admitted = self._admit(event)
            if admitted is None:
                result.filtered += 1
            elif isinstance(admitted, Rejected):
                result.rejected.append(admitted)
            else:
                self._ingest(admitted, rows, result)
        return result

    def process_answering(
        self, events: Sequence[SourceEvent], asks: Sequence[tuple[int, Key, int]], *, serve: bool
    ) -> list[tuple[dict[str, Any] | None, bool]]:
        """Update the state with `events` (like process(rows=False); rejections are not kept),
        answering asks on the way: ask (i, key, t), in order of i, is answered once the first i
        events are in, as serve(key, t) (or evaluate(key, t)) would answer then, with whether
        the key had an accepted event by then. One call for a replay's whole stretch, so the
        kernel answers a training set's labels without leaving its loop."""
        admitted, before = self._admit_all(events)
        store = self._kernel_for_batch()
        if store is None:
            return self._answer_admitted(admitted, 0, [(before[i], key, t) for i, key, t in asks], serve)
        out = kernel_run(store, admitted, False, [(before[i], key, t, serve) for i, key, t in asks])
        dirty = self._dirty
        for index, accepted in enumerate(out.accepted.tolist()):
            if accepted:
                dirty[admitted[index][3]].add(admitted[index][1])
        answers = self._kernel_answers(asks, out)
        if len(answers) < len(asks) or out.ran < len(admitted):
            self._leave_kernel()
            rest = [(before[i], key, t) for i, key, t in asks[len(answers) :]]
            answers += self._answer_admitted(admitted, out.ran, rest, serve)
        return answers

    def process_table_answering(
        self, table: pa.Table, asks: Sequence[tuple[int, Key, int]], *, serve: bool
    ) -> tuple[list[tuple[dict[str, Any] | None, bool]], int] | None:
        """process_answering for archive rows given as an Arrow table (schema fields, event_time,
        partition), straight into the kernel's arrays (kernel/columns.py). Returns the answers
        and how many rows ran; the caller runs the rest (and answers the rest of the asks) with
        process_answering, on the Python engine. None when the kernel cannot take the table as
        columns (no kernel, a transform, a value the checks would reject): nothing ran."""
        store = self._kernel_for_batch()
        columns = table_columns(store, table) if store is not None else None
        if store is None or columns is None:
            return None
        out = kernel_run_columns(
            store,
            columns.slots,
            columns.times,
            columns.values,
            columns.ids,
            table.num_rows,
            False,
            [(i, key, t, serve) for i, key, t in asks],
        )
        self._mark_dirty(columns, out.accepted)
        answers = self._kernel_answers(asks, out)
        if len(answers) < len(asks) or out.ran < table.num_rows:
            self._leave_kernel()
        return answers, out.ran

    def process_table(self, table: pa.Table) -> TableResult | None:
        """process() for events given as columns (schema fields, event_time, partition): the
        offline rows come back as an Arrow table (the key fields, event_time, and the features;
        plus partition, offset and arrival_time when the input has them), and the rows the
        engine did not accept as their indices in `table`. None when the kernel cannot take
        the table as columns (nothing ran: use process on SourceEvents).

        The columnar twin of process for the engine's hot path: no Python object per event.
        A value the kernel cannot hold exactly mid-table also returns None, before anything
        runs, so the row path sees every event."""
        store = self._kernel_for_batch()
        columns = table_columns(store, table) if store is not None else None
        if store is None or columns is None:
            return None
        if store.layout.summed_slots:
            summed = np.array(store.layout.summed_slots, dtype=np.int64)
            if first_unrepresentable(columns.values, summed) < table.num_rows:
                return None
        out = kernel_run_columns(
            store, columns.slots, columns.times, columns.values, columns.ids, table.num_rows, True, [], True
        )
        if out.ran < table.num_rows or out.missing_last:  # only what no int64 column can hold
            raise StateError(
                f"view {self.name!r}: the row of input row {out.ran - 1} has an int sum beyond int64 "
                "(or a mean over 2**31 values), which an offline row cannot hold"
            )
        accepted = out.accepted
        self._mark_dirty(columns, accepted)
        names = [*self.compiled.key_fields, "event_time"]
        names += [name for name in ("arrival_time", "partition", "offset") if name in table.column_names]
        rows = table.select(names)
        if not accepted.all():  # (filtering copies every column: only when some were too late)
            rows = rows.filter(pa.array(accepted))
        rows = pa.Table.from_arrays(  # (one table: 15 append_column calls cost ~40 µs a batch)
            [*rows.columns, *out.row_arrays], names=[*rows.column_names, *self.feature_names]
        )
        rejected = np.flatnonzero(~accepted)
        return TableResult(rows, rejected, out.newest[rejected])

    def _mark_dirty(self, columns: TableColumns, accepted: np.ndarray) -> None:
        """Mark the keys of a table's accepted rows (the first len(accepted) rows) dirty: their
        slots, in the store (take_dirty_by_partition gives them back as keys)."""
        store = self._kernel
        assert store is not None  # (tables run on the kernel; it is left only after this)
        slots = columns.slots[: len(accepted)]
        store.dirty[slots if accepted.all() else slots[accepted]] = True

    def _kernel_answers(
        self, asks: Sequence[tuple[int, Key, int]], out: KernelOutput
    ) -> list[tuple[dict[str, Any] | None, bool]]:
        answers: list[tuple[dict[str, Any] | None, bool]] = []
        names = self.feature_names
        for (_, _key, t), values, newest in zip(asks, out.answers, out.ask_newest, strict=False):
            if values is None:
                answers.append((None, False))
            elif self.ttl is not None and t - newest > self.ttl:
                answers.append((None, True))
            else:
                answers.append((dict(zip(names, values, strict=True)), True))
        return answers

    def _admit_all(self, events: Iterable[SourceEvent]) -> tuple[list[Admitted], list[int]]:
        """The admitted events (rejections dropped), and how many were admitted before each event."""
        admitted: list[Admitted] = []
        before = [0]
        for event in events:
            item = self._admit(event)
            if item is not None and not isinstance(item, Rejected):
                admitted.append(item)
            before.append(len(admitted))
        return admitted, before

    def _answer_admitted(
        self, admitted: list[Admitted], start: int, asks: Sequence[tuple[int, Key, int]], serve: bool
    ) -> list[tuple[dict[str, Any] | None, bool]]:
        """The Python engine's process_answering over admitted events from `start` on."""
        ignored = ProcessResult()
        answers: list[tuple[dict[str, Any] | None, bool]] = []
        done = start
        for position, key, t in asks:
            while done < position:
                self._ingest(admitted[done], False, ignored)
                done += 1
            values = self.serve(key, t) if serve else self.evaluate(key, t)
            answers.append((values, values is not None or self.watermark(key) is not None))
        for item in admitted[done:]:
            self._ingest(item, False, ignored)
        return answers

    def _admit(self, event: SourceEvent) -> Admitted | Rejected | None:
        """The event's key and input values, its rejection, or None if the transform filtered it."""
        compiled = self.compiled
        fields = event.fields
        transform = self.view.transform
        if transform is not None:
            try:
                transformed = transform(dict(fields))
            except Exception as exc:
                return self._reject(event, TRANSFORM_FAILED, f"{type(exc).__name__}: {exc}")
            if transformed is None:
                return None
            fields = transformed
        key_fields = compiled.key_fields
        key = tuple([fields.get(name) for name in key_fields])
        if None in key:
            missing = [name for name, value in zip(key_fields, key, strict=True) if value is None]
            return self._reject(event, MISSING_KEY, f"entity key field(s) {missing} missing")
        values = tuple([fields.get(name) for name in compiled.input_fields])
        problem = compiled.bad_value(values)
        if problem is not None:
            return self._reject(event, BAD_VALUE, problem)
        partition = event.position.partition if event.position is not None else 0
        if partition not in self._dirty:
            self._dirty[partition] = set()
        return event, key, values, partition

    def _too_late(self, event: SourceEvent, key: Key, newest: int) -> Rejected:
        return self._reject(event, TOO_LATE, self.too_late_detail(key, event.event_time, newest))

    def too_late_detail(self, key: Key, event_time: int, newest: int) -> str:
        """Why an event was too late (the detail of its TOO_LATE rejection)."""
        return (
            f"event time {event_time} is more than the allowed lateness {self.compiled.lateness} ms "
            f"behind the newest accepted event {newest} of key {key!r}"
        )

    def _ingest(self, admitted: Admitted, rows: bool, result: ProcessResult) -> None:
        """The Python engine: one admitted event into its key's state (and its row)."""
        event, key, values, partition = admitted
        compiled = self.compiled
        lateness = compiled.lateness
        fast = lateness == 0  # then every accepted event settles at once (see ingest.ingest_newest)
        states = self._partitions.get(partition)
        if states is None:
            states = self._partitions[partition] = {}
        state = states.get(key)
        if state is None:
            state = states[key] = KeyState(compiled.groups, complete=not fast and rows)
        time = event.event_time
        if state.max_time is not None and time < state.max_time - lateness:
            result.rejected.append(self._too_late(event, key, state.max_time))
            return
        self._dirty[partition].add(key)
        if not rows:
            accept(compiled, state, time, values)
            if state.complete is not None:
                state.complete = None  # rebuilt from the settled tiles when a row needs it
            return
        newest = state.max_time is None or time >= state.max_time
        if fast and newest:
            values_row = ingest_newest(compiled, state, time, values)
        elif newest:
            values_row = ingest_buffered(compiled, state, time, values)
        else:
            accept(compiled, state, time, values)
            values_row = row(compiled, state, time)
            if not fast:
                add_to_complete(compiled, state, time, values)
        result.rows.append(FeatureRow(self.name, key, time, event.arrival_time, event.position, values_row))

    def _process_kernel(self, events: Iterable[SourceEvent], rows: bool, result: ProcessResult) -> None:
        """The compiled kernel's path (kernel/), falling back to the Python engine mid-batch if an
        event holds a value the kernel cannot carry exactly."""
        store = self._kernel
        assert store is not None
        admitted: list[Admitted] = []
        rejected: list[tuple[int, Rejected]] = []
        for event in events:
            item = self._admit(event)
            if item is None:
                result.filtered += 1
            elif isinstance(item, Rejected):
                rejected.append((len(admitted), item))
            else:
                admitted.append(item)
        if not admitted:
            result.rejected.extend(rejection for _, rejection in rejected)
            return
        out = kernel_run(store, admitted, rows)
        feature_rows = iter(out.values)
        name = self.name
        dirty = self._dirty
        accepted, newest = out.accepted.tolist(), out.newest.tolist()
        for index in range(out.ran):
            event, key, _values, partition = admitted[index]
            if accepted[index]:
                dirty[partition].add(key)
                if rows and not (out.missing_last and index == out.ran - 1):
                    result.rows.append(
                        FeatureRow(
                            name,
                            key,
                            event.event_time,
                            event.arrival_time,
                            event.position,
                            next(feature_rows),
                        )
                    )
            else:
                rejected.append((index, self._too_late(event, key, newest[index])))
        if out.missing_last:  # its row needs the Python engine (an int sum beyond int64, ...)
            self._leave_kernel()
            event, key, _values, partition = admitted[out.ran - 1]
            state = self._partitions[partition][key]
            values_row = row(self.compiled, state, event.event_time)
            result.rows.append(
                FeatureRow(name, key, event.event_time, event.arrival_time, event.position, values_row)
            )
        if out.ran < len(admitted):
            self._leave_kernel()
            later: list[tuple[int, Rejected]] = []
            for index in range(out.ran, len(admitted)):
                before = len(result.rejected)
                self._ingest(admitted[index], rows, result)
                later.extend((index, rejection) for rejection in result.rejected[before:])
                del result.rejected[before:]
            rejected.extend(later)
        rejected.sort(key=lambda pair: pair[0])
        result.rejected.extend(rejection for _, rejection in rejected)

    def _kernel_for_batch(self) -> KernelStore | None:
        """The kernel store, compacted or left behind first where its limits say so: value ids
        and (slot, field) pairs must fit the count_distinct table's packed 32-bit fields, and
        values no state holds any more (expired count_distinct values, settled buffers) must not
        stay interned forever: past COMPACT_AT ids, when fewer than a quarter can still be in
        use, every key's state goes through KeyState into a fresh store."""
        store = self._kernel
        if store is None:
            return None
        if len(store.id_values) >= 2**31 or (store.capacity + 1) * store.fields >= 2**31:
            self._leave_kernel()
            return None
        interned = len(store.id_values)
        if interned > max(COMPACT_AT, 2 * store.interned_checked):
            store.interned_checked = interned  # (checked again once they have doubled)
            if interned <= 4 * store.interned_bound():
                return store
            fresh = KernelStore(store.compiled, store.layout)
            states = {partition: store.states(partition) for partition in store.partitions}
            for partition, keyed in states.items():
                for key, state in keyed.items():
                    if state.max_time is not None and not fresh.load(partition, key, state):
                        self._leave_kernel()
                        return None
            self._kernel = fresh
        return self._kernel

    def _leave_kernel(self) -> None:
        """Move every key's state to the Python engine (the kernel met a value it cannot hold)."""
        store = self._kernel
        if store is None:
            return
        self._kernel = None
        for partition, marked in store.take_dirty().items():  # (the slot marks become key sets)
            self._dirty.setdefault(partition, set()).update(marked)
        for partition, keys in store.partitions.items():
            states = self._partitions.setdefault(partition, {})
            for key, slot in keys.items():
                state = store.key_state(slot)
                if state.max_time is not None:
                    states[key] = state

    def _reject(self, event: SourceEvent, reason: str, detail: str) -> Rejected:
        return Rejected(reason, detail, event.position, event.raw, self.name, event.arrival_time)

    def _find(self, key: Key) -> KeyState | None:
        if self._kernel is not None:
            slot = self._kernel.find(key)
            if slot is None:
                return None
            materialized = self._kernel.key_state(slot)
            return materialized if materialized.max_time is not None else None
        for states in self._partitions.values():
            state = states.get(key)
            if state is not None:
                return state
        return None

    def watermark(self, key: Key) -> int | None:
        """The key's watermark (newest accepted event time - allowed lateness), None if unseen."""
        if self._kernel is not None:
            newest = self._kernel.newest(key)
            return None if newest is None else newest - self.compiled.lateness
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        return state.max_time - self.compiled.lateness

    def evaluate(self, key: Key, t: int) -> dict[str, Any] | None:
        """Feature values of `key` for windows ending at t, over the events processed so far.

        Exact for t ≥ the key's watermark; earlier t is evaluated at the watermark (the engine
        no longer holds finer history there). None if the key is unknown or its TTL has passed.
        """
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        if self.ttl is not None and t - state.max_time > self.ttl:
            return None
        t = max(t, state.max_time - self.compiled.lateness)
        return dict(zip(self.feature_names, evaluate_all(self.compiled, state, t), strict=True))

    def serve(self, key: Key, t: int) -> dict[str, Any] | None:
        """What the online store answers for a read at t: evaluation at max(t, newest event time)."""
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        if self.ttl is not None and t - state.max_time > self.ttl:
            return None
        return self.evaluate(key, max(t, state.max_time))

    def empty_values(self) -> dict[str, Any]:
        """What every feature reads as over an empty window."""
        return {feature.name: empty_result(feature.function) for feature in self.view.features}

    # ---------------------------------------------------------------- serving

    def serving_state(self, key: Key) -> ServingState | None:
        """The step functions that let a reader evaluate `key` exactly at any t ≥ max_time."""
        if self._kernel is not None:
            return self.serving_states([key])[0]
        state = self._find(key)
        if state is None or state.max_time is None:
            return None
        return serving_state(self.compiled, key, state)

    def serving_states(self, keys: Sequence[Key]) -> list[ServingState | None]:
        """serving_state of each key, in bulk (see serving_columns)."""
        columns = self.serving_columns(keys)
        return [columns.state(index) for index in range(len(keys))]

    def warm_up(self) -> None:
        """Load the compiled kernel's functions now rather than in the first batches (kernel/warmup.py)."""
        if self._kernel is not None:
            kernel_warm_up(self._kernel)

    def serving_columns(self, keys: Sequence[Key]) -> ServingColumns:
        """The serving states of many keys as columns (None for a key without one): on the kernel,
        read off its arrays in one call (kernel/serving.py) instead of building each key's
        KeyState; the online writer encodes them without building a ServingState per key."""
        store = self._kernel
        keys = list(keys)
        if store is None:
            return ServingColumns.of_states(keys, [self.serving_state(key) for key in keys])
        return kernel_serving_columns(store, keys, store.find_slots(keys))

    def take_dirty_by_partition(self) -> dict[int, list[Key]]:
        """take_dirty() grouped by partition (each partition's Redis writes are fenced on their own)."""
        return self._take_dirty(None)

    def take_dirty(self, partitions: Iterable[int] | None = None) -> list[Key]:
        """Keys changed since the last call (for the given partitions, or all), then forget them."""
        taken = self._take_dirty(None if partitions is None else set(partitions))
        return [key for keys in taken.values() for key in keys]

    def _take_dirty(self, partitions: set[int] | None) -> dict[int, list[Key]]:
        """The dirty keys by partition: those of the row paths (sets) and of tables (slot marks)."""
        taken: dict[int, list[Key]] = {}
        for partition, changed in self._dirty.items():
            if changed and (partitions is None or partition in partitions):
                taken[partition] = list(changed)
                changed.clear()
        if self._kernel is not None:
            for partition, marked in self._kernel.take_dirty(partitions).items():
                held = taken.get(partition)
                if held is None:
                    taken[partition] = marked
                else:  # (a key in both: once)
                    seen = set(held)
                    held.extend(key for key in marked if key not in seen)
        return taken

    # ---------------------------------------------------------------- state moves

    @property
    def partitions(self) -> list[int]:
        if self._kernel is not None:
            return sorted(self._kernel.partitions)
        return sorted(self._partitions)

    def key_count(self) -> int:
        if self._kernel is not None:
            return sum(len(keys) for keys in self._kernel.partitions.values())
        return sum(len(states) for states in self._partitions.values())

    def keys(self, partition: int | None = None) -> list[Key]:
        if self._kernel is not None:
            chosen = self._kernel.partitions
            if partition is not None:
                return list(chosen.get(partition, {}))
            return [key for keys in chosen.values() for key in keys]
        if partition is not None:
            return list(self._partitions.get(partition, {}))
        return [key for states in self._partitions.values() for key in states]

    def drop(self, partition: int) -> None:
        """Forget a partition's state (it was revoked; its new owner restores it)."""
        self._partitions.pop(partition, None)
        self._dirty.pop(partition, None)
        if self._kernel is not None:
            self._kernel.drop(partition)

    def snapshot(self, partition: int) -> dict[str, Any]:
        """A plain-value copy of one partition's state (JSON-able with engine.snapshot.to_json).

        On the kernel it is the kernel's own format (its arrays, kernel/snapshot.py), which takes
        milliseconds where the portable one takes ~0.1 ms per key; `restore` takes either."""
        if self._kernel is not None:
            return kernel_snapshot.take(self._kernel, self.name, self.fingerprint(), partition)
        return self.portable_snapshot(partition)

    def portable_snapshot(self, partition: int) -> dict[str, Any]:
        """The partition's state as per-key tiles of per-feature partials (engine/snapshot.py):
        independent of the engine and of the kernel's layout (and much slower on the kernel)."""
        if self._kernel is not None:
            states = self._kernel.states(partition)
        else:
            states = self._partitions.get(partition, {})
        return snapshots.snapshot_states(self.compiled, self.name, self.fingerprint(), partition, states)

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace one partition's state with a snapshot taken by `snapshot` (either format)."""
        if snapshot.get("format") == kernel_snapshot.FORMAT:
            self._restore_kernel_snapshot(snapshot)
            return
        partition, states = snapshots.restore_states(self.compiled, self.name, self.fingerprint(), snapshot)
        self._dirty[partition] = set()
        store = self._kernel
        if store is not None:
            store.drop(partition)
            if all(store.load(partition, key, state) for key, state in states.items()):
                return
            self._leave_kernel()
        self._partitions[partition] = states

    def _restore_kernel_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Into the kernel's arrays as they were; on the Python engine, through a scratch store."""
        snapshots.check_definition(snapshot, self.name, self.fingerprint())
        if self._kernel is not None:
            partition = kernel_snapshot.put(self._kernel, snapshot)
        else:
            layout = KernelLayout.build(self.compiled)
            if not isinstance(layout, KernelLayout):
                raise StateError(
                    f"a kernel snapshot of view {self.name!r}, which the kernel cannot run: {layout}"
                )
            scratch = KernelStore(self.compiled, layout)
            partition = kernel_snapshot.put(scratch, snapshot)
            self._partitions[partition] = {
                key: state for key, state in scratch.states(partition).items() if state.max_time is not None
            }
        self._dirty[partition] = set()

    def fingerprint(self) -> str:
        """Identifies the parts of the definition that shape state: features, keys, lateness, and
        whether a sum's field is an int (an exact int, not a binary fraction, in its tiles)."""
        parts = [
            self.name,
            ",".join(self.compiled.key_fields),
            str(self.compiled.lateness),
            *(
                f"{f.field}:{f.function}:{f.window}:{f.hop}:{f.name}{self._int_sum(f)}"
                for f in self.view.features
            ),
        ]
        return "|".join(parts)

    def _int_sum(self, feature: Aggregate) -> str:
        integer = (
            feature.function == "sum"
            and feature.field is not None
            and self.view.field_type(feature.field) is int
        )
        return ":int" if integer else ""


class Engine:
    """All views of a pipeline, fanned out by source topic."""

    def __init__(self, views: Sequence[FeatureView]) -> None:
        self.views = {view.name: ViewEngine(view) for view in views}
        self._by_topic: dict[str, list[ViewEngine]] = {}
        for engine in self.views.values():
            self._by_topic.setdefault(engine.view.source.topic, []).append(engine)

    def for_topic(self, topic: str) -> list[ViewEngine]:
        return self._by_topic.get(topic, [])

    def process(self, topic: str, events: Sequence[SourceEvent]) -> dict[str, ProcessResult]:
        """Run a micro-batch of one topic through every view reading that topic."""
        return {engine.name: engine.process(events) for engine in self.for_topic(topic)}
