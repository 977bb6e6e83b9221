"""The offline commands through `streamfs.cli.main`: training-set and backfill on a small archive
written with the worker's OfflineWriter (no services needed), argument parsing, and errors."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from pipelines.payments import card_activity, payments
from streamfs.cli import _time_arg, build_parser, main
from streamfs.engine import ViewEngine
from streamfs.offline import OfflineWriter, scan_features
from streamfs.progress import Progress
from streamfs.records import Position, SourceEvent
from streamfs.training import training_set

T0 = 1_767_268_800_000  # 2026-01-01T12:00Z
CARDS = ["c1", "c2", "c3"]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An archive of 300 payments over 3 partitions; the environment points streamfs at it."""
    data = tmp_path / "data"
    writer = OfflineWriter(data, [card_activity])
    offsets = [0, 0, 0]
    events = []
    for i in range(300):
        card = CARDS[i % 3]
        partition = i % 3
        t = T0 + i * 20_000
        fields = {
            "card_id": card,
            "merchant_id": f"m{i % 7}",
            "amount": float(i % 50) + 0.25,
            "currency": "EUR",
            "country": "FR",
            "ts": datetime.fromtimestamp(t / 1000, tz=UTC),
        }
        events.append(SourceEvent(fields, t, t + 5, Position(payments.topic, partition, offsets[partition])))
        offsets[partition] += 1
    writer.add_events(payments, events)
    writer.flush()
    monkeypatch.setenv("STREAMFS_DATA_DIR", str(data))
    monkeypatch.setenv("STREAMFS_STATE_DIR", str(tmp_path / "state"))  # no dev services: no Kafka, no Redis
    monkeypatch.delenv("STREAMFS_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("STREAMFS_REDIS_URL", raising=False)
    return data


def test_training_set_command_end_to_end(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "card_id,timestamp,label\n"
        "c1,2026-01-01T12:30:00Z,1\n"
        "c2,2026-01-01T13:00:00+01:00,0\n"  # 12:00Z: before c2's first event (12:00:20Z)
        "zz,2026-01-01T13:00:00Z,0\n"
    )
    out = tmp_path / "out" / "train.parquet"
    refs = "card_activity:count_10m,card_activity:amount_sum_1h"
    common = ["--labels", str(labels), "--pipeline", "pipelines.payments"]
    code = main(["training-set", *common, "--features", refs, "--out", str(out)])
    assert code == 0
    assert "wrote 3 rows with 2 feature column(s)" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column_names == ["card_id", "timestamp", "label", "count_10m", "amount_sum_1h"]
    expected = training_set(
        labels,
        ["card_activity:count_10m", "card_activity:amount_sum_1h"],
        root=root,
        pipeline="pipelines.payments",
    )
    assert table.to_pylist() == expected.to_pylist()
    rows = table.to_pylist()
    assert rows[1]["count_10m"] == 0 and rows[2]["count_10m"] is None
    # c1 pays every 60 s from 12:00:00Z; a 10-minute window hopping by 5 at 12:30 starts at 12:25,
    # and the 12:30 payment arrived 5 ms after it: as served at 12:30, 12:25 to 12:29 count.
    assert rows[0]["count_10m"] == 5

    # In event time 12:30 counts; --exclusive reads at 12:29:59.999, whose window starts at 12:20.
    for flags, count in (([], 6), (["--exclusive"], 10)):
        csv = tmp_path / "event_time.csv"
        features = ["--features", "card_activity:count_10m", "--out", str(csv), "--mode", "event_time"]
        assert main(["training-set", *common, *features, *flags]) == 0
        assert pa_csv.read_csv(csv).column("count_10m").to_pylist()[0] == count


def test_training_set_errors_exit_2(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("card_id,timestamp\nc1,2026-01-01T12:30:00Z\n")
    args = ["training-set", "--labels", str(labels), "--pipeline", "pipelines.payments"]
    assert main([*args, "--features", "nope:x", "--out", str(tmp_path / "o.parquet")]) == 2
    assert "unknown feature view 'nope'" in capsys.readouterr().err
    assert main([*args, "--features", "card_activity", "--out", str(tmp_path / "o.json")]) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err


def test_backfill_command_from_the_archive(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No worker committed anything here, so every partition is replayed to the archive's end."""
    assert main(["backfill", "pipelines.payments:card_activity", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "backfilled card_activity from the archive: 300 events, 300 rows" in out
    assert "[0]<100, [1]<100, [2]<100" in out
    engine = ViewEngine(card_activity)
    table = scan_features(root, "card_activity")
    assert table.num_rows == 300
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["partition"], first["offset"], first["card_id"]) == (0, 0, "c1")
    assert engine.fingerprint() == (table.schema.metadata or {})[b"streamfs.fingerprint"].decode()

    assert (
        main(
            [
                "backfill",
                "pipelines.payments",
                "--views",
                "card_activity",
                "--from",
                "2026-01-01T12:50:00Z",
                "--to",
                "2026-01-01T13:00:00Z",
                "--quiet",
            ]
        )
        == 0
    )
    assert "300 events, 30 rows" in capsys.readouterr().out
    assert scan_features(root, "card_activity").num_rows == 300

    assert main(["backfill", "pipelines.payments", "--views", "card_activity,nope"]) == 2
    assert "unknown feature view(s) 'nope'" in capsys.readouterr().err
    assert main(["backfill", "pipelines.payments", "--views", "card_activity", "--to", "2020-01-02"]) == 2
    err = capsys.readouterr().err
    assert "has no events between the start and 2020-01-02T00:00:00Z (it covers 2026-01-01" in err
    assert main(["backfill", "pipelines.payments", "--views", "merchant_activity"]) == 2
    assert "no archived events of source 'payments_by_merchant'" in capsys.readouterr().err


def test_parser_and_time_arguments() -> None:
    args = build_parser().parse_args(
        [
            "backfill",
            "p",
            "--views",
            "a,b",
            "--from",
            "2026-01-01",
            "--to",
            "1767312000000",
            "--source",
            "kafka",
        ]
    )
    assert (args.views, args.start, args.end, args.source, args.online) == (
        "a,b",
        T0 - 43_200_000,
        1_767_312_000_000,
        "kafka",
        False,
    )
    args = build_parser().parse_args(["verify", "p"])
    assert (args.sample, args.threshold) == (1_000, 1.0)
    assert _time_arg("2026-01-01T13:00:00+01:00") == T0
    for bad in ("2026-01-01T12:00:00", "yesterday"):
        with pytest.raises(argparse.ArgumentTypeError):
            _time_arg(bad)


def test_progress_bar_draws_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    quiet = io.StringIO()
    Progress(100, stream=quiet).update(50)
    assert quiet.getvalue() == ""
    tty = Tty()
    bar = Progress(100, label="backfill", stream=tty, interval_s=0)
    bar.update(50)
    bar.close()
    text = tty.getvalue()
    assert text.startswith("\rbackfill [############------------]  50.0% 50/100 events") and "ETA" in text
    assert text.endswith("\n")
    silent = Tty()
    Progress(100, stream=silent, quiet=True).update(10)
    assert silent.getvalue() == ""
