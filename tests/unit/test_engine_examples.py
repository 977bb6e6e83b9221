"""The engine's contract, one small example per rule (docs/semantics.md states the same rules).

Times are plain epoch milliseconds; MIN and HOUR keep them readable. Every event gets an arrival
time and an offset in arrival order, so "later arrival" means "later in the list".
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from pydantic import BaseModel

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.engine.snapshot import from_json, to_json
from streamfs.errors import StateError
from streamfs.records import BAD_VALUE, TOO_LATE, TRANSFORM_FAILED, Position, SourceEvent
from streamfs.windows import WindowSpec

MIN = 60_000
HOUR = 60 * MIN


class Payment(BaseModel):
    card: str
    amount: float | None = None
    items: int | None = None
    merchant: str | None = None
    paid_at: datetime | None = None
    day: date | None = None
    fee: Decimal | None = None
    blob: bytes | None = None
    ts: int


def view(
    *features: Aggregate,
    lateness: int = 0,
    ttl: int | None = None,
    transform: Any = None,
    transform_fields: dict[str, type] | None = None,
) -> FeatureView:
    source = KafkaSource(
        "payments", topic="payments", schema=Payment, timestamp_field="ts", allowed_lateness=lateness
    )
    return FeatureView(
        "cards",
        entity=Entity("card", join_keys=["card"]),
        source=source,
        features=features,
        ttl=ttl,
        transform=transform,
        transform_fields=transform_fields or {},
    )


class Stream:
    """Builds events in arrival order: stream.at(10 * MIN, amount=5.0)."""

    def __init__(self) -> None:
        self.offset = 0

    def at(self, time: int, card: str = "c1", partition: int = 0, **fields: Any) -> SourceEvent:
        self.offset += 1
        return SourceEvent(
            {"card": card, "ts": time, **fields},
            time,
            1_000_000 + self.offset,
            Position("payments", partition, self.offset),
        )


def run(engine: ViewEngine, events: list[SourceEvent]) -> list[tuple[Any, ...]]:
    """Process one batch; the offline rows' values in order."""
    result = engine.process(events)
    assert not result.rejected, result.rejected
    return [row.values for row in result.rows]


def steps_value(engine: ViewEngine, key: tuple[Any, ...], t: int) -> dict[str, Any]:
    """What a reader of the serving steps sees at t (t ≥ the key's newest event)."""
    state = engine.serving_state(key)
    assert state is not None
    values: dict[str, Any] = {}
    for steps, names in zip(state.groups, engine.group_features, strict=True):
        index = max(i for i, start in enumerate(steps.starts) if start <= t)
        values.update(zip(names, steps.values[index], strict=True))
    return values


# ----------------------------------------------------------------------------- windows


def test_window_start_formula() -> None:
    sliding = WindowSpec(HOUR, 10 * MIN)
    assert sliding.start(65 * MIN) == 6 * 10 * MIN + 10 * MIN - HOUR == 10 * MIN
    assert WindowSpec(HOUR, HOUR).start(90 * MIN) == HOUR  # tumbling: the current hour
    assert WindowSpec(None, None).start(90 * MIN) is None  # lifetime: no start


def test_sliding_window_covers_start_to_t() -> None:
    engine = ViewEngine(view(Aggregate(None, "count", window="1h", hop="10m")))
    s = Stream()
    run(engine, [s.at(9 * MIN), s.at(10 * MIN), s.at(30 * MIN), s.at(65 * MIN)])
    # At 65 min the window is [10 min, 65 min]: the event at 9 min has left it.
    assert engine.evaluate(("c1",), 65 * MIN) == {"count_1h": 3}
    # At 69:59.999 it is still [10 min, t]; at 70 min it becomes [20 min, 70 min].
    assert engine.evaluate(("c1",), 70 * MIN - 1) == {"count_1h": 3}
    assert engine.evaluate(("c1",), 70 * MIN) == {"count_1h": 2}


