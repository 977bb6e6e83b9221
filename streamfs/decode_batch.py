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

Any batch that fails any of it returns None, and the caller decodes that batch message by
message with `Decoder`, which gives each bad message its rejection and reason. So the fast path
never rejects anything: it only accepts what the per-message path accepts, with equal values
(tests/unit/test_decode_batch.py compares the two on random and hostile messages).
"""

from __future__ import annotations

import io
import types
import typing
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from streamfs.definitions import KafkaSource
from streamfs.offline import layout

__all__ = ["BatchDecoder"]

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


class BatchDecoder:
    """Decodes batches of one source's JSON messages to archive-shaped Arrow tables, or says no."""

    def __init__(self, source: KafkaSource, fields: dict[str, tuple[type, bool]]) -> None:
        self.source = source
        self._fields = fields  # name -> (base type, nullable)
        self._names = list(fields)
        self._read_schema = pa.schema([pa.field(name, _PLAIN[kind]) for name, (kind, _) in fields.items()])
        self._parse = pa_json.ParseOptions(
            explicit_schema=self._read_schema,
            unexpected_field_behavior="error"
            if source.schema.model_config.get("extra") == "forbid"
            else "ignore",
            newlines_in_values=False,
        )
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
        count = len(values)
        if count == 0:
            return None
        limit = self.source.max_message_bytes
        for value in values:
            if not value or len(value) > limit or value.isspace():
                return None
        joined = b"\n".join(values)  # type: ignore[arg-type]  # (None was ruled out above)
        if joined.count(b"\n") != count - 1 or b"\r" in joined:
            return None  # a message spanning lines would shift its neighbours
        try:
            read = pa_json.read_json(
                io.BytesIO(joined),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=max(len(joined) + 1, 1 << 20)),
                parse_options=self._parse,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if read.num_rows != count:
            return None  # a message holding two JSON values (and so another holding none)
        columns: dict[str, pa.ChunkedArray] = {}
        for name, (kind, nullable) in self._fields.items():
            column = read.column(name)
            if column.null_count and not nullable:
                return None  # missing or null: pydantic says which, per message
            if kind is float and column.null_count < count and not pc.all(pc.is_finite(column)).as_py():
                return None
            if kind is datetime:
                converted = self._datetimes(name, column)
                if converted is None:
                    return None
                column = converted
            columns[name] = column
        stamps = columns[self.source.timestamp_field]
        if stamps.null_count:
            return None
        times = stamps.cast(pa.int64()).to_numpy()
        event_times = np.floor_divide(times, 1000)  # µs to ms, floor (as the per-message path)
        arrival = np.asarray(arrivals, dtype=np.int64)
        if self.source.max_future is not None and (event_times > arrival + self.source.max_future).any():
            return None
        arrays: list[pa.Array | pa.ChunkedArray] = [
            *layout.topic_partition_columns(topic, partition, count),
            pa.array(np.asarray(offsets, dtype=np.int64)),
            pa.array(arrival).cast(layout.TIMESTAMP),
            pa.array(event_times).cast(layout.TIMESTAMP),
        ]
        arrays += [columns[name] for name in self._names]
        return pa.Table.from_arrays(arrays, schema=self._archive)

    def _datetimes(self, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray | None:
        """A datetime field's strings as UTC microseconds, if all parse as pydantic parses them."""
        valid = column.drop_null()
        if len(valid) and not pc.all(pc.match_substring_regex(valid, _UTC_DATETIME)).as_py():
            return None
        try:
            return column.cast(layout.VALUE_TIMESTAMP)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # a date that does not exist, an hour 24, ...


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
