"""BatchDecoder (the worker's columnar decode) accepts only what Decoder accepts, with equal values.

The reference is the per-message path: Decoder.decode of each message, then the offline
writer's archive table of the events. A batch the fast path takes must give exactly that
table; any batch holding a message the fast path cannot vouch for must give None (the worker
then decodes it message by message, rejecting the bad ones with their reasons).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from decode_schemas import Pay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from streamfs.decode import Decoder
from streamfs.decode_batch import BatchDecoder, Refused, Salvaged, decode_salvaging
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.offline import OfflineWriter
from streamfs.offline.scan import events_from_table
from streamfs.records import Position, Rejected, SourceEvent

SOURCE = KafkaSource("pays", topic="pays", schema=Pay, timestamp_field="ts", max_message_bytes=2_000)
VIEW = FeatureView(
    "pay_view", entity=Entity("card", join_keys=["card"]), source=SOURCE, features=[Aggregate(None, "count")]
)


def reference(values: list[bytes | None], arrivals: list[int], tmp: Path) -> list[Any] | None:
    """What the per-message path gives (see `exactly`), or None if it rejects any message."""
    decoder = Decoder(SOURCE)
    events = []
    for offset, (value, arrival) in enumerate(zip(values, arrivals, strict=True)):
        decoded = decoder.decode(value, arrival_time=arrival, position=Position("pays", 3, 100 + offset))
        if not isinstance(decoded, SourceEvent):
            return None
        events.append(decoded)
    writer = OfflineWriter(tmp, [VIEW])
    return exactly(writer._archive_table(SOURCE, "pays", 3, events).to_pylist(), events)


def fast(values: list[bytes | None], arrivals: list[int], source: KafkaSource = SOURCE) -> list[Any] | None:
    decoder = BatchDecoder.build(source)
    assert decoder is not None
    table = decoder.decode("pays", 3, list(range(100, 100 + len(values))), values, arrivals)
    return None if table is None else exactly(table.to_pylist(), events_from_table(table, source))


def exactly(archived: list[dict[str, Any]], events: list[SourceEvent]) -> list[Any]:
    """The archive rows, and the events as the engine sees them with each value's type and, for
    datetimes, time zone (aware datetimes compare equal across zones; their values do not)."""

    def strict(value: Any) -> Any:
        offset = value.utcoffset() if isinstance(value, datetime) else None
        return (type(value).__name__, value, offset)

    seen = [
        (e.event_time, e.arrival_time, e.position, sorted((k, strict(v)) for k, v in e.fields.items()))
        for e in events
    ]
    return [archived, seen]


GOOD = {"card": "c1", "amount": 12.5, "n": 3, "ok": True, "ts": "2024-03-01T10:00:00.123Z"}

valid_messages = st.fixed_dictionaries(
    {
        "card": st.text(max_size=8),
        "amount": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60),
        "n": st.integers(-(2**63), 2**63 - 1),
        "ok": st.booleans(),
        "ts": st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(
            lambda d: d.isoformat() + st_choice_suffix(d)
        ),
    },
    optional={
        "note": st.none() | st.text(max_size=5),
        "at": st.none() | st.just("2024-01-01T00:00:00+00:00") | st.just("2024-01-01 00:00:00.5Z"),
        "extra": st.integers(-1000, 1000) | st.lists(st.integers(0, 9), max_size=2),
    },
).map(orjson.dumps)


def st_choice_suffix(d: datetime) -> str:
    return "Z" if d.microsecond % 2 else "+00:00"


HOSTILE = [
    None,
    b"",
    b"   ",
    b"not json",
    b"[1, 2]",
    b'{"card": "c1"}',  # fields missing
    orjson.dumps({**GOOD, "ts": "2024-03-01T10:00:00"}),  # naive
    orjson.dumps({**GOOD, "ts": "2024-03-01T11:00:00+01:00"}),  # an offset: pydantic keeps it
    orjson.dumps({**GOOD, "ts": "2024-02-30T00:00:00Z"}),
    orjson.dumps({**GOOD, "ts": 1709287200}),  # a number: pydantic reads it as a time
    orjson.dumps({**GOOD, "ts": None}),
    orjson.dumps({**GOOD, "amount": "12.5"}),  # pydantic's lax mode parses it
    orjson.dumps({**GOOD, "amount": None}),
    orjson.dumps({**GOOD, "n": 3.0}),
    orjson.dumps({**GOOD, "n": "3"}),
    orjson.dumps({**GOOD, "n": 0}).replace(b'"n":0', b'"n":18446744073709551616'),
    orjson.dumps({**GOOD, "ok": 1}),
    orjson.dumps({**GOOD, "ok": "true"}),
    orjson.dumps({**GOOD, "card": 7}),
    orjson.dumps({**GOOD, "at": "2024-01-01T00:00:00"}),
    orjson.dumps({**GOOD, "at": "2024-01-01T01:00:00+01:00"}),
    b'{"card": "c1", "amount": NaN, "n": 1, "ok": true, "ts": "2024-03-01T10:00:00Z"}',
    b'{"card": "c1", "amount": 1e400, "n": 1, "ok": true, "ts": "2024-03-01T10:00:00Z"}',
    b'{"card": "c1", "card": "c2", "amount": 1, "n": 1, "ok": true, "ts": "2024-03-01T10:00:00Z"}',
    orjson.dumps(GOOD) + b" " + orjson.dumps(GOOD),  # two values in one message
    orjson.dumps(GOOD, option=orjson.OPT_INDENT_2),  # valid, but spans lines
    orjson.dumps({**GOOD, "note": "x" * 3_000}),  # oversized
]
hostile_messages = st.sampled_from(HOSTILE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_messages | hostile_messages, min_size=1, max_size=12), st.data())
def test_a_batch_taken_in_bulk_equals_the_per_message_path(
    tmp_path_factory: pytest.TempPathFactory, values: list[bytes | None], data: st.DataObject
) -> None:
    arrivals = [data.draw(st.integers(0, 2**42)) for _ in values]
    got = fast(values, arrivals)
    if got is not None:
        assert got == reference(values, arrivals, tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("message", HOSTILE)
def test_each_hostile_message_is_left_to_the_per_message_path_or_decoded_alike(
    tmp_path: Path, message: bytes | None
) -> None:
    values = [orjson.dumps(GOOD), message, orjson.dumps({**GOOD, "note": None})]
    got = fast(values, [5, 6, 7])
    assert got is None or got == reference(values, [5, 6, 7], tmp_path)


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_messages, min_size=1, max_size=20), st.data())
def test_plain_valid_messages_take_the_bulk_path(values: list[bytes], data: st.DataObject) -> None:
    """The fast path is not vacuous: every batch of valid, plain messages takes it."""
    arrivals = [data.draw(st.integers(0, 2**42)) for _ in values]
    assert fast(values, arrivals) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        orjson.dumps({**GOOD, "ts": "2024-03-01T10:00:00"}),
        orjson.dumps({**GOOD, "amount": "12.5"}),
        b'{"card": "c1", "amount": NaN, "n": 1, "ok": true, "ts": "2024-03-01T10:00:00Z"}',
        orjson.dumps(GOOD) + b" " + orjson.dumps(GOOD),
        None,
    ],
)
def test_one_bad_message_sends_the_whole_batch_to_the_per_message_path(message: bytes | None) -> None:
    values = [orjson.dumps(GOOD), message, orjson.dumps(GOOD)]
    assert fast(values, [0, 0, 0]) is None


def test_an_event_time_beyond_max_future_is_left_to_the_per_message_path() -> None:
    source = SOURCE.model_copy(update={"max_future": 60_000})
    arrival = 1_709_287_200_123  # GOOD's event time
    assert fast([orjson.dumps(GOOD)], [arrival], source) is not None
    assert fast([orjson.dumps(GOOD)], [arrival - 60_001], source) is None


def salvage(values: list[bytes | None], arrivals: list[int], tmp: Path) -> tuple[Any, Any] | None:
    """decode_salvaging's output and the per-message path's, in comparable shape (None: it gave up)."""
    decoder = BatchDecoder.build(SOURCE)
    assert decoder is not None
    single = Decoder(SOURCE)
    offsets = list(range(100, 100 + len(values)))
    got = decode_salvaging(decoder, single, "pays", 3, offsets, values, arrivals, max_rejected=len(values))
    if got is None:
        return None
    judged = [
        single.decode(v, arrival_time=a, position=Position("pays", 3, o))
        for v, a, o in zip(values, arrivals, offsets, strict=True)
    ]
    accepted = [d for d in judged if isinstance(d, SourceEvent)]
    expected_kept = [i for i, d in enumerate(judged) if isinstance(d, SourceEvent)]
    expected_rejected = [(r.reason, r.detail, r.position, r.raw) for r in judged if isinstance(r, Rejected)]
    writer = OfflineWriter(tmp, [VIEW])
    expected = [
        expected_kept,
        expected_rejected,
        exactly(writer._archive_table(SOURCE, "pays", 3, accepted).to_pylist(), accepted),
    ]
    if not isinstance(got, Salvaged):
        return [
            list(range(len(values))),
            [],
            exactly(got.to_pylist(), events_from_table(got, SOURCE)),
        ], expected
    rejected = [(r.reason, r.detail, r.position, r.raw) for r in got.rejected]
    return [
        got.kept,
        rejected,
        exactly(got.table.to_pylist(), events_from_table(got.table, SOURCE)),
    ], expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_messages | hostile_messages, min_size=1, max_size=16), st.data())
def test_a_batch_decoded_around_its_bad_records_equals_the_per_message_path(
    tmp_path_factory: pytest.TempPathFactory, values: list[bytes | None], data: st.DataObject
) -> None:
    """Kept records, rejections (reason, detail, position, bytes) and the table all as Decoder gives them."""
    arrivals = [data.draw(st.integers(0, 2**42)) for _ in values]
    compared = salvage(values, arrivals, tmp_path_factory.mktemp("salvage"))
    if compared is not None:
        got, expected = compared
        assert got == expected


def test_bad_records_of_every_kind_are_decoded_around(tmp_path: Path) -> None:
    """Not vacuous: records the columnar checks refuse at each stage (before parsing, the parse,
    the column checks) and Decoder rejects do not send the batch per message."""
    good = [orjson.dumps({**GOOD, "n": i}) for i in range(6)]
    bad = [
        None,  # before parsing
        b"not json",  # Arrow's parse error names its row
        orjson.dumps({**GOOD, "amount": "x"}),  # a string where a number belongs
        b'{"card": "c1"}',  # a required field missing (a null column)
        orjson.dumps({**GOOD, "ts": "2024-03-01T10:00:00"}),  # naive (the datetime check)
        b'{"card": "c1", "amount": NaN, "n": 1, "ok": true, "ts": "2024-03-01T10:00:00Z"}',
        orjson.dumps(GOOD, option=orjson.OPT_INDENT_2) + b"x",  # spans lines
    ]
    values: list[bytes | None] = [good[0], *bad[:3], good[1], good[2], *bad[3:], good[3], good[4], good[5]]
    compared = salvage(values, [7] * len(values), tmp_path)
    assert compared is not None
    got, expected = compared
    assert got == expected
    assert len(got[0]) == len(good) and len(got[1]) == len(bad)


def test_more_bad_records_than_allowed_gives_up() -> None:
    values = [orjson.dumps(GOOD), b"not json", orjson.dumps(GOOD), None, orjson.dumps(GOOD)]
    decoder = BatchDecoder.build(SOURCE)
    assert decoder is not None
    arguments = ("pays", 3, list(range(5)), values, [0] * 5)
    assert isinstance(decode_salvaging(decoder, Decoder(SOURCE), *arguments, max_rejected=2), Salvaged)
    assert decode_salvaging(decoder, Decoder(SOURCE), *arguments, max_rejected=1) is None


def test_a_record_pydantic_accepts_and_the_columnar_checks_refuse_gives_up() -> None:
    """A +01:00 offset: pydantic keeps it, Arrow's cast would not keep its zone; per message."""
    values = [orjson.dumps(GOOD), b"not json", orjson.dumps({**GOOD, "ts": "2024-03-01T11:00:00+01:00"})]
    decoder = BatchDecoder.build(SOURCE)
    assert decoder is not None
    assert (
        decode_salvaging(decoder, Decoder(SOURCE), "pays", 3, [1, 2, 3], values, [0, 0, 0], max_rejected=3)
        is None
    )