def test_tumbling_window_is_the_current_hop() -> None:
    engine = ViewEngine(view(Aggregate(None, "count", window="1h")))
    s = Stream()
    rows = run(engine, [s.at(50 * MIN), s.at(59 * MIN), s.at(60 * MIN), s.at(90 * MIN)])
    assert rows == [(1,), (2,), (1,), (2,)]  # the count restarts at each full hour


def test_lifetime_window_counts_everything_so_far() -> None:
    engine = ViewEngine(view(Aggregate("amount", "sum")))
    s = Stream()
    rows = run(engine, [s.at(0, amount=1.0), s.at(1000 * HOUR, amount=2.0), s.at(5000 * HOUR, amount=3.5)])
    assert rows == [(1.0,), (3.0,), (6.5,)]
    assert engine.evaluate(("c1",), 10**9 * HOUR) == {"amount_sum": 6.5}


def test_windows_decay_with_time_when_read() -> None:
    engine = ViewEngine(view(Aggregate(None, "count", window="1h", hop="5m")))
    s = Stream()
    run(engine, [s.at(0), s.at(1 * MIN)])
    assert engine.evaluate(("c1",), 30 * MIN) == {"count_1h": 2}
    assert engine.evaluate(("c1",), 2 * HOUR) == {"count_1h": 0}  # no new event needed
    assert engine.serve(("c1",), 2 * HOUR) == {"count_1h": 0}
    assert steps_value(engine, ("c1",), 30 * MIN) == {"count_1h": 2}
    assert steps_value(engine, ("c1",), 2 * HOUR) == {"count_1h": 0}


def test_window_boundaries_are_inclusive() -> None:
    engine = ViewEngine(view(Aggregate(None, "count", window="1h", hop="10m")))
    s = Stream()
    at_start, at_t = s.at(10 * MIN), s.at(65 * MIN)
    assert WindowSpec(HOUR, 10 * MIN).start(65 * MIN) == 10 * MIN
    rows = run(engine, [at_start, at_t])
    assert rows[-1] == (2,)  # the event exactly at start(t) counts, and so does the event at t itself


# ----------------------------------------------------------------------------- values


def test_nulls_are_ignored() -> None:
    engine = ViewEngine(
        view(
            Aggregate("amount", "count"),
            Aggregate(None, "count", name="events"),
            Aggregate("amount", "last"),
            Aggregate("amount", "first"),
        )
    )
    s = Stream()
    rows = run(engine, [s.at(1), s.at(2, amount=5.0), s.at(3, amount=7.0), s.at(4)])
    # count(amount) counts non-null amounts; count() counts events; last/first skip the nulls.
    assert rows[-1] == (2, 4, 7.0, 5.0)
    assert rows[0] == (0, 1, None, None)


def test_empty_window_values() -> None:
    features = [
        Aggregate("amount", function, window="1h", name=function)  # type: ignore[arg-type]
        for function in ("count", "sum", "mean", "min", "max", "last", "first", "stddev", "variance")
    ]
    features.append(Aggregate("merchant", "count_distinct", window="1h", name="distinct"))
    engine = ViewEngine(view(*features))
    expected = {
        "count": 0,
        "sum": 0,
        "distinct": 0,
        "mean": None,
        "min": None,
        "max": None,
        "last": None,
        "first": None,
        "stddev": None,
        "variance": None,
    }
    assert engine.empty_values() == expected
    s = Stream()
    run(engine, [s.at(0, amount=2.0, merchant="m1")])
    assert engine.evaluate(("c1",), 3 * HOUR) == expected


def test_sum_of_ints_stays_int_and_sum_of_floats_is_exact() -> None:
    engine = ViewEngine(
        view(Aggregate("items", "sum"), Aggregate("amount", "sum"), Aggregate("amount", "mean"))
    )
    s = Stream()
    rows = run(
        engine, [s.at(1, items=2, amount=0.1), s.at(2, items=3, amount=0.2), s.at(3, items=4, amount=0.3)]
    )
    assert rows[-1][0] == 9 and type(rows[-1][0]) is int
    exact = Fraction(0.1) + Fraction(0.2) + Fraction(0.3)
    assert rows[-1][1] == float(exact) == 0.6  # naive float addition gives 0.6000000000000001
    assert rows[-1][2] == float(exact / 3)


