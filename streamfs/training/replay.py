"""Point-in-time feature values for one view, recomputed by replaying the event archive.

Window semantics are never re-implemented here: archived events go through a fresh ViewEngine
in arrival order, with label evaluations interleaved at the right moments, so a training set
holds exactly what the engine computes.

* as_served: before answering a label at t, the engine has processed every event of the
  label's entity that arrived at or before t (ordered by arrival time, partition, offset); the
  answer is `serve(key, t)`, what the online store returned at t.
* event_time: a first replay in arrival order decides which events were accepted (too-late
  events are rejected there, as online). The accepted events are then replayed sorted by
  (event time, arrival order) into a second engine, which answers `evaluate(key, t)` after
  every accepted event with event time ≤ t: the value as if nothing had arrived late.

Labels whose entity has no events yet read as empty windows (count 0, sum 0, others null) if
the view accepts an event of that entity at any point in the archive, and as nulls if it never
does. TTL applies as the engine applies it.

Entity keys are independent in the engine (each has its own state), so the replay is organised
by *unit*: the archive rows of one label key (or, for a view with a `transform`, which may
rewrite keys, all rows as one unit). Rows are sorted by (unit, arrival order) and each unit is
replayed on its own, only as far as its latest label needs:

* as_served replays a unit's rows up to its latest label's arrival cut and no further (rows
  after it can change no answer of that key); only units with a label before their entity's
  first accepted event read on, until the engine accepts one.
* event_time skips the acceptance replay (pass 1) for a unit when no event of it can have been
  rejected as too late: an event is too late only if its event time is more than the allowed
  lateness behind the newest *accepted* event time of its key so far, which is never more than
  the newest event time of the unit's earlier rows, so a vectorised running maximum over the
  unit's rows in arrival order proves it (conservatively) for the whole unit. Units with a
  candidate too-late event get the exact pass 1 through an engine, as before.

How buckets of keys are spread over processes is in buckets.py; reading and ordering the
archive rows in archive_rows.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfs.definitions import FeatureView
from streamfs.engine import Key, ViewEngine
from streamfs.offline.layout import DataFile
from streamfs.offline.scan import events_from_table
from streamfs.training.archive_rows import (
    ARRIVAL_ORDER,
    EVENT_ORDER,
    UNIT,
    Cursor,
    Times,
    key_values,
    label_cuts,
    ms,
    position_id,
    read_rows,
)

__all__ = ["Mode", "Replay", "replay_bucket"]

Mode = Literal["as_served", "event_time"]
Flags = np.ndarray[Any, np.dtype[np.bool_]]
_STRETCH = 20_000
"""Events per ViewEngine.process_answering call while answering labels (bounds the memory of
the events held at once; larger stretches amortize the call)."""


@dataclass(slots=True)
class Replay:
    """One view's point-in-time request: label keys and times, the features wanted, the archive."""

    view: FeatureView
    files: Sequence[DataFile]
    keys: Sequence[Key | None]
    times: Times
    features: Sequence[str]
    mode: Mode
    events_per_bucket: int
    workers: int | None = None


# ---------------------------------------------------------------------- one bucket


@dataclass(slots=True)
class _Bucket:
    """A bucket's archive rows sorted by (unit, arrival order), and its labels sorted by (unit,
    time). `starts[u]:ends[u]` are unit u's rows."""

    table: pa.Table
    units: Times
    starts: Times
    ends: Times
    label_local: Times  # position of each sorted label in the bucket's label list
    label_units: Times
    label_times: Times
    label_keys: list[Key]


def replay_bucket(request: Replay, keys: list[Key], labels: Times, columns: list[list[Any]]) -> None:
    bucket = _prepare(request, keys, labels)
    if request.mode == "as_served":
        _as_served(request, bucket, columns)
    else:
        _event_time(request, bucket, columns)


