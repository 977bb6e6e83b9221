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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from streamfs.decode import Decoder
from streamfs.decode_batch import BatchDecoder
from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.offline import OfflineWriter
from streamfs.offline.scan import events_from_table
from streamfs.records import Position, SourceEvent


class Pay(BaseModel):
    card: str
    amount: float
    n: int
    ok: bool
    note: str | None = None
    at: datetime | None = None
    ts: datetime


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