def test_last_ties_go_to_the_later_arrival_and_first_to_the_earlier() -> None:
    engine = ViewEngine(view(Aggregate("merchant", "last"), Aggregate("merchant", "first")))
    s = Stream()
    rows = run(engine, [s.at(5, merchant="early"), s.at(5, merchant="late")])
    assert rows[-1] == ("late", "early")


def test_last_and_first_order_by_event_time_not_arrival() -> None:
    engine = ViewEngine(view(Aggregate("merchant", "last"), Aggregate("merchant", "first"), lateness=10))
    s = Stream()
    run(engine, [s.at(5, merchant="b"), s.at(8, merchant="c"), s.at(2, merchant="a")])
    assert engine.evaluate(("c1",), 8) == {"merchant_last": "c", "merchant_first": "a"}


def test_sample_and_population_spread() -> None:
    engine = ViewEngine(
        view(
            Aggregate("amount", "variance"),
            Aggregate("amount", "stddev"),
            Aggregate("amount", "variance_pop"),
            Aggregate("amount", "stddev_pop"),
        )
    )
    s = Stream()
    rows = run(engine, [s.at(1, amount=1.0), s.at(2, amount=2.0), s.at(3, amount=3.0), s.at(4, amount=4.0)])
    assert rows[0] == (None, None, 0.0, 0.0)  # one value: no sample spread; population spread 0
    variance = float(Fraction(5, 3))  # Σ(x - 2.5)² = 5, over n - 1 = 3
    assert rows[-1] == (variance, math.sqrt(variance), 1.25, math.sqrt(1.25))


def test_count_distinct_is_exact() -> None:
    engine = ViewEngine(view(Aggregate("merchant", "count_distinct", window="1h", hop="10m")))
    s = Stream()
    merchants = ["m1", "m2", "m1", "m3", "m2", "m1"]
    rows = run(engine, [s.at(i * MIN, merchant=m) for i, m in enumerate(merchants)])
    assert [r[0] for r in rows] == [1, 2, 2, 3, 3, 3]
    run(engine, [s.at(75 * MIN, merchant="m1")])  # the window is now [20 min, 75 min]
    assert engine.evaluate(("c1",), 75 * MIN) == {"merchant_count_distinct_1h": 1}


def test_ttl_makes_the_key_absent() -> None:
    engine = ViewEngine(view(Aggregate(None, "count"), ttl="1h"))
    s = Stream()
    run(engine, [s.at(0)])
    assert engine.evaluate(("c1",), HOUR) == {"count": 1}
    assert engine.evaluate(("c1",), HOUR + 1) is None
    assert engine.serve(("c1",), HOUR + 1) is None
    assert engine.evaluate(("unknown",), 0) is None


# ----------------------------------------------------------------------------- lateness


def test_late_events_within_allowed_lateness_are_accepted() -> None:
    engine = ViewEngine(view(Aggregate(None, "count"), lateness=5 * MIN))
    s = Stream()
    result = engine.process([s.at(20 * MIN), s.at(15 * MIN)])  # exactly max - lateness: accepted
    assert not result.rejected
    assert engine.watermark(("c1",)) == 15 * MIN


def test_too_late_events_are_rejected_and_change_nothing() -> None:
    engine = ViewEngine(
        view(Aggregate(None, "count"), Aggregate(None, "count", window="1h", name="c1h"), lateness=5 * MIN)
    )
    s = Stream()
    run(engine, [s.at(20 * MIN)])
    before = (engine.evaluate(("c1",), 20 * MIN), engine.serving_state(("c1",)), engine.snapshot(0))
    late = s.at(15 * MIN - 1)
    result = engine.process([late])
    assert result.rows == []
    [rejected] = result.rejected
    assert rejected.reason == TOO_LATE
    assert rejected.position == late.position and rejected.view == "cards"
    assert "allowed lateness 300000 ms" in rejected.detail and str(20 * MIN) in rejected.detail
    assert (engine.evaluate(("c1",), 20 * MIN), engine.serving_state(("c1",)), engine.snapshot(0)) == before