def _prepare(request: Replay, keys: list[Key], labels: Times) -> _Bucket:
    view = request.view
    bucket_index = {key: i for i, key in enumerate(keys)}
    label_of = np.asarray([bucket_index[request.keys[int(i)]] for i in labels], dtype=np.int64)  # type: ignore[index]
    if view.transform is not None:
        table = read_rows(view, request.files, None)
        row_units = np.zeros(table.num_rows, dtype=np.int64)
        units_of_keys = np.zeros(len(keys), dtype=np.int64)
        unit_count = 1
    else:
        value_set = key_values(view, keys)
        table = read_rows(view, request.files, value_set)
        row_units = np.asarray(table.column(UNIT).to_numpy(), dtype=np.int64)
        # Distinct keys can share a unit (composite keys joined as text may collide): a unit is
        # then several keys replayed together, which changes no key's answers.
        units_of_keys = np.asarray(pc.index_in(value_set, value_set=value_set).to_numpy(), dtype=np.int64)
        unit_count = len(keys)
    if UNIT not in table.column_names:
        table = table.append_column(UNIT, pa.array(row_units, pa.int64()))
    table = table.sort_by([(UNIT, "ascending"), *ARRIVAL_ORDER])
    units = np.asarray(table.column(UNIT).to_numpy(), dtype=np.int64)
    edges = np.searchsorted(units, np.arange(unit_count + 1, dtype=np.int64), side="left").astype(np.int64)
    label_units = units_of_keys[label_of]
    label_times = request.times[labels]
    order = np.lexsort((labels, label_times, label_units))
    return _Bucket(
        table=table,
        units=units,
        starts=edges[:-1],
        ends=edges[1:],
        label_local=order.astype(np.int64),
        label_units=label_units[order],
        label_times=label_times[order],
        label_keys=[request.keys[int(labels[i])] for i in order],  # type: ignore[misc]
    )


# ---------------------------------------------------------------------- the two modes


def _as_served(request: Replay, bucket: _Bucket, columns: list[list[Any]]) -> None:
    table, units = bucket.table, bucket.units
    cuts = label_cuts(units, ms(table, "arrival_time"), bucket.label_units, bucket.label_times)
    # Each unit's rows up to its latest label's cut (labels are sorted by unit, then time).
    reach = bucket.starts.copy()
    reach[bucket.label_units] = cuts
    engine = ViewEngine(request.view)
    unseen = _answer_labels(request, engine, True, table, units, reach, cuts, bucket, columns)
    _fill_known_later(request, [(engine, reach, None)], unseen, bucket, columns)


def _event_time(request: Replay, bucket: _Bucket, columns: list[list[Any]]) -> None:
    table, units = bucket.table, bucket.units
    view = request.view
    unit_count = len(bucket.starts)
    latest = np.full(unit_count, np.iinfo(np.int64).min, dtype=np.int64)
    latest[bucket.label_units] = bucket.label_times  # sorted: the last write is the unit's latest
    event_times = ms(table, "event_time")
    relevant = event_times <= latest[units]
    rows = np.arange(table.num_rows, dtype=np.int64)
    # stop[u]: one past the unit's last relevant row in arrival order; pass 1 needs rows before it.
    stop = bucket.starts.copy()
    hits = rows[relevant]
    if len(hits):
        last = np.append(units[hits][1:] != units[hits][:-1], True)
        stop[units[hits][last]] = hits[last] + 1
    head = rows < stop[units]
    candidates = _maybe_late(units, event_times, head, bucket.starts, view.source.allowed_lateness)

    # Pass 1, arrival order, only for units that may have a too-late event: which were rejected?
    first = ViewEngine(view)
    pass_one = head & candidates[units]
    rejected: list[int] = []
    if pass_one.any():
        chosen = table.filter(pa.array(pass_one))
        for batch in Cursor(chosen, view).advance(chosen.num_rows):
            for rejection in first.process(batch, rows=False).rejected:
                position = rejection.position
                assert position is not None
                rejected.append(position_id(position.partition, position.offset))
    keep = relevant
    if rejected:
        ids = position_id(
            table.column("partition").to_numpy().astype(np.int64), table.column("offset").to_numpy()
        )
        keep = relevant & ~(pass_one & np.isin(ids, np.asarray(rejected, dtype=np.int64)))
    accepted = table.filter(pa.array(keep)).sort_by([(UNIT, "ascending"), *EVENT_ORDER])
    accepted_units = np.asarray(accepted.column(UNIT).to_numpy(), dtype=np.int64)
    edges = np.searchsorted(accepted_units, np.arange(unit_count + 1, dtype=np.int64), side="left")

    # Pass 2, event-time order: every accepted event with event time ≤ t, then evaluate at t.
    second = ViewEngine(view)
    cuts = label_cuts(accepted_units, ms(accepted, "event_time"), bucket.label_units, bucket.label_times)
    reach = edges[1:].astype(np.int64)  # every accepted row of a unit is ≤ its latest label
    unseen = _answer_labels(request, second, False, accepted, accepted_units, reach, cuts, bucket, columns)
    # Known later: candidate units ask pass 1's engine (reading on in arrival order); the others
    # accept every event that is not rejected on its own (bad value, missing key), whatever the
    # order, so pass 2's engine reading their remaining rows answers the same.
    _fill_known_later(
        request,
        [(first, stop, candidates), (second, None, ~candidates)],
        unseen,
        bucket,
        columns,
    )


