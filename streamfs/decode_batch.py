"""A polled batch of JSON messages to one Arrow table at once, for schemas simple enough to check in bulk.

`Decoder` validates message by message with the schema's pydantic validator: ~3 µs per event,
plus a Python object per event and per value. For a flat schema of plain fields (str, int,
float, bool, datetime; Optional ones defaulting to None) with no validators, constraints,
aliases or special config, Arrow's JSON reader parses a whole batch in C++ into typed columns
with the same strictness: a string where a number belongs, a float where an int belongs, an
int beyond int64, a duplicate field, invalid JSON all fail the read. Whatever Arrow accepts
here, pydantic accepts with the same values; the checks pydantic makes and Arrow does not
(a required field missing or null, a non-finite float, a naive or unparsable datetime, an
event time beyond max_future, an oversized or empty message, one message holding two JSON
values) are made on the columns.

Any batch that fails any of it is refused, and no record of it is rejected here: `Decoder`,
the per-message path, is the only judge of a bad message and gives it its rejection and reason.
So the fast path only accepts what the per-message path accepts, with equal values
(tests/unit/test_decode_batch.py compares the two on random and hostile messages).

A refusal names the first record it refused where it can (Arrow's parse errors give the row;
the column checks find it). `decode_salvaging` uses that to keep a batch with a few bad records
columnar: the records before the first refused one as one table, that record to `Decoder`, and
on after it. One bad record in ten thousand no longer sends its whole batch down the per-message
path (~15 µs per record here instead of ~2).
"""

from __future__ import annotations

import io
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from streamfs.decode import Decoder
from streamfs.decode_flat import FlatScanner
from streamfs.definitions import KafkaSource
from streamfs.offline import layout
from streamfs.records import Position, Rejected

__all__ = ["BatchDecoder", "Refused", "Salvaged", "decode_salvaging"]

_PLAIN = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: pa.string()}
# Config keys that change nothing about how a plain field validates from JSON.
_HARMLESS_CONFIG = {
    "extra",
    "frozen",
    "title",
    "json_schema_extra",
    "protected_namespaces",
    "populate_by_name",
}
# Datetimes Arrow's cast parses exactly as pydantic does (it refuses anything looser, e.g. no
# offset, which pydantic accepts as naive and streamfs rejects); only UTC offsets, so a datetime
# value equals pydantic's in its time zone too, not only as an instant.
_UTC_DATETIME = r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?(Z|\+00:00)$"
_ERROR_ROW = re.compile(r" in row (\d+)$")  # how Arrow's JSON parse errors end (0-based)


@dataclass(frozen=True)
class Refused:
    """A batch the columnar checks do not take; `first`: the index of its first record they
    refuse, where known (None: e.g. an unexpected field, whose error names no row)."""

    first: int | None


def _first(mask: pa.ChunkedArray | pa.Array) -> Refused:
    """The refusal of the first record where a boolean column is true."""
    index = pc.index(mask, True).as_py()
    return Refused(index if index >= 0 else None)