def test_out_of_order_event_sees_only_events_up_to_its_own_time() -> None:
    engine = ViewEngine(view(Aggregate(None, "count", window="1h", hop="10m"), lateness=30 * MIN))
    s = Stream()
    rows = run(engine, [s.at(10 * MIN), s.at(40 * MIN), s.at(25 * MIN)])
    assert rows == [(1,), (2,), (2,)]  # the row at 25 min counts 10 and 25, not 40
    assert engine.evaluate(("c1",), 40 * MIN) == {"count_1h": 3}  # and it landed in its tile


def test_lateness_is_per_key() -> None:
    engine = ViewEngine(view(Aggregate(None, "count")))
    s = Stream()
    result = engine.process([s.at(HOUR, card="c1"), s.at(0, card="c2")])
    assert not result.rejected


# ----------------------------------------------------------------------------- bad input


def test_bad_values_are_rejected_one_by_one_and_the_batch_goes_on() -> None:
    def to_text(fields: dict[str, Any]) -> dict[str, Any]:
        if fields["ts"] == 3:
            fields["amount"] = "12.5"
        return fields

    engine = ViewEngine(view(Aggregate("amount", "sum"), transform=to_text))
    s = Stream()
    result = engine.process(
        [
            s.at(1, amount=1.0),
            s.at(2, amount=math.nan),
            s.at(3, amount=1.0),
            s.at(4, amount=math.inf),
            s.at(5, amount=2.0),
        ]
    )
    assert [r.reason for r in result.rejected] == [BAD_VALUE] * 3
    assert "'amount'" in result.rejected[0].detail and "nan" in result.rejected[0].detail
    assert "str" in result.rejected[1].detail
    assert [(r.event_time, r.values) for r in result.rows] == [(1, (1.0,)), (5, (3.0,))]


def test_naive_datetimes_are_rejected() -> None:
    def strip_zone(fields: dict[str, Any]) -> dict[str, Any]:
        if fields["ts"] == 2:
            fields["paid_at"] = fields["paid_at"].replace(tzinfo=None)
        return fields

    engine = ViewEngine(view(Aggregate("paid_at", "max"), Aggregate("paid_at", "last"), transform=strip_zone))
    s = Stream()
    paid = datetime(2024, 5, 1, tzinfo=UTC)
    result = engine.process([s.at(t, paid_at=paid) for t in (1, 2, 3)])
    [rejected] = result.rejected
    assert rejected.reason == BAD_VALUE and "time zone" in rejected.detail
    assert [r.values for r in result.rows] == [(paid, paid), (paid, paid)]


def test_wrong_type_for_min_max_is_rejected() -> None:
    def number(fields: dict[str, Any]) -> dict[str, Any]:
        if fields["ts"] == 2:
            fields["merchant"] = 7
        return fields

    engine = ViewEngine(view(Aggregate("merchant", "max"), transform=number))
    s = Stream()
    result = engine.process([s.at(t, merchant="m") for t in (1, 2, 3)])
    assert [r.reason for r in result.rejected] == [BAD_VALUE]
    assert len(result.rows) == 2


def test_transform_outputs_of_another_type_are_rejected_one_by_one() -> None:
    """What a transform returns is checked against the schema and transform_fields: a value the
    sinks could not hold (a UUID, a float subclass such as numpy's) rejects its event only."""

    class Float(float):
        pass

    outputs: dict[int, Any] = {1: 1.5, 2: uuid.UUID(int=1), 3: Float(2.5), 4: 3, 5: 5.0, 6: None, 7: 4.0}

    def derive(fields: dict[str, Any]) -> dict[str, Any]:
        return {**fields, "rate": outputs[fields["ts"]], "merchant": 7 if fields["ts"] == 5 else "m"}

    features = [Aggregate("rate", "max"), Aggregate("merchant", "count_distinct")]
    engine = ViewEngine(view(*features, transform=derive, transform_fields={"rate": float}))
    s = Stream()  # offsets 1, 2, ... as the times
    result = engine.process([s.at(t) for t in outputs])
    assert [(r.position.offset, r.reason) for r in result.rejected if r.position] == [
        (2, BAD_VALUE),
        (3, BAD_VALUE),
        (5, BAD_VALUE),
    ]
    assert "field 'rate' must be float or int, got UUID" in result.rejected[0].detail
    assert "got Float" in result.rejected[1].detail
    assert "field 'merchant' must be str, got int" in result.rejected[2].detail
    assert [(r.event_time, r.values) for r in result.rows] == [
        (1, (1.5, 1)),
        (4, (3, 1)),
        (6, (3, 1)),
        (7, (4.0, 1)),
    ]


