"""What a backfill will do, decided and checked before any event is replayed.

Every request error is an OfflineError raised here, before heavy work: unknown views, an empty
or inverted time range, a range with no archived events, a view whose rows were written by a
different definition (unless `replace`), a Kafka topic whose head was deleted by retention.

The *bound* of a partition is the offset the replay stops before. It is the worker group's
committed offset (the larger of Kafka's and the worker's own commit log, runner.Worker.commit),
so a backfill ends exactly where the worker's committed output begins: for a new view, the
worker continues from there without a gap or an overlap. A partition nobody committed is
replayed to its end (the archive's last offset, or Kafka's high watermark).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from streamfs.checkpoint import CommitLog
from streamfs.definitions import FeatureView, KafkaSource
from streamfs.engine import ViewEngine
from streamfs.errors import ConfigError, OfflineError
from streamfs.offline import archive_files, layout
from streamfs.registry import Pipeline
from streamfs.settings import Settings

__all__ = ["Plan", "SourceKind", "SourcePlan", "committed_offsets", "make_plan", "stale_fingerprints"]

SourceKind = Literal["archive", "kafka"]


@dataclass(frozen=True)
class SourcePlan:
    """The views replayed together from one source, and where each partition's replay stops."""

    source: KafkaSource
    views: tuple[FeatureView, ...]
    bounds: dict[int, int]
    """partition -> offset to stop before (exclusive)."""
    starts: dict[int, int] = field(default_factory=dict)
    """partition -> first offset available (Kafka's low watermark, or the archive's first offset)."""


@dataclass(frozen=True)
class Plan:
    kind: SourceKind
    start: int | None
    end: int | None
    online: bool
    replace: bool
    sources: tuple[SourcePlan, ...]
    notes: tuple[str, ...] = ()

    @property
    def views(self) -> list[FeatureView]:
        return [view for source in self.sources for view in source.views]


def select_views(pipeline: Pipeline, names: Sequence[str] | None) -> list[FeatureView]:
    """The views named (all of the pipeline's when None), or an OfflineError naming the unknown ones."""
    if not names:
        return list(pipeline.views)
    known = {view.name: view for view in pipeline.views}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise OfflineError(
            f"unknown feature view(s) {', '.join(map(repr, unknown))} in pipeline {pipeline.name} "
            f"(views: {', '.join(known)})"
        )
    return [known[name] for name in dict.fromkeys(names)]


def make_plan(
    pipeline: Pipeline,
    settings: Settings,
    *,
    views: Sequence[str] | None = None,
    kind: SourceKind = "archive",
    start: int | None = None,
    end: int | None = None,
    online: bool = False,
    replace: bool = False,
) -> Plan:
    """Check the request and compute per-partition bounds; raises OfflineError/ConfigError."""
    if kind not in ("archive", "kafka"):
        raise OfflineError(f"--source must be 'archive' or 'kafka', not {kind!r}")
    if start is not None and end is not None and start >= end:
        raise OfflineError(f"empty time range: --from ({_iso(start)}) must be before --to ({_iso(end)})")
    chosen = select_views(pipeline, views)
    root = settings.data_dir
    for view in chosen:
        stale = stale_fingerprints(root, view)
        if stale and not replace:
            raise OfflineError(
                f"the feature log of view {view.name!r} holds {len(stale)} file(s) written by a "
                f"different definition (e.g. {stale[0]}); its rows would mix two definitions. "
                "Re-run with --replace to recompute the view's whole history with the current one"
            )
        if stale and (start is not None or end is not None):
            raise OfflineError(
                f"view {view.name!r} changed definition: --replace rewrites its whole history, "
                "so it cannot be combined with --from/--to"
            )
    if online:
        settings.require_redis()
    notes: list[str] = []
    by_source: dict[str, list[FeatureView]] = {}
    for view in chosen:
        by_source.setdefault(view.source.topic, []).append(view)
    sources = []
    for topic, group in by_source.items():
        source = pipeline.source(topic)
        if kind == "archive":
            sources.append(_archive_plan(root, settings, source, group, start, end, notes))
        else:
            sources.append(_kafka_plan(settings, source, group))
    return Plan(kind, start, end, online, replace, tuple(sources), tuple(notes))


