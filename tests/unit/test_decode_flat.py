"""FlatScanner gives exactly the columns Arrow's JSON read and datetime cast give, or gives up.

The reference is BatchDecoder's Arrow path (`_read_checked`): its columns after the reader and
the datetime conversion. Whenever the scanner takes a batch, Arrow must take it too, with equal
columns: the same types, the same nulls, the same values bit for bit (a float's sign of zero
included). test_decode_batch.py holds the whole BatchDecoder, scanner included, to the
per-message path.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa
import pytest
from decode_schemas import Pay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from pipelines import payments
from streamfs.decode_batch import BatchDecoder, Refused
from streamfs.definitions import KafkaSource


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    card: str
    ts: datetime


SOURCE = KafkaSource("pays", topic="pays", schema=Pay, timestamp_field="ts")
STRICT = KafkaSource("strict", topic="strict", schema=Strict, timestamp_field="ts")


def decoder(source: KafkaSource = SOURCE) -> BatchDecoder:
    built = BatchDecoder.build(source)
    assert built is not None
    return built


def bits(column: pa.Array | pa.ChunkedArray) -> list[object]:
    """A column's values for an exact comparison: floats by their bit patterns (so -0.0 ≠ 0.0)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_floating(column.type):
        valid = np.asarray(column.is_valid())
        return [
            int(b) if ok else None
            for b, ok in zip(column.fill_null(0.0).to_numpy().view(np.int64), valid, strict=True)
        ]
    return column.to_pylist()


def scanned_or_none(values: list[bytes], source: KafkaSource = SOURCE) -> dict[str, pa.Array] | None:
    """The scanner's columns, held to Arrow's whenever it takes the batch (and the checks that
    follow, for a required value missing or null, to Arrow's refusal)."""
    batch = decoder(source)
    joined = b"\n".join(values)
    scanned = batch._scanner.scan(joined, len(values), source.max_message_bytes)
    if scanned is None:
        return None
    arrow = batch._read_checked(joined, len(values))
    checked = batch._checked(scanned, len(values))
    if isinstance(arrow, Refused):  # a required value missing or null: the same refusal
        assert checked == arrow, f"Arrow refuses otherwise than the scanner's checks: {values!r}"
        return scanned
    assert not isinstance(checked, Refused)
    assert list(scanned) == list(arrow)
    for name, column in scanned.items():
        assert column.type == arrow[name].type, name
        assert bits(column) == bits(arrow[name]), name
    return scanned


def number_text(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


short_decimals = st.builds(number_text, st.floats(-1e9, 1e9, allow_nan=False), st.integers(0, 6))
datetimes = st.builds(
    lambda d, sep, zone, places: (
        f"{d.year:04d}-{d:%m-%d}{sep}{d:%H:%M:%S}"
        + (f".{d.microsecond:06d}"[: places + 1] if places else "")
        + zone
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.sampled_from(["T", " "]),
    st.sampled_from(["Z", "+00:00"]),
    st.integers(0, 6),
)
ascii_text = st.text(  # (JSON escapes the quote and the backslash: the scanner leaves those to Arrow)
    st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'), max_size=10
)


def message(fields: dict[str, str], spaced: bool) -> bytes:
    """A JSON object from already-encoded values, in the dict's order."""
    separator = ", " if spaced else ","
    colon = ": " if spaced else ":"
    return ("{" + separator.join(f'"{k}"{colon}{v}' for k, v in fields.items()) + "}").encode()


plain_fields = st.builds(
    lambda card, amount, n, ok, note, at, ts: {
        "card": orjson.dumps(card).decode(),
        "amount": amount,
        "n": str(n),
        "ok": "true" if ok else "false",
        **({} if note is False else {"note": "null" if note is None else orjson.dumps(note).decode()}),
        **({} if at is False else {"at": "null" if at is None else f'"{at}"'}),
        "ts": f'"{ts}"',
    },
    ascii_text,
    short_decimals
    | st.integers(-(2**53), 2**53).map(str)
    | st.sampled_from(["-0.0", "0", "-0", "1e22", "5E-3"]),
    st.integers(-(10**17), 10**17),
    st.booleans(),
    st.just(False) | st.none() | ascii_text,
    st.just(False) | st.none() | datetimes,
    datetimes,
)
plain = st.builds(message, plain_fields, st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plain, min_size=1, max_size=10))
def test_plain_batches_are_scanned_as_arrow_reads_them(values: list[bytes]) -> None:
    assert scanned_or_none(values) is not None


anything = st.one_of(
    st.text(max_size=6).map(lambda s: orjson.dumps(s).decode()),
    st.floats().map(lambda x: orjson.dumps(x).decode()),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["true", "false", "null", "[]", "{}", "1.", ".5", "01", "+1", "1e", "-", '"\\u0041"', "NaN"]
    ),
    datetimes.map(lambda s: f'"{s}"'),
    st.sampled_from(['"2024-02-29T00:00:00Z"', '"2023-02-29T00:00:00Z"', '"2024-01-01T24:00:00Z"']),
    st.sampled_from(['"2024-01-01T00:00:60Z"', '"2024-01-01t00:00:00z"', '"0000-01-01T00:00:00Z"']),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["card", "amount", "n", "ok", "note", "at", "ts", "other"]), anything
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_any_batch_is_scanned_as_arrow_reads_it_or_left_to_arrow(
    objects: list[dict[str, str]], spaced: bool
) -> None:
    scanned_or_none([message(fields, spaced) for fields in objects])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plain_fields, min_size=1, max_size=3), st.data(), st.booleans())