def test_transform_errors_are_rejected_and_none_filters() -> None:
    def transform(fields: dict[str, Any]) -> dict[str, Any] | None:
        if fields.get("amount") is None:
            return None
        if fields["amount"] < 0:
            raise ValueError("negative amount")
        return fields

    engine = ViewEngine(view(Aggregate("amount", "sum"), transform=transform))
    s = Stream()
    result = engine.process([s.at(1, amount=2.0), s.at(2), s.at(3, amount=-1.0), s.at(4, amount=3.0)])
    assert result.filtered == 1
    [rejected] = result.rejected
    assert rejected.reason == TRANSFORM_FAILED and rejected.detail == "ValueError: negative amount"
    assert [r.values for r in result.rows] == [(2.0,), (5.0,)]


# ----------------------------------------------------------------------------- determinism and state


def _features() -> list[Aggregate]:
    return [
        Aggregate("amount", "sum", window="1h", hop="10m"),
        Aggregate("amount", "mean", window="1h", hop="10m"),
        Aggregate("merchant", "count_distinct", window="1h", hop="10m"),
        Aggregate("merchant", "last", window="10m"),
        Aggregate("amount", "stddev"),
    ]


def _events() -> list[SourceEvent]:
    s = Stream()
    times = [0, 3, 14, 9, 33, 33, 61, 58, 95, 130, 131, 124]
    return [
        s.at(t * MIN, card=f"c{i % 3}", amount=0.1 * (i + 1), merchant=f"m{i % 4}")
        for i, t in enumerate(times)
    ]


def _rows(engine: ViewEngine, batches: list[list[SourceEvent]]) -> list[tuple[Any, ...]]:
    out = []
    for batch in batches:
        result = engine.process(batch)
        assert not result.rejected
        out += [(r.key, r.event_time, r.values) for r in result.rows]
    return out


def test_rows_do_not_depend_on_batch_boundaries() -> None:
    definition = view(*_features(), lateness=20 * MIN)
    events = _events()
    whole = _rows(ViewEngine(definition), [events])
    for cut in range(len(events) + 1):
        assert _rows(ViewEngine(definition), [events[:cut], events[cut:]]) == whole
    assert _rows(ViewEngine(definition), [[e] for e in events]) == whole


def test_rows_survive_snapshot_json_restore() -> None:
    definition = view(*_features(), lateness=20 * MIN)
    events = _events()
    whole = _rows(ViewEngine(definition), [events])
    for cut in range(len(events) + 1):
        first = ViewEngine(definition)
        rows = _rows(first, [events[:cut]])
        second = ViewEngine(definition)
        second.restore(from_json(to_json(first.snapshot(0))))
        assert rows + _rows(second, [events[cut:]]) == whole


