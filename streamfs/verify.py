"""`streamfs verify`: online/offline consistency, measured against the engine replaying the archive.

The archive is replayed through fresh engines (one pass per source, partition by partition, as
a backfill does), and two things are compared with it:

* **online** — for a random sample of entity keys, what the online store serves (FeatureClient)
  at two read times, the key's newest event time and now, against `ViewEngine.serve` at the
  same time. An entry with more events than the archive holds (the worker is ahead of its last
  flush) is counted as *ahead* and not compared; an entry Redis expired (TTL) that the engine
  also reads as expired at now is *expired*. Entries of keys the archive never saw are *extra*.
* **offline** — every feature-log row the worker wrote, against the row the replay produces at
  the same (partition, offset): *missing* rows, *extra* rows, and per feature the rows whose
  value differs (key and event time are compared too). Rows at offsets past the archive's end
  (flushed, not yet archived) are left out.

Per feature, match rate = matching / (compared + missing + extra). The report lists each
check's rates, missing/extra counts and the largest differences (numeric ones by size, the
rest after), naming view, key, feature and position; `ok` is every rate ≥ the threshold.
Values are compared exactly: streamfs promises bit-for-bit equality (docs/semantics.md).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis

from streamfs.backfill.plan import select_views
from streamfs.definitions import FeatureView
from streamfs.durations import ms_to_datetime
from streamfs.engine import Key, ViewEngine
from streamfs.errors import OfflineError
from streamfs.keys import decode_key, encode_key
from streamfs.offline import archive_files, archived_events, layout
from streamfs.online import FeatureClient
from streamfs.online.layout import key_prefix, key_suffix
from streamfs.registry import Pipeline, load_pipeline
from streamfs.settings import Settings

__all__ = ["CheckReport", "Difference", "VerifyReport", "verify"]

SHOWN = 10
KEPT = 100_000
"""Differences kept per check for the report (all are counted)."""


@dataclass(frozen=True)
class Difference:
    check: str
    view: str
    key: Key
    feature: str
    got: Any
    expected: Any
    where: str

    @property
    def size(self) -> float | None:
        a, b = self.got, self.expected
        numeric = (int, float)
        if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool | type(None)):
            return abs(float(a) - float(b))
        return None


@dataclass
class CheckReport:
    """One check of one view: per-feature matches, missing/extra items, the differences seen."""

    check: str
    view: str
    features: list[str]
    unit: str
    compared: int = 0
    missing: int = 0
    extra: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    matched: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)

    def rate(self, feature: str) -> float:
        total = self.compared + self.missing + self.extra
        return 1.0 if total == 0 else self.matched.get(feature, 0) / total

    def add(self, key: Key, got: Sequence[Any], expected: Sequence[Any], where: str) -> None:
        self.compared += 1
        for name, a, b in zip(self.features, got, expected, strict=True):
            if a == b:
                self.matched[name] = self.matched.get(name, 0) + 1
            else:
                self.note(Difference(self.check, self.view, key, name, a, b, where))

    def note(self, difference: Difference) -> None:
        if len(self.differences) < KEPT:
            self.differences.append(difference)


@dataclass
class VerifyReport:
    checks: list[CheckReport]
    threshold: float
    seconds: float = 0.0
    events: int = 0

    @property
    def lowest(self) -> float:
        return min((c.rate(f) for c in self.checks for f in c.features), default=1.0)

    @property
    def ok(self) -> bool:
        return self.lowest >= self.threshold

    def render(self) -> str:
        lines = [f"replayed {self.events:,} archived events in {self.seconds:.1f} s"]
        differences: list[Difference] = []
        for check in self.checks:
            head = f"{check.check} {check.view}: {check.compared:,} {check.unit} compared"
            head += f", missing {check.missing:,}, extra {check.extra:,}"
            head += "".join(f", {why} {n:,}" for why, n in sorted(check.skipped.items()))
            lines.append(head)
            width = max(len(f) for f in check.features)
            for feature in check.features:
                total = check.compared + check.missing + check.extra
                matched = check.matched.get(feature, 0)
                rate = _percent(check.rate(feature))
                lines.append(f"  {feature:<{width}}  {matched:>9,} / {total:<9,} {rate:>8}")
            differences += check.differences
        if differences:
            ranked = sorted(differences, key=lambda d: (d.size is None, -(d.size or 0.0)))
            lines.append(f"largest differences ({len(differences):,} in all):")
            for d in ranked[:SHOWN]:
                size = "" if d.size is None else f"  |diff| {d.size:.6g}"
                lines.append(
                    f"  {d.check} {d.view}:{d.feature} key={encode_key(d.key)} {d.where}: "
                    f"got {d.got!r}, expected {d.expected!r}{size}"
                )
        verdict = "OK" if self.ok else "FAILED"
        lowest, threshold = _percent(self.lowest), _percent(self.threshold)
        lines.append(f"{verdict}: lowest match rate {lowest} (threshold {threshold})")
        return "\n".join(lines)


def verify(
    pipeline: Pipeline | str,
    settings: Settings | None = None,
    *,
    views: Sequence[str] | None = None,
    sample: int = 1_000,
    threshold: float = 1.0,
    now: int | None = None,
    seed: int = 0,
) -> VerifyReport:
    """Compare the online store and the feature log with a replay of the archive (module docs)."""
    settings = settings or Settings.load()
    if isinstance(pipeline, str):
        pipeline = load_pipeline(pipeline)
    if not 0.0 <= threshold <= 1.0:
        raise OfflineError(f"--threshold is a fraction between 0 and 1, not {threshold}")
    if sample < 0:
        raise OfflineError("--sample must not be negative")
    chosen = select_views(pipeline, views)
    root = settings.data_dir
    for view in chosen:
        if not archive_files(root, view.source):
            raise OfflineError(
                f"no archived events of source {view.source.name!r} (view {view.name!r}) under "
                f"{layout.archive_dir(root, view.source.name)}: nothing to verify against"
            )
    client = redis.Redis.from_url(settings.require_redis(), socket_timeout=30)
    started = time.perf_counter()
    report = VerifyReport([], threshold)
    try:
        for topic in dict.fromkeys(v.source.topic for v in chosen):
            group = [v for v in chosen if v.source.topic == topic]
            engines, events, offline = _replay(root, group)
            report.events += events
            read_at = now if now is not None else time.time_ns() // 1_000_000
            for view in group:
                report.checks += _online(
                    client, settings.online_namespace, engines[view.name], sample, seed, read_at
                )
            report.checks += offline
    finally:
        client.close()
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------------- offline


def _replay(root: Path, views: list[FeatureView]) -> tuple[dict[str, ViewEngine], int, list[CheckReport]]:
    """Replay one source's archive partition by partition; compare each partition's rows as it ends."""
    source = views[0].source
    engines = {view.name: ViewEngine(view) for view in views}
    checks = {view.name: CheckReport("offline", view.name, view.feature_names, "rows") for view in views}
    files = archive_files(root, source)
    ends: dict[int, int] = {}
    for data_file in files:
        ends[data_file.partition] = max(ends.get(data_file.partition, 0), data_file.last_offset + 1)
    count = 0
    for partition in sorted(ends):
        expected: dict[str, dict[int, tuple[Key, int, tuple[Any, ...]]]] = {name: {} for name in engines}
        batch = []
        for event in archived_events(root, source, partition=partition):
            batch.append(event)
            if len(batch) >= 10_000:
                count += _feed(engines, batch, expected)
                batch = []
        count += _feed(engines, batch, expected)
        for view in views:
            _compare_rows(root, view, partition, ends[partition], expected[view.name], checks[view.name])
    return engines, count, list(checks.values())


def _feed(engines: dict[str, ViewEngine], batch: list[Any], out: dict[str, dict[int, Any]]) -> int:
    for name, engine in engines.items():
        rows = out[name]
        for row in engine.process(batch).rows:
            assert row.position is not None
            rows[row.position.offset] = (row.key, row.event_time, row.values)
    return len(batch)


def _compare_rows(
    root: Path,
    view: FeatureView,
    partition: int,
    end: int,
    expected: dict[int, tuple[Key, int, tuple[Any, ...]]],
    check: CheckReport,
) -> None:
    files = [f for f in layout.list_files(layout.features_dir(root, view.name)) if f.partition == partition]
    tables = [pq.read_table(f.path) for f in files if f.first_offset < end]
    written: dict[int, dict[str, Any]] = {}
    if tables:
        table = pa.concat_tables(tables, promote_options="default")
        for row in table.to_pylist():
            if row["offset"] < end:
                written[row["offset"]] = row
    keys = view.entity.join_keys
    names = view.feature_names
    for offset, (key, event_time, values) in expected.items():
        row = written.pop(offset, None)
        where = f"p{partition}@{offset} ({_iso(event_time)})"
        if row is None:
            check.missing += 1
            check.note(Difference("offline", view.name, key, "*", None, "row", where))
            continue
        got_key = tuple(row[k] for k in keys)
        got_time = int(row["event_time"].timestamp() * 1000)
        if got_key != key or got_time != event_time:
            check.compared += 1  # the row is there but describes another event: every feature differs
            check.note(
                Difference(
                    "offline", view.name, key, "key/event_time", (got_key, got_time), (key, event_time), where
                )
            )
            continue
        check.add(key, [row[name] for name in names], values, where)
    for offset, row in written.items():
        check.extra += 1
        key = tuple(row[k] for k in keys)
        check.note(Difference("offline", view.name, key, "*", "row", None, f"p{partition}@{offset}"))


# ---------------------------------------------------------------------- online


def _online(
    client: redis.Redis, namespace: str, engine: ViewEngine, sample: int, seed: int, now: int
) -> list[CheckReport]:
    view = engine.view
    keys = sorted(engine.keys(), key=encode_key)
    chosen = random.Random(seed).sample(keys, min(sample, len(keys)))
    reader = FeatureClient(client, [view], namespace=namespace)
    newest = CheckReport("online@newest", view.name, view.feature_names, "keys")
    current = CheckReport("online@now", view.name, view.feature_names, "keys")
    lateness = engine.compiled.lateness
    names = view.feature_names
    for key in chosen:
        watermark = engine.watermark(key)
        assert watermark is not None
        at = watermark + lateness
        result = reader.get_features(view.name, [key], as_of=at)
        fresh = result.freshness[view.name][0]
        state = engine.serving_state(key)
        if fresh is not None and state is not None and fresh.events > state.events:
            newest.skipped["ahead"] = newest.skipped.get("ahead", 0) + 1
            continue
        expected = engine.serve(key, at)
        if fresh is None and expected is not None and engine.serve(key, now) is None:
            newest.skipped["expired"] = newest.skipped.get("expired", 0) + 1
            continue
        _compare_read(newest, key, result.rows[0], expected, names, _iso(at))
    if chosen:
        result = reader.get_features(view.name, chosen, as_of=now)
        for key, row, fresh in zip(chosen, result.rows, result.freshness[view.name], strict=True):
            state = engine.serving_state(key)
            if fresh is not None and state is not None and fresh.events > state.events:
                current.skipped["ahead"] = current.skipped.get("ahead", 0) + 1
                continue
            _compare_read(current, key, row, engine.serve(key, now), names, _iso(now))
    for text in _extra_entries(client, namespace, view, {encode_key(k) for k in keys}):
        newest.extra += 1
        where = "not in the archive"
        newest.note(Difference(newest.check, view.name, decode_key(text), "*", "entry", None, where))
    return [newest, current]


def _compare_read(
    check: CheckReport,
    key: Key,
    got: Sequence[Any],
    expected: dict[str, Any] | None,
    names: list[str],
    at: str,
) -> None:
    want = [None] * len(names) if expected is None else [expected[n] for n in names]
    if expected is not None and all(v is None for v in got):
        check.missing += 1
        check.note(Difference(check.check, check.view, key, "*", None, "entry", f"as of {at}"))
        return
    check.add(key, got, want, f"as of {at}")


def _extra_entries(client: redis.Redis, namespace: str, view: FeatureView, known: set[str]) -> list[str]:
    """Encoded keys of the view's online entries that the archive never saw."""
    prefix, suffix = key_prefix(namespace, view.entity.name), key_suffix(view.name)
    pattern = _glob(prefix) + "*" + _glob(suffix)
    extra = []
    for name in client.scan_iter(match=pattern, count=1000):
        text = name.decode() if isinstance(name, bytes) else str(name)
        encoded = text[len(prefix) : len(text) - len(suffix)]
        if encoded not in known:
            extra.append(encoded)
    return extra


def _glob(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _percent(rate: float) -> str:
    """Rounded down, so that anything short of a perfect match never prints as 100.00%."""
    return f"{math.floor(round(rate * 10_000, 6)) / 100:.2f}%"


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).isoformat().replace("+00:00", "Z")