def _maybe_late(units: Times, event_times: Times, head: Flags, starts: Times, lateness: int) -> Flags:
    """Per unit, whether one of its rows in `head` might be rejected as too late: its event time
    is more than `lateness` behind the greatest event time of the unit's earlier rows (which
    bounds the key's newest accepted event time from above). Rows are in arrival order."""
    unit_count = len(starts)
    flags = np.zeros(unit_count, dtype=np.bool_)
    if not len(units):
        return flags
    low = int(event_times.min())
    span = int(event_times.max()) - low + 1
    if unit_count * span >= 2**62:  # the packed running maximum would overflow: replay all
        flags[:] = True
        return flags
    base = units * span
    running = np.maximum.accumulate(base + (event_times - low))
    before = np.empty_like(running)
    before[0] = -1
    before[1:] = running[:-1]
    same = before >= base  # the previous maximum belongs to this unit
    late = same & head & (event_times - low < before - base - lateness)
    flags[units[late]] = True
    return flags


def _answer_labels(
    request: Replay,
    engine: ViewEngine,
    serve: bool,
    table: pa.Table,
    units: Times,
    reach: Times,
    cuts: Times,
    bucket: _Bucket,
    columns: list[list[Any]],
) -> list[int]:
    """Replay each unit's rows [start, reach) of `table` (sorted by unit, then time), answering
    its labels (sorted the same way) at their cuts, as serve (else evaluate) answers; returns the
    labels (positions in the sorted label list) whose entity the engine had not seen yet.

    Events and labels go to the engine in stretches of about _STRETCH events, each label asked
    at its place among them (ViewEngine.process_answering), so the kernel answers them inside
    its own loop instead of one call per label."""
    rows = np.arange(table.num_rows, dtype=np.int64)
    needed = rows < reach[units] if len(units) else np.zeros(0, dtype=np.bool_)
    prefix = np.zeros(table.num_rows + 1, dtype=np.int64)
    np.cumsum(needed, out=prefix[1:])
    chosen = table.filter(pa.array(needed)) if not needed.all() else table
    cursor = Cursor(chosen, request.view)
    features = request.features
    unseen: list[int] = []
    label_local = bucket.label_local.tolist()
    stretch_start = reach_so_far = 0  # rows [stretch_start, reach_so_far) wait for the engine
    asks: list[tuple[int, Key, int]] = []
    asked: list[int] = []

    def answer_pending() -> None:
        nonlocal stretch_start
        answers = _answer_rows(engine, cursor.take_table(reach_so_far), asks, serve)
        for sorted_index, (values, seen) in zip(asked, answers, strict=True):
            if values is not None:
                local = label_local[sorted_index]
                for column, name in zip(columns, features, strict=True):
                    column[local] = values[name]
            elif not seen:
                unseen.append(sorted_index)
        asks.clear()
        asked.clear()
        stretch_start = reach_so_far

    for sorted_index, (key, t, cut) in enumerate(
        zip(bucket.label_keys, bucket.label_times.tolist(), prefix[cuts].tolist(), strict=True)
    ):
        reach_so_far = max(reach_so_far, cut)
        asks.append((reach_so_far - stretch_start, key, t))
        asked.append(sorted_index)
        if reach_so_far - stretch_start >= _STRETCH:
            answer_pending()
    answer_pending()
    return unseen