def test_snapshots_carry_datetimes_dates_decimals_and_bytes_through_json() -> None:
    """Such values sit in tiles (min, max, last), count_distinct maps and buffered inputs; JSON
    has no type for them, so snapshots tag them (a checkpoint once failed with a TypeError)."""
    features = [
        Aggregate("paid_at", "max", window="1h", hop="10m"),
        Aggregate("paid_at", "count_distinct", window="1h", hop="10m"),
        Aggregate("day", "last"),
        Aggregate("day", "count_distinct", window="1h", hop="10m"),
        Aggregate("fee", "min", window="1h", hop="10m"),
        Aggregate("fee", "first"),
        Aggregate("blob", "last"),
        Aggregate("blob", "count_distinct", window="1h", hop="10m"),
    ]
    definition = view(*features, lateness=20 * MIN)
    stream = Stream()
    events = [
        stream.at(
            minute * MIN,
            paid_at=datetime(2026, 1, 1, minute % 3, tzinfo=UTC),
            day=date(2026, 1, 1 + minute % 2),
            fee=Decimal(f"0.{minute:02d}0"),
            blob=bytes([minute % 4, 255]),
        )
        for minute in (5, 17, 12, 30, 44, 40, 61, 75)
    ]
    whole = _rows(ViewEngine(definition), [events])
    assert whole[-1][2] == (
        datetime(2026, 1, 1, 2, tzinfo=UTC), 3, date(2026, 1, 2), 2,
        Decimal("0.300"), Decimal("0.050"), b"\x03\xff", 4,
    )  # fmt: skip
    for cut in range(len(events) + 1):
        first = ViewEngine(definition)
        rows = _rows(first, [events[:cut]])
        snapshot = from_json(to_json(first.snapshot(0)))
        second = ViewEngine(definition)
        second.restore(snapshot)
        assert second.snapshot(0) == first.snapshot(0)
        assert rows + _rows(second, [events[cut:]]) == whole


def test_snapshot_of_a_different_definition_is_refused() -> None:
    old = ViewEngine(view(Aggregate("amount", "sum", window="1h")))
    new = ViewEngine(view(Aggregate("amount", "sum", window="2h")))
    with pytest.raises(StateError, match="different definition"):
        new.restore(old.snapshot(0))


def test_snapshot_of_a_sum_whose_field_changed_from_int_to_float_is_refused() -> None:
    """Tiles hold an int sum as an int and a float sum as a binary fraction: not interchangeable."""

    def with_count(fields: dict[str, Any]) -> dict[str, Any]:
        return {**fields, "n": 1}

    def as_int(kind: type) -> FeatureView:
        return view(Aggregate("n", "sum", window="1h"), transform=with_count, transform_fields={"n": kind})

    old = ViewEngine(as_int(int))
    run(old, [Stream().at(1)])
    with pytest.raises(StateError, match="different definition"):
        ViewEngine(as_int(float)).restore(old.snapshot(0))


def test_state_is_per_partition() -> None:
    engine = ViewEngine(view(Aggregate(None, "count")))
    s = Stream()
    run(engine, [s.at(1, card="c1", partition=0), s.at(2, card="c2", partition=1)])
    assert engine.partitions == [0, 1]
    engine.drop(0)
    assert engine.evaluate(("c1",), 5) is None
    assert engine.evaluate(("c2",), 5) == {"count": 1}
    assert engine.keys() == [("c2",)] and engine.partitions == [1]


def test_rows_after_restore_ignore_tiles_the_newest_window_no_longer_reaches() -> None:
    """A tumbling window with lateness longer than its hop: the settled tiles still hold the
    previous hops (expiry follows the watermark), but the newest event's window must not."""
    tumbling = [Aggregate("amount", "sum", window="10m"), Aggregate(None, "count", window="10m")]
    definition = view(*tumbling, lateness=3 * MIN)
    stream = Stream()
    # 9m waits in the buffer past the watermark and settles late, refilling the expired tile [0, 10m).
    events = [stream.at(minute * MIN, amount=1.0) for minute in (9, 13, 14, 15, 16)]
    whole = _rows(ViewEngine(definition), [events])
    assert whole[-1][2] == (4.0, 4)  # the window at 16m is [10m, 16m]
    for cut in range(1, len(events)):
        first = ViewEngine(definition)
        rows = _rows(first, [events[:cut]])
        second = ViewEngine(definition)
        second.restore(from_json(to_json(first.snapshot(0))))
        assert rows + _rows(second, [events[cut:]]) == whole
        replayed = ViewEngine(definition)
        replayed.process(events[:cut], rows=False)
        assert rows + _rows(replayed, [events[cut:]]) == whole