def _archive_plan(
    root: Path,
    settings: Settings,
    source: KafkaSource,
    views: list[FeatureView],
    start: int | None,
    end: int | None,
    notes: list[str],
) -> SourcePlan:
    files = archive_files(root, source)
    names = ", ".join(view.name for view in views)
    where = layout.archive_dir(root, source.name)
    if not files:
        raise OfflineError(
            f"no archived events of source {source.name!r} (views {names}) under {where}; "
            "the worker archives what it consumes, or use --source kafka to replay the topic"
        )
    if (start is not None or end is not None) and not archive_files(root, source, start, end):
        first_day, last_day = layout.date_dir_name(files[0].day), layout.date_dir_name(files[-1].day)
        since = _iso(start) if start is not None else "the start"
        until = _iso(end) if end is not None else "the end"
        raise OfflineError(
            f"the archive of source {source.name!r} has no events between {since} and {until} "
            f"(it covers {first_day[5:]} to {last_day[5:]})"
        )
    ends: dict[int, int] = {}
    firsts: dict[int, int] = {}
    for data_file in files:
        ends[data_file.partition] = max(ends.get(data_file.partition, 0), data_file.last_offset + 1)
        known = firsts.get(data_file.partition, data_file.first_offset)
        firsts[data_file.partition] = min(known, data_file.first_offset)
    committed = committed_offsets(settings, source.topic, sorted(ends), notes)
    bounds = {p: committed.get(p, ends[p]) for p in sorted(ends)}
    for p, offset in sorted(firsts.items()):
        if offset > 0:
            notes.append(
                f"{source.topic}[{p}]: the archive starts at offset {offset}; events before it "
                "(if the topic had any) are not in the recomputed state"
            )
    return SourcePlan(source, tuple(views), bounds, firsts)


def _kafka_plan(settings: Settings, source: KafkaSource, views: list[FeatureView]) -> SourcePlan:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(settings.consumer_config(group_id=f"{settings.group_id}.backfill"))
    try:
        try:
            metadata = consumer.list_topics(source.topic, timeout=10)
        except KafkaException as exc:
            raise ConfigError(f"cannot reach Kafka at {settings.require_kafka()}: {exc}") from exc
        topic = metadata.topics.get(source.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise OfflineError(f"Kafka topic {source.topic!r} (source {source.name!r}) does not exist")
        partitions = sorted(topic.partitions)
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(source.topic, p), timeout=10, cached=False)
            for p in partitions
        }
    finally:
        consumer.close()
    for p, (low, _high) in marks.items():
        if low > 0:
            raise OfflineError(
                f"Kafka no longer holds the start of {source.topic}[{p}] (its first offset is {low}: "
                "retention deleted the rest), so a replay from Kafka cannot rebuild the state; "
                "backfill from the archive (--source archive)"
            )
    committed = committed_offsets(settings, source.topic, partitions, [])
    bounds = {p: committed.get(p, int(marks[p][1])) for p in partitions}
    return SourcePlan(source, tuple(views), bounds, {p: int(marks[p][0]) for p in partitions})


def committed_offsets(
    settings: Settings, topic: str, partitions: list[int], notes: list[str]
) -> dict[int, int]:
    """The worker group's committed offsets: max(Kafka's, the worker's commit log) per partition."""
    log = CommitLog(settings.data_dir / "checkpoints", settings.group_id)
    found: dict[int, int] = {}
    for p in partitions:
        offset = log.offset(topic, p)
        if offset is not None:
            found[p] = offset
    if not settings.kafka_bootstrap or not partitions:
        return found
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(settings.consumer_config())  # never subscribes: only reads the group's offsets
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    except KafkaException as exc:
        notes.append(f"Kafka did not return the committed offsets of {topic} ({exc}); used the commit log")
        return found
    finally:
        consumer.close()
    for tp in result:
        if tp.offset is not None and tp.offset >= 0:
            found[tp.partition] = max(found.get(tp.partition, 0), int(tp.offset))
    return found


def stale_fingerprints(root: Path, view: FeatureView) -> list[Path]:
    """Feature-log files of `view` whose schema fingerprint is not the current definition's."""
    current = ViewEngine(view).fingerprint()
    stale = []
    for data_file in layout.list_files(layout.features_dir(root, view.name)):
        metadata = layout.metadata_of(pq.read_schema(data_file.path))
        if metadata.get("streamfs.fingerprint") != current:
            stale.append(data_file.path)
    return stale


def _iso(ms: int) -> str:
    from streamfs.durations import ms_to_datetime

    return ms_to_datetime(ms).isoformat().replace("+00:00", "Z")