def _answer_rows(
    engine: ViewEngine, table: pa.Table, asks: list[tuple[int, Key, int]], serve: bool
) -> list[tuple[dict[str, Any] | None, bool]]:
    """engine.process_answering over archive rows: as columns straight into the kernel where it
    can, as SourceEvents (events_from_table) for the rest."""
    done = engine.process_table_answering(table, asks, serve=serve)
    if done is None:
        return engine.process_answering(events_from_table(table, engine.view.source), asks, serve=serve)
    answers, ran = done
    if ran < table.num_rows or len(answers) < len(asks):
        rest = [(position - ran, key, t) for position, key, t in asks[len(answers) :]]
        events = events_from_table(table.slice(ran), engine.view.source)
        answers += engine.process_answering(events, rest, serve=serve)
    return answers


def _fill_known_later(
    request: Replay,
    engines: list[tuple[ViewEngine, Times | None, Flags | None]],
    unseen: list[int],
    bucket: _Bucket,
    columns: list[list[Any]],
) -> None:
    """Labels before their entity's first event: empty windows if the view ever accepts an
    event of the entity (read the unit on from `stop` (or its unread rows) to find out), else
    nulls. Each engine handles the units its flags select."""
    if not unseen:
        return
    empty: dict[str, Any] | None = None
    for engine, stop, selected in engines:
        mine = [i for i in unseen if selected is None or selected[bucket.label_units[i]]]
        waiting: dict[int, list[Key]] = {}  # unit -> its keys still without an accepted event
        for i in mine:
            key = bucket.label_keys[i]
            if engine.watermark(key) is None:
                waiting.setdefault(int(bucket.label_units[i]), []).append(key)
        if waiting:
            _read_on(request, engine, bucket, stop, waiting)
        for i in mine:
            if engine.watermark(bucket.label_keys[i]) is not None:
                empty = empty if empty is not None else engine.empty_values()
                local = bucket.label_local[i]
                for column, name in zip(columns, request.features, strict=True):
                    column[local] = empty[name]


def _read_on(
    request: Replay, engine: ViewEngine, data: _Bucket, stop: Times | None, waiting: dict[int, list[Key]]
) -> None:
    """Feed the waiting units' rows from `stop` on (or, without `stop`, their rows after their
    latest label's event time: those event_time's pass 2 did not read), in arrival order, until
    the engine has accepted an event of each waiting key: 1, 2, 4, ... more rows per unit a round
    (usually its first row settles it; rows rejected on their own, like bad values, need more)."""
    wanted = np.zeros(len(data.starts), dtype=np.bool_)
    wanted[list(waiting)] = True
    if stop is not None:
        rest = wanted[data.units] & (np.arange(data.table.num_rows, dtype=np.int64) >= stop[data.units])
    else:
        latest = np.full(len(data.starts), np.iinfo(np.int64).min, dtype=np.int64)
        latest[data.label_units] = data.label_times
        rest = wanted[data.units] & (ms(data.table, "event_time") > latest[data.units])
    rows = np.flatnonzero(rest)  # grouped by unit, each in arrival order
    units = data.units[rows]
    rank = np.arange(len(rows), dtype=np.int64) - np.searchsorted(units, units, side="left")
    taken, size = 0, 1
    while waiting:
        wanted[:] = False
        wanted[list(waiting)] = True
        step = wanted[units] & (rank >= taken) & (rank < taken + size)
        if not step.any():
            return
        chosen = data.table.take(pa.array(rows[step]))
        for batch in Cursor(chosen, request.view).advance(chosen.num_rows):
            engine.process(batch, rows=False)
        taken, size = taken + size, 2 * size
        waiting = {
            unit: left
            for unit, keys in waiting.items()
            if (left := [key for key in keys if engine.watermark(key) is None])
        }
