"""The online store against a real Redis: what FeatureClient reads is exactly engine.serve.

Serving states come from a real ViewEngine; reads happen at many as_of values (at max_time,
inside windows, after windows empty, after the ttl) and must equal `engine.serve(key, as_of)`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from fixtures.keyspace import delete_prefix
from fixtures.topics import unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from streamfs.definitions import AGGREGATIONS, Aggregate, AggregationName, Entity, FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.keys import encode_key
from streamfs.online import FeatureClient, OnlineWriter, UnknownFeatureError
from streamfs.online.layout import ViewMeta, entry_key
from streamfs.records import Position, SourceEvent


class Ev(BaseModel):
    k: str
    u: int = 0
    x: float | None = None
    n: int | None = None
    s: str | None = None
    ts: int


SOURCE = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts")
CARD = Entity("card", join_keys=["k"])
PAIR = Entity("pair", join_keys=["k", "u"])


def card_view(ttl: int | None = None, name: str = "card_activity", entity: Entity = CARD) -> FeatureView:
    return FeatureView(
        name,
        entity=entity,
        source=SOURCE,
        features=[
            Aggregate("x", "sum", window=10, hop=5, name="x_sum_10"),
            Aggregate(None, "count", window=30, hop=10, name="count_30"),
            Aggregate("x", "max", window=10, hop=5, name="x_max_10"),
            Aggregate("s", "count_distinct", window=30, hop=10, name="s_distinct_30"),
            Aggregate("s", "last", name="s_last"),
            Aggregate("n", "mean", window=12, hop=4, name="n_mean_12"),
        ],
        ttl=ttl,
    )


def events(rows: list[tuple[str, int, float | None, str | None]], u: int = 0) -> list[SourceEvent]:
    return [
        SourceEvent({"k": k, "u": u, "x": x, "n": i % 3, "s": s, "ts": ts}, ts, 0, Position("t", 0, i))
        for i, (k, ts, x, s) in enumerate(rows)
    ]


STREAM = events(
    [
        ("a", 100, 1.5, "m1"),
        ("a", 103, 2.0, "m2"),
        ("b", 104, None, None),
        ("a", 111, 0.25, "m1"),
        ("a", 109, 4.0, "m3"),
        ("b", 125, 7.0, "m2"),
        ("a", 140, 1.0, None),
    ]
)


@pytest.fixture
def namespace(redis_prefix: str, redis_client: redis.Redis) -> str:
    """A namespace under the test's prefix, so redis_client's teardown deletes every key."""
    return redis_prefix + "sfs"


def store(
    client: redis.Redis, view: FeatureView, stream: list[SourceEvent], namespace: str, *, persist: bool = True
) -> ViewEngine:
    """Write the stream's serving states. With `persist` the entries' Redis expiry is removed:
    these views' ttls are tens of ms of event time, which the writer turns into a Redis expiry
    of as many ms of wall time, and a slow machine's reads would find the entries gone (the
    reader applies the ttl itself, against as_of; the expiry test below checks the PX)."""
    engine = ViewEngine(view)
    engine.process(stream)
    writer = OnlineWriter(client, [engine], namespace=namespace)
    assert writer.write(engine, engine.take_dirty()) == engine.key_count()
    if persist and view.ttl is not None:
        for name in client.scan_iter(match=f"{namespace}:*", count=1000):
            client.persist(name)
    return engine


def sweep(max_times: list[int]) -> list[int]:
    """as_of values around every interesting point: before, at, inside and past the windows and ttl."""
    points = {0}
    for max_time in max_times:
        points.update(
            max_time + delta for delta in (-5, -1, 0, 1, 2, 4, 5, 9, 10, 11, 19, 20, 29, 30, 31, 60, 500)
        )
    return sorted(points)


def numeric_card_view(ttl: int | None = None) -> FeatureView:
    """card_view without the features of the string field: its entries are packed (binary)."""
    view = card_view(ttl)
    return view.model_copy(update={"features": tuple(f for f in view.features if f.field != "s")})


@pytest.mark.parametrize("make_view", [card_view, numeric_card_view], ids=["json", "packed"])
def test_reads_equal_engine_serve_at_every_as_of(
    redis_client: redis.Redis, namespace: str, make_view: Any
) -> None:
    view = make_view(ttl=40)
    engine = store(redis_client, view, STREAM, namespace)
    raw = redis_client.get(entry_key(namespace, "card", "a", "card_activity"))
    assert raw is not None and raw[:1] == (b"[" if make_view is card_view else b"\xb5")
    client = FeatureClient(redis_client, [view], namespace=namespace)
    keys = ["a", "b", "missing"]
    for as_of in sweep([140, 125]):
        result = client.get_features("card_activity", keys, as_of=as_of)
        assert result.names == tuple(view.feature_names)
        expected = [engine.serve((k,), as_of) or dict.fromkeys(view.feature_names) for k in keys]
        assert result.to_dicts() == expected
        typed = [[(type(v), v) for v in row.values()] for row in expected]
        assert [[(type(v), v) for v in row] for row in result.rows] == typed


def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        FeatureClient(redis.Redis.from_url(redis_url, decode_responses=True))


def test_missing_entities_read_as_none(redis_client: redis.Redis, namespace: str) -> None:
    view = card_view()
    store(redis_client, view, STREAM, namespace)
    result = FeatureClient(redis_client, [view], namespace=namespace).get_features(
        view, ["zz", "a"], as_of=140
    )
    assert result.rows[0] == (None,) * len(view.features)
    assert result.rows[1][1] == 1  # count_30 of "a" at 140: events in [120, 140]
    assert result.freshness["card_activity"][0] is None
    fresh = result.freshness["card_activity"][1]
    assert fresh is not None and (fresh.event_time, fresh.events, fresh.expired) == (
        140,
        4,
        False,
    )  # 109 came too late


def test_ttl_makes_entities_absent_and_redis_expires_them(redis_client: redis.Redis, namespace: str) -> None:
    view = card_view(ttl=40)
    store(redis_client, view, STREAM, namespace, persist=False)
    pttl = redis_client.pttl(entry_key(namespace, "card", "a", "card_activity"))
    assert 0 < pttl <= 40 + 30  # ttl + the longest window
    redis_client.persist(entry_key(namespace, "card", "a", "card_activity"))  # (for the reads below)
    client = FeatureClient(redis_client, [view], namespace=namespace)
    assert client.get_features(view, ["a"], as_of=180).rows[0][1] == 0  # windows empty, ttl not passed
    result = client.get_features(view, ["a"], as_of=181)
    assert result.rows == [(None,) * len(view.features)]
    fresh = result.freshness["card_activity"][0]
    assert fresh is not None and fresh.expired


def test_without_ttl_entries_never_expire(redis_client: redis.Redis, namespace: str) -> None:
    store(redis_client, card_view(), STREAM, namespace)
    assert redis_client.pttl(entry_key(namespace, "card", "a", "card_activity")) == -1


def test_composite_keys(redis_client: redis.Redis, namespace: str) -> None:
    view = card_view(name="pair_activity", entity=PAIR)
    stream = events([("a|b", 100, 1.0, "m"), ("a|b", 101, 2.0, "m")], u=7) + events(
        [("a|b", 102, 5.0, "q")], u=8
    )
    engine = store(redis_client, view, stream, namespace)
    client = FeatureClient(redis_client, [view], namespace=namespace)
    keys = [("a|b", 7), ("a|b", 8), ["a|b", 9]]
    result = client.get_features("pair_activity:x_sum_10", keys, as_of=104)
    assert result.columns == {"x_sum_10": [3.0, 5.0, None]}
    assert result.keys == (("a|b", 7), ("a|b", 8), ("a|b", 9))
    assert result.rows[0] == [engine.serve(("a|b", 7), 104)["x_sum_10"]]  # type: ignore[index]
    with pytest.raises(ValueError, match="has 1 parts, the entity has 2 join keys"):
        client.get_features(view, ["a|b"])


def test_feature_refs_subsets_order_and_mixed_views(redis_client: redis.Redis, namespace: str) -> None:
    first = card_view()
    second = card_view(name="card_slow", ttl=1000)
    e1 = store(redis_client, first, STREAM, namespace)
    e2 = store(redis_client, second, STREAM[:3], namespace)
    client = FeatureClient(redis_client, namespace=namespace)  # metadata from Redis
    refs = ["card_activity:s_last", "card_slow:count_30", "card_activity:x_sum_10"]
    result = client.get_features(refs, ["a", "b"], as_of=141)
    assert result.names == ("s_last", "count_30", "x_sum_10")
    for key, row in zip(["a", "b"], result.to_dicts(), strict=True):
        one, two = e1.serve((key,), 141), e2.serve((key,), 141)
        assert one is not None and two is not None
        assert row == {"s_last": one["s_last"], "count_30": two["count_30"], "x_sum_10": one["x_sum_10"]}
    assert set(result.freshness) == {"card_activity", "card_slow"}

    both = client.get_features([first, "card_slow:count_30"], ["a"], as_of=141)
    assert both.names == (*[n if n != "count_30" else "card_activity:count_30" for n in first.feature_names],
                          "card_slow:count_30")  # fmt: skip
    assert client.plan([first, "card_slow:count_30"]) is client.plan([first, "card_slow:count_30"])


def test_clear_errors(redis_client: redis.Redis, namespace: str) -> None:
    view = card_view()
    store(redis_client, view, STREAM, namespace)
    client = FeatureClient(redis_client, namespace=namespace)
    with pytest.raises(UnknownFeatureError, match=r"unknown feature view 'nope'.*card_activity"):
        client.get_features("nope", ["a"])
    with pytest.raises(UnknownFeatureError, match="has no feature 'nope'"):
        client.get_features("card_activity:nope", ["a"])
    with pytest.raises(ValueError, match="naive datetime"):
        client.get_features(view, ["a"], as_of=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="requested twice"):
        client.get_features([view, "card_activity:s_last"], ["a"])
    with pytest.raises(ValueError, match="share join keys"):
        client.get_features([view, card_view(name="pairs", entity=PAIR)], ["a"])
    with pytest.raises(ValueError, match="2 parts"):
        client.get_features(view, [("a", 1)])


def test_as_of_accepts_aware_datetimes_and_defaults_to_now(redis_client: redis.Redis, namespace: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    now_ms = int(now.timestamp()) * 1000
    stream = events([("a", now_ms - 3_600_000, 2.0, "m"), ("a", now_ms - 1000, 3.0, "n")])
    view = FeatureView(
        "hourly",
        entity=CARD,
        source=SOURCE,
        features=[Aggregate("x", "sum", window="1h", hop="1m"), Aggregate(None, "count", window="1h")],
    )
    engine = store(redis_client, view, stream, namespace)
    client = FeatureClient(redis_client, [view], namespace=namespace)
    paris = (now + timedelta(milliseconds=1, microseconds=999)).astimezone(timezone(timedelta(hours=2)))
    assert client.get_features(view, ["a"], as_of=paris).as_of == now_ms + 1
    assert client.get_features(view, ["a"], as_of=paris).to_dicts() == [engine.serve(("a",), now_ms + 1)]
    before = int(datetime.now(UTC).timestamp() * 1000)
    result = client.get_features(view, ["a"])
    after = int(datetime.now(UTC).timestamp() * 1000)
    assert before <= result.as_of <= after
    assert result.to_dicts() == [engine.serve(("a",), result.as_of)]
    later = client.get_features(view, ["a"], as_of=now + timedelta(hours=2)).to_dicts()
    assert later == [{"x_sum_1h": 0, "count_1h": 0}]  # decays with no new event


def test_rewrites_are_idempotent(redis_client: redis.Redis, namespace: str) -> None:
    view = card_view(ttl=40)
    engine = ViewEngine(view)
    engine.process(STREAM)
    writer = OnlineWriter(redis_client, [engine], namespace=namespace, clock=lambda: 42)
    name = entry_key(namespace, "card", "a", "card_activity")
    writer.write(engine, [("a",)])
    first = redis_client.get(name)
    assert writer.write(engine, [("a",), ("a",), ("never-seen",)]) == 2
    assert redis_client.get(name) == first
    writer.flush()


def test_entries_of_another_definition_read_as_absent(redis_client: redis.Redis, namespace: str) -> None:
    store(redis_client, card_view(), STREAM, namespace)
    changed = FeatureView(
        "card_activity", entity=CARD, source=SOURCE, features=[Aggregate("x", "sum", name="x_sum")]
    )
    result = FeatureClient(redis_client, [changed], namespace=namespace).get_features(
        changed, ["a"], as_of=140
    )
    assert result.rows == [(None,)]


def test_exotic_values_round_trip(redis_client: redis.Redis, namespace: str) -> None:
    view = FeatureView(
        "big",
        entity=CARD,
        source=SOURCE,
        features=[Aggregate("n", "sum", name="n_sum"), Aggregate("s", "last")],
    )
    stream = [
        SourceEvent({"k": "a", "n": 2**63, "s": "x", "ts": 1}, 1, 0),
        SourceEvent({"k": "a", "n": 2**63, "s": "y", "ts": 2}, 2, 0),
    ]
    store(redis_client, view, stream, namespace)
    result = FeatureClient(redis_client, [view], namespace=namespace).get_features("big", ["a"], as_of=5)
    assert result.to_dicts() == [{"n_sum": 2**64, "s_last": "y"}]


def test_connection_errors_propagate_to_the_worker() -> None:
    view = card_view()
    engine = ViewEngine(view)
    engine.process(STREAM)
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    with pytest.raises(redis.ConnectionError):
        OnlineWriter(dead, [engine]).write(engine, engine.take_dirty())
    with pytest.raises(redis.ConnectionError):
        FeatureClient(dead, [view]).get_features(view, ["a"])


def test_an_error_reply_fails_the_write_and_leaves_no_reply_unread(
    redis_client: redis.Redis, namespace: str
) -> None:
    """The writer packs its SETs itself: an error reply (Redis out of memory) must fail the
    write loudly (the worker then commits nothing), and the pooled connection must not hand the
    unread replies of that write to the next command."""
    view = card_view(ttl=10_000)
    engine = ViewEngine(view)
    engine.process(STREAM)
    writer = OnlineWriter(redis_client, [engine], namespace=namespace)
    writer.register()
    saved = redis_client.config_get("maxmemory*")
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            writer.write(engine, engine.keys())
    finally:
        redis_client.config_set("maxmemory", saved["maxmemory"])
        redis_client.config_set("maxmemory-policy", saved["maxmemory-policy"])
    assert redis_client.ping() is True
    assert redis_client.get(f"{namespace}:no-such-key") is None
    assert writer.write(engine, engine.keys()) == 2
    name = entry_key(namespace, "card", "a", "card_activity")
    expire = ViewMeta.from_engine(engine).expire_ms
    assert expire is not None and expire - 1_000 < redis_client.pttl(name) <= expire  # the PX
    read = FeatureClient(redis_client, [view], namespace=namespace).get_features(view, ["a", "b"], as_of=140)
    assert read.to_dicts() == [engine.serve(("a",), 140), engine.serve(("b",), 140)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- random streams

FUNCTIONS: list[AggregationName] = list(AGGREGATIONS)  # type: ignore[arg-type]
WINDOWS = [(None, None), (10, 10), (12, 4), (30, 5)]
FIELD_FOR: dict[str, list[str | None]] = {
    "count": ["x", "s", None],
    "count_distinct": ["s", "n"],
    "min": ["x", "s", "n"],
    "max": ["x", "s", "n"],
    "last": ["x", "s"],
    "first": ["x", "n"],
}


@st.composite
def random_views(draw: st.DrawFn) -> FeatureView:
    functions: list[AggregationName] = draw(st.lists(st.sampled_from(FUNCTIONS), min_size=1, max_size=6))
    features = []
    for i, function in enumerate(functions):
        field = draw(st.sampled_from(FIELD_FOR.get(function, ["x", "n"])))
        length, hop = draw(st.sampled_from(WINDOWS))
        features.append(Aggregate(field, function, window=length, hop=hop, name=f"f{i}"))
    lateness = draw(st.sampled_from([0, 3, 8]))
    source = KafkaSource("src", topic="t", schema=Ev, timestamp_field="ts", allowed_lateness=lateness)
    ttl = draw(st.sampled_from([None, 25]))
    return FeatureView("v", entity=CARD, source=source, features=features, ttl=ttl)


@st.composite
def random_streams(draw: st.DrawFn) -> list[SourceEvent]:
    time = draw(st.integers(-40, 40))
    out = []
    for offset in range(draw(st.integers(1, 40))):
        time += draw(st.sampled_from([0, 1, 2, 3, 5, 40, -2, -6]))
        fields: dict[str, Any] = {
            "k": draw(st.sampled_from(["a", "b", "c"])),
            "x": draw(st.one_of(st.none(), st.sampled_from([0.1, 0.2, 1e16, -3.5, 1 / 3]))),
            "n": draw(st.one_of(st.none(), st.integers(-5, 5))),
            "s": draw(st.one_of(st.none(), st.sampled_from(["m1", "m2"]))),
            "ts": time,
        }
        out.append(SourceEvent(fields, time, 0, Position("t", 0, offset)))
    return out


@pytest.fixture(scope="module")
def shared_redis(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    """One client and key prefix for all hypothesis examples (function fixtures are not reset per example)."""
    client = redis.Redis.from_url(redis_url)
    prefix = unique_name("prop") + ":"
    yield client, prefix
    delete_prefix(client, prefix)
    client.close()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_views(), random_streams())
def test_random_streams_read_back_exactly(
    shared_redis: tuple[redis.Redis, str], view: FeatureView, stream: list[SourceEvent]
) -> None:
    connection, prefix = shared_redis
    namespace = prefix + uuid.uuid4().hex
    engine = store(connection, view, stream, namespace)
    client = FeatureClient(connection, [view], namespace=namespace)
    keys = ["a", "b", "c", "d"]
    max_times = [s.max_time for k in keys if (s := engine.serving_state((k,))) is not None]
    for as_of in sweep(max_times):
        expected = [engine.serve((k,), as_of) or dict.fromkeys(view.feature_names) for k in keys]
        assert client.get_features("v", keys, as_of=as_of).to_dicts() == expected, as_of


def test_keys_are_hash_tagged_per_entity(redis_client: redis.Redis, namespace: str) -> None:
    store(redis_client, card_view(), STREAM, namespace)
    store(redis_client, card_view(name="card_slow"), STREAM, namespace)
    names = sorted(k.decode() for k in redis_client.scan_iter(match=f"{namespace}:*"))
    assert names == [
        f"{namespace}:views",
        *sorted(
            f"{namespace}:{{card:{encode_key((k,))}}}:{v}"
            for k in "ab"
            for v in ("card_activity", "card_slow")
        ),
    ]


def test_set_replies_are_read_from_the_hiredis_reader_in_bulk(
    redis_client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not one redis-py read_response per SET (~1.5 µs of Python each): the writer takes the
    replies straight from the hiredis reader. A redis-py upgrade that moves its internals
    falls back to the slow path; this says so."""
    engine = ViewEngine(card_view(ttl=10_000))
    engine.process(STREAM)
    writer = OnlineWriter(redis_client, [engine], namespace=namespace)
    writer.register()

    def one_by_one(*args: object, **kwargs: object) -> object:
        raise AssertionError("SET replies read one by one")

    monkeypatch.setattr(redis.connection.Connection, "read_response", one_by_one)
    assert writer.write(engine, engine.keys()) == 2
    monkeypatch.undo()
    assert redis_client.get(entry_key(namespace, "card", "a", "card_activity")) is not None