def test_a_batch_with_any_value_in_a_plain_message_is_scanned_as_arrow_reads_it_or_left_to_arrow(
    objects: list[dict[str, str]], data: st.DataObject, spaced: bool
) -> None:
    target = data.draw(st.integers(0, len(objects) - 1))
    field = data.draw(st.sampled_from(["card", "amount", "n", "ok", "note", "at", "ts", "other"]))
    objects[target][field] = data.draw(anything)
    scanned_or_none([message(fields, spaced) for fields in objects])


GOOD = '"card": "c1", "amount": 12.5, "n": 3, "ok": true, "ts": "2024-03-01T10:00:00.123Z"'


@pytest.mark.parametrize(
    "text",
    [
        "{" + GOOD + ', "card": "c2"}',  # a field twice
        "{" + GOOD + ', "other": [1]}',  # a nested value
        "{" + GOOD + ', "other": "\\n"}',  # an escape
        "{" + GOOD.replace("c1", "c\u00e9") + "}",  # not ASCII
        "{" + GOOD.replace("12.5", "12345678901234567890") + "}",  # 20 digits
        "{" + GOOD.replace("12.5", "1e23") + "}",  # beyond the exact powers of ten
        "{" + GOOD.replace("12.5", "0.1e-22") + "}",
        "{" + GOOD.replace('"n": 3', '"n": 3.0') + "}",
        "{" + GOOD.replace('"n": 3', '"n": 1e2') + "}",
        "{" + GOOD.replace("10:00:00.123Z", "10:00:00.1234567Z") + "}",
        "{" + GOOD.replace("10:00:00.123Z", "10:00:60Z") + "}",
        "{" + GOOD.replace("03-01", "02-30") + "}",
        "{" + GOOD + "} {}",
        "{" + GOOD + "}x",
        "[" + GOOD + "]",
    ],
)
def test_what_the_scanner_leaves_to_arrow(text: str) -> None:
    batch = decoder()
    values = [("{" + GOOD + "}").encode(), text.encode()]
    assert batch._scanner.scan(b"\n".join(values), 2, 1_000) is None


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_empty_and_blank_messages_are_left_to_arrow(text: str) -> None:
    values = [("{" + GOOD + "}").encode(), text.encode()]
    assert decoder()._scanner.scan(b"\n".join(values), 2, 1_000) is None


def test_a_message_over_the_size_limit_is_left_to_arrow() -> None:
    message = (" {" + GOOD + "} ").encode()
    scanner = decoder()._scanner
    assert scanner.scan(message + b"\n" + message, 2, len(message)) is not None
    assert scanner.scan(message + b"\n" + message, 2, len(message) - 1) is None


def test_values_taken_exactly() -> None:
    values = [
        b'{"card":"a","amount":-0.0,"n":-0,"ok":false,"ts":"1970-01-01T00:00:00Z"}',
        b'{ "card" : "" , "amount" : 1e22 , "n" : 999999999999999999 , "ok" : true , '
        b'"ts" : "2024-02-29 23:59:59.5+00:00" }',
        b'{"ts":"1969-12-31T23:59:59.999999Z","ok":true,"n":-7,"amount":123.456e-5,"card":"z","note":null,"at":null}',
    ]
    columns = scanned_or_none(values)
    assert columns is not None
    assert bits(columns["amount"])[0] == int(np.array([-0.0]).view(np.int64)[0])
    assert columns["amount"].to_pylist()[1:] == [1e22, 123.456e-5]
    assert columns["n"].to_pylist() == [0, 999999999999999999, -7]
    assert columns["ts"].to_pylist() == [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    assert columns["note"].null_count == 3 and columns["at"].null_count == 3


def test_extra_fields_are_skipped_or_left_to_arrow_as_the_schema_says() -> None:
    with_extra = [b'{"card":"c","other":1.5,"more":"x","ts":"2024-01-01T00:00:00Z"}']
    assert scanned_or_none(with_extra) is not None
    assert scanned_or_none(with_extra, STRICT) is None
    assert scanned_or_none([b'{"card":"c","ts":"2024-01-01T00:00:00Z"}'], STRICT) is not None


def test_the_payments_pipeline_messages_are_scanned() -> None:
    """Not vacuous where it matters: the demo pipeline's stream takes the scanner."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    values = [
        orjson.dumps(e) for e in payments.generate(2_000, keys=100, start=start, seed=3, late_fraction=0.01)
    ]
    assert scanned_or_none(values, payments.payments) is not None