class WithValidator(BaseModel):
    card: str
    ts: datetime

    @field_validator("card")
    @classmethod
    def upper(cls, value: str) -> str:
        return value.upper()


class Constrained(BaseModel):
    card: Annotated[str, Field(min_length=2)]
    ts: datetime


class Aliased(BaseModel):
    card: str = Field(alias="CardId")
    ts: datetime


class Aware(BaseModel):
    card: str
    ts: AwareDatetime


class OptionalRequired(BaseModel):
    card: str | None
    ts: datetime


class Defaulted(BaseModel):
    card: str = "none"
    ts: datetime


class Stripped(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)
    card: str
    ts: datetime


class EpochTime(BaseModel):
    card: str
    ts: int


@pytest.mark.parametrize(
    "schema", [WithValidator, Constrained, Aliased, Aware, OptionalRequired, Defaulted, Stripped, EpochTime]
)
def test_schemas_pydantic_must_validate_take_the_per_message_path(schema: type[BaseModel]) -> None:
    assert BatchDecoder.build(KafkaSource("s", topic="s", schema=schema, timestamp_field="ts")) is None


def test_a_custom_decoder_takes_the_per_message_path() -> None:
    source = KafkaSource("s", topic="s", schema=Pay, timestamp_field="ts", decoder=orjson.loads)
    assert BatchDecoder.build(source) is None
    assert BatchDecoder.build(SOURCE) is not None


def test_a_parse_error_in_a_batch_read_on_threads_names_its_row_in_the_batch() -> None:
    """A batch of more than two 256 KB blocks is parsed on Arrow's threads, whose parse errors
    count rows from their block's start: the refusal must still name the record in the batch."""
    decoder = BatchDecoder.build(SOURCE)
    assert decoder is not None
    values: list[bytes | None] = [orjson.dumps({**GOOD, "n": i, "note": "x" * 100}) for i in range(8_000)]
    assert sum(len(v) for v in values if v) > 3 * (1 << 18)  # (so several blocks, on threads)
    good = decoder.decode_or_refuse("pays", 3, list(range(8_000)), values, [7] * 8_000)
    assert not isinstance(good, Refused) and good.num_rows == 8_000
    values[6_500] = b"not json"
    refused = decoder.decode_or_refuse("pays", 3, list(range(8_000)), values, [7] * 8_000)
    assert refused == Refused(6_500)
