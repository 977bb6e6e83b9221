"""Decoder: the happy path, and every rejection reason with a detail that names the problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import AwareDatetime, BaseModel, field_validator

from streamfs import records
from streamfs.decode import Decoder
from streamfs.definitions import KafkaSource
from streamfs.durations import datetime_to_ms
from streamfs.records import Position, Rejected, SourceEvent


class Payment(BaseModel):
    card_id: str
    merchant_id: str
    amount: float
    currency: str
    country: str
    ts: datetime


class Reading(BaseModel):
    """Composite key (site, sensor), int epoch-ms timestamp, optional float, a second datetime."""

    site: str
    sensor: int
    value: float | None = None
    installed: datetime | None = None
    at: int


class Strict(BaseModel):
    id: str
    ts: AwareDatetime


class Picky(BaseModel):
    id: str
    ts: datetime

    @field_validator("id")
    @classmethod
    def _no_bang(cls, value: str) -> str:
        if "!" in value:
            raise RuntimeError("not a ValueError")
        return value


class MaybeTime(BaseModel):
    id: str
    ts: datetime | None = None


def payments_source(**options: Any) -> KafkaSource:
    return KafkaSource("payments", topic="payments", schema=Payment, timestamp_field="ts", **options)


PAYMENTS = payments_source()
READINGS = KafkaSource("readings", topic="readings", schema=Reading, timestamp_field="at")
POS = Position("payments", 3, 42)
NOW = 1_714_564_800_000


def payment(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "card_id": "c1",
        "merchant_id": "m1",
        "amount": 12.5,
        "currency": "EUR",
        "country": "DE",
        "ts": "2024-05-01T12:00:00.123Z",
    }
    event.update(changes)
    return {key: value for key, value in event.items() if value is not _DROP}


_DROP = object()


def decode(value: bytes | None, source: KafkaSource = PAYMENTS, **options: Any) -> SourceEvent | Rejected:
    return Decoder(source, **options).decode(value, arrival_time=NOW, position=POS)


def rejected(value: bytes | None, reason: str, source: KafkaSource = PAYMENTS, **options: Any) -> Rejected:
    result = decode(value, source, **options)
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result.detail
    assert (result.raw, result.position, result.arrival_time, result.view) == (value, POS, NOW, None)
    return result


# Happy path


def test_valid_event() -> None:
    raw = orjson.dumps(payment())
    event = decode(raw)
    assert isinstance(event, SourceEvent)
    assert event.fields == {
        "card_id": "c1",
        "merchant_id": "m1",
        "amount": 12.5,
        "currency": "EUR",
        "country": "DE",
        "ts": datetime(2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC),
    }
    assert event.event_time == datetime_to_ms(datetime(2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC))
    assert (event.arrival_time, event.position, event.raw) == (NOW, POS, raw)


@pytest.mark.parametrize(
    "written",
    ["2024-05-01T14:00:00.123+02:00", "2024-05-01T07:00:00.123-05:00", "2024-05-01T12:00:00.123456Z"],
)
def test_event_time_is_utc_epoch_ms_whatever_the_offset(written: str) -> None:
    event = decode(orjson.dumps(payment(ts=written)))
    assert isinstance(event, SourceEvent)
    assert event.event_time == 1_714_564_800_123
    assert event.event_time == datetime_to_ms(event.fields["ts"])


def test_event_time_before_1970_truncates_like_datetime_to_ms() -> None:
    when = datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=timezone(timedelta(hours=1)))
    event = decode(orjson.dumps(payment(ts=when.isoformat())))
    assert isinstance(event, SourceEvent)
    assert event.event_time == datetime_to_ms(when) == -3_600_001


def test_numeric_json_timestamp_for_a_datetime_field() -> None:
    event = decode(orjson.dumps(payment(ts=1_714_564_800_123)))
    assert isinstance(event, SourceEvent)
    assert event.event_time == 1_714_564_800_123


def test_fields_are_the_validated_model_values_without_a_copy() -> None:
    event = decode(orjson.dumps(payment(amount="7")))
    assert isinstance(event, SourceEvent)
    assert event.fields["amount"] == 7.0
    assert type(event.fields["amount"]) is float


def test_composite_key_and_int_timestamp() -> None:
    raw = b'{"site": "berlin|1", "sensor": 7, "value": 0.5, "at": 1714564800123}'
    event = decode(raw, READINGS)
    assert isinstance(event, SourceEvent)
    assert event.event_time == 1_714_564_800_123
    assert (event.fields["site"], event.fields["sensor"]) == ("berlin|1", 7)
    assert event.fields["value"] == 0.5
    assert event.fields["installed"] is None


def test_unknown_json_fields_follow_the_schema_config() -> None:
    event = decode(orjson.dumps(payment(extra="ignored")))
    assert isinstance(event, SourceEvent)
    assert "extra" not in event.fields


def test_batch_keeps_order_and_pairs_positions() -> None:
    decoder = Decoder(PAYMENTS)
    values = [orjson.dumps(payment(card_id="a")), b"nope", None, orjson.dumps(payment(card_id="b"))]
    positions = [Position("payments", 0, offset) for offset in range(4)]
    results = decoder.decode_batch(values, arrival_time=NOW, positions=positions)
    assert [type(result) for result in results] == [SourceEvent, Rejected, Rejected, SourceEvent]
    assert [result.position for result in results] == positions
    assert [r.fields["card_id"] for r in results if isinstance(r, SourceEvent)] == ["a", "b"]
    unpositioned = decoder.decode_batch(values, arrival_time=NOW)
    assert [result.position for result in unpositioned] == [None] * 4
    with pytest.raises(ValueError, match="4 values but 1 positions"):
        decoder.decode_batch(values, arrival_time=NOW, positions=positions[:1])


def test_custom_decoder() -> None:
    def csv(value: bytes) -> dict[str, str]:
        card, merchant, amount, currency, country, ts = value.decode().split(",")
        return {"card_id": card, "merchant_id": merchant, "amount": amount, "currency": currency,
                "country": country, "ts": ts}  # fmt: skip

    source = payments_source(decoder=csv)
    event = decode(b"c1,m1,3.5,EUR,DE,2024-05-01T12:00:00Z", source)
    assert isinstance(event, SourceEvent)
    assert event.fields["amount"] == 3.5
    assert event.event_time == 1_714_564_800_000


# Rejections, one reason at a time


@pytest.mark.parametrize("value", [None, b""])
def test_no_value_is_undecodable(value: bytes | None) -> None:
    assert "message has" in rejected(value, records.UNDECODABLE).detail


@pytest.mark.parametrize("value", [b"{", b"not json", b'{"card_id": "c1",}', b"\xff\xfe"])
def test_invalid_json_is_undecodable(value: bytes) -> None:
    assert rejected(value, records.UNDECODABLE).detail.startswith("not valid JSON: ")


def test_oversized_is_checked_before_parsing() -> None:
    source = payments_source(max_message_bytes=64)
    value = b"{" + b" " * 100  # also invalid JSON: the size check wins
    detail = rejected(value, records.OVERSIZED, source).detail
    assert detail == "message is 101 bytes, over the source's max_message_bytes 64"


@pytest.mark.parametrize(
    ("value", "got"), [(b"[1, 2]", "an array"), (b"3", "a number"), (b'"x"', "a string"), (b"null", "null")]
)
def test_json_that_is_not_an_object(value: bytes, got: str) -> None:
    detail = rejected(value, records.SCHEMA_VIOLATION).detail
    assert detail == f"expected a JSON object for Payment, got {got}"


@pytest.mark.parametrize("ts", [_DROP, None])
def test_missing_or_null_timestamp(ts: object) -> None:
    detail = rejected(orjson.dumps(payment(ts=ts)), records.MISSING_TIMESTAMP).detail
    assert "'ts'" in detail


def test_null_timestamp_in_an_optional_field() -> None:
    source = KafkaSource("maybe", topic="maybe", schema=MaybeTime, timestamp_field="ts")
    for value in (b'{"id": "a"}', b'{"id": "a", "ts": null}'):
        assert rejected(value, records.MISSING_TIMESTAMP, source).detail == "timestamp field 'ts' is null"


def test_missing_timestamp_outranks_other_problems_but_all_are_listed() -> None:
    detail = rejected(orjson.dumps(payment(ts=_DROP, amount="lots")), records.MISSING_TIMESTAMP).detail
    assert detail.startswith("Payment: timestamp field 'ts' is missing; field 'amount': ")


@pytest.mark.parametrize("ts", ["2024-05-01T12:00:00", "2024-05-01 12:00:00.5"])
def test_naive_timestamp(ts: str) -> None:
    detail = rejected(orjson.dumps(payment(ts=ts)), records.NAIVE_TIMESTAMP).detail
    assert detail.startswith("field 'ts' is 2024-05-01T12:00:00") and "no time zone" in detail


def test_naive_timestamp_with_an_aware_datetime_schema() -> None:
    source = KafkaSource("strict", topic="strict", schema=Strict, timestamp_field="ts")
    detail = rejected(b'{"id": "a", "ts": "2024-05-01T12:00:00"}', records.NAIVE_TIMESTAMP, source).detail
    assert "'ts'" in detail


def test_naive_datetime_in_another_field() -> None:
    raw = b'{"site": "s", "sensor": 1, "installed": "2020-01-01T00:00:00", "at": 1}'
    assert "'installed'" in rejected(raw, records.NAIVE_TIMESTAMP, READINGS).detail


def test_naive_datetime_from_a_custom_decoder() -> None:
    def python_objects(value: bytes) -> dict[str, Any]:
        return {**payment(), "ts": datetime(2024, 5, 1, 12)}

    source = payments_source(decoder=python_objects)
    rejected(b"anything", records.NAIVE_TIMESTAMP, source)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": "a lot"}, "amount"),
        ({"card_id": 5}, "card_id"),
        ({"currency": None}, "currency"),
        ({"merchant_id": _DROP}, "merchant_id"),
        ({"ts": "yesterday"}, "ts"),
    ],
)
def test_schema_violations_name_the_field(changes: dict[str, Any], field: str) -> None:
    detail = rejected(orjson.dumps(payment(**changes)), records.SCHEMA_VIOLATION).detail
    assert detail.startswith(f"Payment: field '{field}'")


def test_schema_violation_lists_every_field_up_to_a_limit() -> None:
    raw = b'{"card_id": 1, "merchant_id": 2, "amount": "x", "currency": 3, "country": 4, "ts": "?"}'
    detail = rejected(raw, records.SCHEMA_VIOLATION).detail
    for field in ("card_id", "merchant_id", "amount", "currency", "country"):
        assert f"'{field}'" in detail
    assert detail.endswith("; and 1 more")


def test_a_user_validator_raising_anything_is_a_schema_violation() -> None:
    source = KafkaSource("picky", topic="picky", schema=Picky, timestamp_field="ts")
    detail = rejected(b'{"id": "a!", "ts": "2024-05-01T12:00:00Z"}', records.SCHEMA_VIOLATION, source).detail
    assert detail == "Picky validation raised RuntimeError: not a ValueError"


@pytest.mark.parametrize("amount", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'"nan"'])
def test_non_finite_floats_are_bad_values(amount: bytes) -> None:
    raw = orjson.dumps(payment(amount=0)).replace(b'"amount":0', b'"amount":' + amount)
    assert "'amount'" in rejected(raw, records.BAD_VALUE).detail


def test_non_finite_optional_float_is_a_bad_value() -> None:
    rejected(b'{"site": "s", "sensor": 1, "value": NaN, "at": 1}', records.BAD_VALUE, READINGS)


def test_missing_join_key_when_the_decoder_knows_the_keys() -> None:
    raw = b'{"site": "s", "at": 1}'
    detail = rejected(raw, records.MISSING_KEY, READINGS, key_fields=["site", "sensor"]).detail
    assert "field 'sensor' is missing" in detail
    rejected(raw, records.SCHEMA_VIOLATION, READINGS)  # without key fields it is a plain violation


def test_custom_decoder_raising_is_undecodable() -> None:
    def broken(value: bytes) -> dict[str, Any]:
        raise ValueError("bad magic byte")

    source = payments_source(decoder=broken)
    detail = rejected(b"\x00\x01", records.UNDECODABLE, source).detail
    assert detail.endswith("broken raised ValueError: bad magic byte")


def test_custom_decoder_returning_a_non_object() -> None:
    source = payments_source(decoder=lambda value: [1, 2])
    rejected(b"x", records.SCHEMA_VIOLATION, source)


def test_event_times_beyond_max_future_are_rejected() -> None:
    guarded = payments_source(max_future="10m")
    assert isinstance(decode(orjson.dumps(payment()), guarded), SourceEvent)  # 123 ms ahead of arrival
    assert isinstance(decode(orjson.dumps(payment(ts="2024-05-01T12:10:00Z")), guarded), SourceEvent)
    far = rejected(orjson.dumps(payment(ts="2031-05-01T12:00:00Z")), records.FUTURE_TIMESTAMP, guarded)
    assert "over the source's max_future 600000 ms" in far.detail
    rejected(orjson.dumps(payment(ts="2024-05-01T12:10:00.001Z")), records.FUTURE_TIMESTAMP, guarded)
    assert isinstance(decode(orjson.dumps(payment(ts="2031-05-01T12:00:00Z"))), SourceEvent)  # no limit
