"""The offline layout read back by four independent readers, atomic writes, truncate, round trips.

pyarrow wrote the files; fastparquet (its own Parquet implementation), DuckDB and Polars must
read the same values and types, so the layout is not a pyarrow-only dialect.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import fastparquet
import polars
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import AwareDatetime, BaseModel

from streamfs.definitions import Aggregate, Entity, FeatureView, KafkaSource
from streamfs.durations import datetime_to_ms
from streamfs.engine import ViewEngine
from streamfs.offline import OfflineWriter, archived_events, scan_archive, scan_features
from streamfs.offline.layout import TIMESTAMP, VALUE_TIMESTAMP
from streamfs.records import Position, SourceEvent


class Order(BaseModel):
    user: str
    shop: int
    amount: float | None
    qty: int | None
    paid: bool | None
    note: str | None
    shipped: AwareDatetime | None
    ts: AwareDatetime


SOURCE = KafkaSource("orders", topic="orders", schema=Order, timestamp_field="ts", allowed_lateness="1h")
VIEW = FeatureView(
    "user_orders",
    entity=Entity("user_shop", join_keys=["user", "shop"]),
    source=SOURCE,
    features=[
        Aggregate(None, "count", window="1d", hop="1h"),
        Aggregate("amount", "sum", window="1d", hop="1h"),
        Aggregate("qty", "sum", window="1d", hop="1h"),
        Aggregate("amount", "mean", window="1d", hop="1h"),
        Aggregate("note", "count_distinct"),
        Aggregate("shipped", "max"),
        Aggregate("paid", "last"),
        Aggregate("note", "first"),
    ],
)
START = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)
EXPECTED_TYPES = {
    "user": pa.string(),
    "shop": pa.int64(),
    "event_time": TIMESTAMP,
    "arrival_time": TIMESTAMP,
    "topic": pa.string(),
    "partition": pa.int32(),
    "offset": pa.int64(),
    "count_1d": pa.int64(),
    "amount_sum_1d": pa.float64(),
    "qty_sum_1d": pa.int64(),
    "amount_mean_1d": pa.float64(),
    "note_count_distinct": pa.int64(),
    "shipped_max": VALUE_TIMESTAMP,
    "paid_last": pa.bool_(),
    "note_first": pa.string(),
}


def orders(partition: int, first_offset: int, n: int) -> list[SourceEvent]:
    """Events crossing midnight UTC (two date partitions), some late, with nulls and other zones."""
    events = []
    for i in range(n):
        offset = first_offset + i
        ts = START + timedelta(minutes=37 * i - (50 if i % 5 == 4 else 0))
        fields = {
            "user": f"u{i % 3}",
            "shop": i % 2,
            "amount": None if i % 4 == 3 else round(1.25 * i, 2),
            "qty": None if i % 6 == 5 else i,
            "paid": None if i % 7 == 6 else i % 2 == 0,
            "note": None if i % 3 == 2 else f"n{i % 4}",
            "shipped": None  # microseconds: stored exactly, as Redis and the engine hold them
            if i % 2
            else (ts + timedelta(microseconds=1_001 * i + 7)).astimezone(
                timezone(timedelta(hours=5, minutes=30))
            ),
            "ts": ts,
        }
        arrival = datetime_to_ms(START) + 60_000 * i
        events.append(SourceEvent(fields, datetime_to_ms(ts), arrival, Position("orders", partition, offset)))
    return events


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[SourceEvent], pa.Table]:
    events = orders(3, 120, 10) + orders(1, 0, 6)
    rows = ViewEngine(VIEW).process(events).rows
    writer = OfflineWriter(tmp_path, [VIEW])
    writer.add_events(SOURCE, events)
    writer.add_rows(rows)
    assert writer.pending == 2 * len(events)
    writer.flush()
    assert writer.pending == 0
    expected = pa.table(
        {
            "user": [r.key[0] for r in rows],
            "shop": [r.key[1] for r in rows],
            "offset": [r.position.offset for r in rows if r.position],
            **{name: [r.values[i] for r in rows] for i, name in enumerate(VIEW.feature_names)},
        }
    )
    return tmp_path, events, expected


def test_layout_and_names(written: tuple[Path, list[SourceEvent], pa.Table]) -> None:
    root, _, _ = written
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert names == [
        "archive/orders/date=2024-03-01/p0001-o000000000000-000000000004.parquet",
        "archive/orders/date=2024-03-01/p0003-o000000000120-000000000124.parquet",
        "archive/orders/date=2024-03-02/p0001-o000000000005-000000000005.parquet",
        "archive/orders/date=2024-03-02/p0003-o000000000125-000000000129.parquet",
        "features/user_orders/date=2024-03-01/p0001-o000000000000-000000000004.parquet",
        "features/user_orders/date=2024-03-01/p0003-o000000000120-000000000124.parquet",
        "features/user_orders/date=2024-03-02/p0001-o000000000005-000000000005.parquet",
        "features/user_orders/date=2024-03-02/p0003-o000000000125-000000000129.parquet",
    ]  # no temporary files left behind; offsets 4 and 124 are late events (00:28 - 50 min, on the 1st)
    schema = pq.read_schema(next(root.rglob("features/**/*.parquet")))
    assert {f.name: f.type for f in schema} == EXPECTED_TYPES
    assert schema.metadata[b"streamfs.view"] == b"user_orders"
    assert schema.metadata[b"streamfs.fingerprint"] == ViewEngine(VIEW).fingerprint().encode()


def sort(table: pa.Table) -> pa.Table:
    return table.sort_by([("offset", "ascending"), ("user", "ascending")])


def test_feature_log_read_by_four_readers(written: tuple[Path, list[SourceEvent], pa.Table]) -> None:
    root, _, expected = written
    expected = sort(expected)
    columns = expected.column_names
    by_pyarrow = sort(scan_features(root, VIEW).select(columns))
    assert by_pyarrow.to_pylist() == expected.to_pylist()
    assert {f.name: f.type for f in scan_features(root, VIEW).schema} == EXPECTED_TYPES

    glob = str(root / "features" / "user_orders" / "*" / "*.parquet")
    with duckdb.connect() as connection:
        query = f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true)"
        by_duckdb = connection.sql(query).to_arrow_table()
    assert sort(by_duckdb.select(columns)).to_pylist() == expected.to_pylist()
    assert pa.types.is_timestamp(by_duckdb.schema.field("shipped_max").type)  # DuckDB reads µs

    by_polars = polars.scan_parquet(glob, hive_partitioning=True).collect()
    assert str(by_polars.schema["shipped_max"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert sort(by_polars.select(columns).to_arrow()).to_pylist() == expected.to_pylist()

    files = sorted((root / "features").rglob("*.parquet"))
    by_fastparquet = fastparquet.ParquetFile(
        [str(f) for f in files], root=str(root / "features" / "user_orders")
    )
    frame = by_fastparquet.to_pandas()
    for column, unit in (("event_time", "ms"), ("arrival_time", "ms"), ("shipped_max", "us")):
        # fastparquet reads isAdjustedToUTC timestamps as naive datetime64 holding UTC wall time.
        assert str(frame[column].dtype) in (f"datetime64[{unit}]", f"datetime64[{unit}, UTC]")
        if frame[column].dt.tz is None:
            frame[column] = frame[column].dt.tz_localize("UTC")
    assert str(frame["qty_sum_1d"].dtype) == "int64"
    assert sorted(str(d)[:10] for d in frame["date"].unique()) == ["2024-03-01", "2024-03-02"]
    from_fast = pa.Table.from_pandas(frame[columns], preserve_index=False).cast(expected.schema)
    assert sort(from_fast).to_pylist() == expected.to_pylist()


def test_archive_round_trip_is_exact(written: tuple[Path, list[SourceEvent], pa.Table]) -> None:
    root, events, _ = written
    back = list(archived_events(root, SOURCE))
    ordered = sorted(
        events, key=lambda e: (e.position.partition, e.position.offset) if e.position else (0, 0)
    )
    assert [(e.event_time, e.arrival_time, e.position) for e in back] == [
        (e.event_time, e.arrival_time, e.position) for e in ordered
    ]
    assert [e.fields for e in back] == [e.fields for e in ordered]  # aware datetimes compare as instants
    assert all(e.fields["ts"].utcoffset() == timedelta(0) for e in back)
    assert [type(v) for e in back for v in e.fields.values()] == [
        type(v) for e in ordered for v in e.fields.values()
    ]
    # And other readers see the same archive: the count per date agrees.
    glob = str(root / "archive" / "orders" / "*" / "*.parquet")
    with duckdb.connect() as connection:
        query = f"SELECT date, count(*) FROM read_parquet('{glob}', hive_partitioning=true) GROUP BY 1"
        per_day = connection.sql(query).fetchall()
    assert sorted((str(d), n) for d, n in per_day) == [("2024-03-01", 10), ("2024-03-02", 6)]
    assert polars.scan_parquet(glob).select(polars.len()).collect().item() == 16


def test_scans_filter_by_time_partition_and_offsets(
    written: tuple[Path, list[SourceEvent], pa.Table],
) -> None:
    root, events, _ = written
    midnight = datetime(2024, 3, 2, tzinfo=UTC)
    late = scan_archive(root, SOURCE, start=midnight)
    assert late.num_rows == sum(e.event_time >= datetime_to_ms(midnight) for e in events)
    assert scan_archive(root, "orders", partition=3, offsets=(122, 125)).column("offset").to_pylist() == [
        122,
        123,
        124,
    ]
    early = scan_features(root, VIEW, end=midnight)
    assert early.num_rows == len(events) - late.num_rows


def test_truncate_removes_uncommitted_files_only(written: tuple[Path, list[SourceEvent], pa.Table]) -> None:
    root, _, _ = written
    writer = OfflineWriter(root, [VIEW])
    # A second flush of partition 3 past the commit at 130 (the worker then crashed).
    uncommitted = orders(3, 130, 4)
    writer.add_events(SOURCE, uncommitted)
    writer.add_rows(ViewEngine(VIEW).process(uncommitted).rows)
    writer.flush()
    stray = (
        root / "archive" / "orders" / "date=2024-03-01" / ".p0003-o000000000130-000000000133.parquet.abc.tmp"
    )
    stray.write_bytes(b"partial")
    before = {p for p in root.rglob("*.parquet")}

    assert writer.truncate("other-topic", 3, 0) == 0
    assert writer.truncate("orders", 3, 130) == len([p for p in before if "o000000000130" in p.name]) == 2
    after = {p for p in root.rglob("*.parquet")}
    assert {p for p in before - after} == {p for p in before if "o000000000130" in p.name}
    assert not stray.exists()
    assert scan_archive(root, SOURCE, partition=3).column("offset").to_pylist() == list(range(120, 130))
    assert writer.truncate("orders", 3, 130) == 0  # idempotent


def test_rewriting_the_same_offsets_replaces_files(written: tuple[Path, list[SourceEvent], pa.Table]) -> None:
    root, events, _ = written
    writer = OfflineWriter(root, [VIEW])
    writer.add_events(SOURCE, [e for e in events if e.position and e.position.partition == 3])
    writer.flush()
    assert scan_archive(root, SOURCE).num_rows == len(events)
    assert not list(root.rglob(".*"))


def test_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken)
    writer = OfflineWriter(tmp_path, [VIEW])
    writer.add_events(SOURCE, orders(0, 0, 3))
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    assert writer.pending == 3  # kept: the worker must not commit, and may retry
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_failed_sealed_write_is_put_back_ahead_of_newer_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes sealed buffers on a thread while it buffers more; when such a write
    fails, its rows go back ahead of the newer ones and the next flush writes both: the files
    equal those of one flush of everything, in offset order."""
    from streamfs.offline import writer as writer_module

    first, later = orders(0, 0, 6), orders(0, 6, 5)
    engine = ViewEngine(VIEW)
    first_rows, later_rows = engine.process(first).rows, engine.process(later).rows
    writer = OfflineWriter(tmp_path / "async", [VIEW])
    writer.add_events(SOURCE, first)
    writer.add_rows(first_rows)
    sealed = writer.seal()
    assert writer.pending == 0
    writer.add_events(SOURCE, later)  # buffered while the sealed batch is being written
    writer.add_rows(later_rows)

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(writer_module, "_write_by_day", broken)
    with pytest.raises(OSError, match="disk full"):
        sealed.write()
    monkeypatch.undo()
    writer.put_back(sealed)
    assert writer.pending == len(first) + len(later) + len(first_rows) + len(later_rows)
    assert writer.flush() == []

    straight = OfflineWriter(tmp_path / "straight", [VIEW])
    straight.add_events(SOURCE, first + later)
    straight.add_rows(first_rows + later_rows)
    straight.flush()
    for scan in (
        lambda root: scan_archive(root, SOURCE, partition=0),
        lambda root: scan_features(root, VIEW),
    ):
        got, want = scan(tmp_path / "async").sort_by("offset"), scan(tmp_path / "straight").sort_by("offset")
        assert got.column("offset").to_pylist() == list(range(len(first) + len(later)))
        assert got.drop_columns(["_version"] if "_version" in got.column_names else []).equals(
            want.drop_columns(["_version"] if "_version" in want.column_names else [])
        )


def test_one_flush_of_tables_and_rows_is_written_in_offset_order() -> None:
    """A flush joins the partition's tables (columnar batches) and rows (the per-message path)
    into one file: in offset order, sorted only when they interleave."""
    from streamfs.offline.writer import _in_offset_order

    def table(offsets: list[int]) -> pa.Table:
        return pa.table({"offset": pa.array(offsets, pa.int64()), "v": [f"r{o}" for o in offsets]})

    in_order = _in_offset_order([table([1, 2, 3]), table([4, 5])])
    assert in_order.column("offset").to_pylist() == [1, 2, 3, 4, 5]
    interleaved = _in_offset_order([table([1, 4, 5]), table([2, 3]), table([6])])
    assert interleaved.column("offset").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert interleaved.column("v").to_pylist() == ["r1", "r2", "r3", "r4", "r5", "r6"]