class BatchDecoder:
    """Decodes batches of one source's JSON messages to archive-shaped Arrow tables, or says no."""

    def __init__(self, source: KafkaSource, fields: dict[str, tuple[type, bool]]) -> None:
        self.source = source
        self._fields = fields  # name -> (base type, nullable)
        self._names = list(fields)
        self._read_schema = pa.schema([pa.field(name, _PLAIN[kind]) for name, (kind, _) in fields.items()])
        forbid_extra = source.schema.model_config.get("extra") == "forbid"
        self._parse = pa_json.ParseOptions(
            explicit_schema=self._read_schema,
            unexpected_field_behavior="error" if forbid_extra else "ignore",
            newlines_in_values=False,
        )
        # most batches: one compiled pass to the columns Arrow's read and cast would give
        self._scanner = FlatScanner({name: kind for name, (kind, _) in fields.items()}, forbid_extra)
        self._archive = layout.archive_schema(source, "")

    @classmethod
    def build(cls, source: KafkaSource) -> BatchDecoder | None:
        """The batch decoder of a source, or None when its messages need per-message validation
        (a custom decoder, or a schema with anything but plain fields)."""
        fields = plain_fields(source)
        return None if fields is None else cls(source, fields)

    def decode(
        self,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        values: Sequence[bytes | None],
        arrivals: Sequence[int],
    ) -> pa.Table | None:
        """The messages of one partition as archive rows (topic, partition, offset, arrival_time,
        event_time, the schema's fields), or None if any of them needs `Decoder`."""
        result = self.decode_or_refuse(topic, partition, offsets, values, arrivals)
        return None if isinstance(result, Refused) else result

    def decode_or_refuse(
        self,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        values: Sequence[bytes | None],
        arrivals: Sequence[int],
    ) -> pa.Table | Refused:
        """As `decode`, but a refusal says which record it refused first, where it can."""
        count = len(values)
        if count == 0:
            return Refused(None)
        limit = self.source.max_message_bytes
        scanned = None
        joined = b""
        if None not in values:  # the scanner first: it checks each message's size and shape itself
            joined = b"\n".join(values)  # type: ignore[arg-type]  # (no None)
            if joined.count(b"\n") == count - 1 and b"\r" not in joined:
                scanned = self._scanner.scan(joined, count, limit)
        if scanned is None:  # Arrow's path, whose checks name the first record they refuse
            for index, value in enumerate(values):
                if not value or len(value) > limit or value.isspace():
                    return Refused(index)
            # (no None got here: `joined` holds every message)
            if joined.count(b"\n") != count - 1 or b"\r" in joined:
                # a message spanning lines would shift its neighbours
                return Refused(next(i for i, v in enumerate(values) if b"\n" in v or b"\r" in v))  # type: ignore[operator]
        columns = self._checked(scanned, count) if scanned is not None else self._read_checked(joined, count)
        if isinstance(columns, Refused):
            return columns
        stamps = columns[self.source.timestamp_field]
        if stamps.null_count:
            return _first(pc.is_null(stamps))
        times = (
            stamps.view(pa.int64()) if isinstance(stamps, pa.Array) else stamps.cast(pa.int64())
        ).to_numpy()
        event_times = np.floor_divide(times, 1000)  # µs to ms, floor (as the per-message path)
        arrival = np.asarray(arrivals, dtype=np.int64)
        if self.source.max_future is not None:
            future = event_times > arrival + self.source.max_future
            if future.any():
                return Refused(int(np.argmax(future)))
        arrays: list[pa.Array | pa.ChunkedArray] = [
            *layout.topic_partition_columns(topic, partition, count),
            pa.array(np.asarray(offsets, dtype=np.int64)),
            pa.array(arrival, pa.int64()).view(layout.TIMESTAMP),  # (views: a cast costs ~15 µs a call)
            pa.array(event_times, pa.int64()).view(layout.TIMESTAMP),
        ]
        arrays += [columns[name] for name in self._names]
        return pa.Table.from_arrays(arrays, schema=self._archive)

    def _checked(
        self, columns: dict[str, pa.Array | pa.ChunkedArray], count: int
    ) -> dict[str, pa.Array | pa.ChunkedArray] | Refused:
        """The scanned columns if no required value is missing or null (datetimes are converted
        already; floats are finite: the scanner reads no infinity)."""
        for name, (_kind, nullable) in self._fields.items():
            column = columns[name]
            if column.null_count and not nullable:
                return _first(pc.is_null(column))  # missing or null: pydantic says which, per message
        return columns

    def _read_checked(self, joined: bytes, count: int) -> dict[str, pa.Array | pa.ChunkedArray] | Refused:
        """The batch's columns read by Arrow, datetimes converted, unless a check refuses them."""
        try:
            read = self._read(joined)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            row = _ERROR_ROW.search(str(exc))  # (one block: the row counts from the batch's start)
            return Refused(int(row.group(1)) if row and int(row.group(1)) < count else None)
        if read.num_rows != count:
            return Refused(None)  # a message holding two JSON values (and so another holding none)
        columns: dict[str, pa.Array | pa.ChunkedArray] = {}
        for name, (kind, nullable) in self._fields.items():
            column = read.column(name)
            if column.null_count and not nullable:
                return _first(pc.is_null(column))  # missing or null: pydantic says which, per message
            if kind is float and column.null_count < count and not pc.all(pc.is_finite(column)).as_py():
                return _first(pc.invert(pc.fill_null(pc.is_finite(column), True)))
            if kind is datetime:
                converted = self._datetimes(name, column)
                if isinstance(converted, Refused):
                    return converted
                column = converted
            columns[name] = column
        return columns

    def _read(self, joined: bytes) -> pa.Table:
        """Arrow's JSON reader over newline-joined messages, in one block on this thread, whose
        parse errors name the row in the batch. (Arrow's thread pool parsed a batch of 5,000
        payments in 0.58 µs per message of wall time instead of 0.69, but took more CPU, and in
        the worker, whose other core writes Parquet, one thread measured better: 149,009 and
        153,724 events/s at 7.0 and 6.8 CPU s per M against 146,001 and 148,865 at 7.2 and 7.1.)"""
        return pa_json.read_json(
            io.BytesIO(joined),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(len(joined) + 1, 1 << 20)),
            parse_options=self._parse,
        )

    def empty(self) -> pa.Table:
        """No archive rows (a batch whose every record was rejected)."""
        return self._archive.empty_table()

    def _datetimes(self, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray | Refused:
        """A datetime field's strings as UTC microseconds, if all parse as pydantic parses them."""
        matches = pc.match_substring_regex(column, _UTC_DATETIME)
        if matches.null_count < len(column) and not pc.all(matches).as_py():
            return _first(pc.invert(pc.fill_null(matches, True)))
        try:
            return column.cast(layout.VALUE_TIMESTAMP)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return Refused(None)  # a date that does not exist, an hour 24, ...


@dataclass(frozen=True)
class Salvaged:
    """A batch with bad records, decoded around them."""

    table: pa.Table  # the archive rows of the records kept, in order
    kept: list[int]  # their indices in the batch
    rejected: list[Rejected]  # the others, as Decoder rejects them


def decode_salvaging(
    batch: BatchDecoder,
    single: Decoder,
    topic: str,
    partition: int,
    offsets: Sequence[int],
    values: Sequence[bytes | None],
    arrivals: Sequence[int],
    max_rejected: int,
) -> pa.Table | Salvaged | None:
    """A batch as one table where it can be, else decoded around its bad records: the records
    before the first one the columnar checks refuse as a table, that one judged by `single`, and
    on after it. None when that cannot be done: a refusal names no record, `single` accepts a
    record the columnar checks refuse (a +02:00 offset, say), or more than `max_rejected`
    records are bad: the batch then goes per message.

    Rejected records change no state, so leaving them out of the table changes nothing
    downstream. Each costs two more Arrow reads (~0.6 ms each here however small, plus the
    records read): past about one bad record in 100, the per-message path is cheaper."""
    parts: list[pa.Table] = []
    kept: list[int] = []
    rejected: list[Rejected] = []
    start, count = 0, len(values)
    judge = -1  # a record the columnar checks refused, to be judged by `single`
    while start < count:
        if start == judge:
            decoded = single.decode(
                values[start],
                arrival_time=arrivals[start],
                position=Position(topic, partition, offsets[start]),
            )
            if not isinstance(decoded, Rejected) or len(rejected) == max_rejected:
                return None
            rejected.append(decoded)
            start += 1
            continue
        end = count
        while True:  # shrink to the records before the first refused one, as a table
            result = batch.decode_or_refuse(
                topic, partition, offsets[start:end], values[start:end], arrivals[start:end]
            )
            if not (isinstance(result, Refused) and result.first):
                break
            if result.first >= end - start:
                return None  # (never: a refusal names one of its records; but never loop on it)
            end = start + result.first
        if isinstance(result, Refused):
            if result.first is None:
                return None
            judge = start
            continue
        if not rejected and end == count:
            return result  # no bad record at all
        parts.append(result)
        kept.extend(range(start, end))
        start = judge = end
    table = pa.concat_tables(parts).combine_chunks() if parts else batch.empty()
    return Salvaged(table, kept, rejected)


def plain_fields(source: KafkaSource) -> dict[str, tuple[type, bool]] | None:
    """name -> (base type, nullable) of a schema whose JSON validation Arrow can reproduce, else None."""
    schema = source.schema
    if source.decoder is not None or source.field_type(source.timestamp_field) is not datetime:
        return None
    config = schema.model_config
    if set(config) - _HARMLESS_CONFIG or config.get("extra") == "allow":
        return None
    decorators = schema.__pydantic_decorators__
    if any(
        getattr(decorators, kind)
        for kind in (
            "validators",
            "field_validators",
            "root_validators",
            "model_validators",
            "field_serializers",
        )
    ):
        return None
    if schema.__pydantic_root_model__ or getattr(schema, "__pydantic_generic_metadata__", {}).get("origin"):
        return None
    fields: dict[str, tuple[type, bool]] = {}
    for name, info in schema.model_fields.items():
        if info.alias not in (None, name) or info.validation_alias is not None or info.metadata:
            return None
        base, nullable = _base(info.annotation)
        if base not in _PLAIN:
            return None
        if nullable and not (info.default is None and info.default_factory is None):
            return None  # Optional without a None default: missing and null differ
        if not nullable and not info.is_required():
            return None  # a default other than None would fill missing values
        fields[name] = (base, nullable)
    return fields


def _base(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `T` or `T | None`; (None, False) for anything else."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
        return None, False
    return annotation, False


def warm_up() -> None:
    """Do what the first bulk decode would otherwise do in the loop: pyarrow imports its time
    zone support on the first cast of a zoned timestamp column (~170 ms here), and the compiled
    scanner is loaded from numba's cache (or compiled, the first time on a machine)."""
    pa.array([0], pa.timestamp("us", tz="UTC")).cast(pa.int64())
    FlatScanner({"t": str}, forbid_extra=False).scan(b'{"t":"x"}', 1, 100)
