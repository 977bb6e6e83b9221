"""`streamfs status`: how far behind the workers are (lag per partition) and how fresh each view is.

Lag comes from Kafka (the group's committed offsets vs the end offsets); freshness from the
progress record the workers keep in Redis (`<ns>:progress:<group>`, one field per view with the
newest event time written and when it was written).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, TopicPartition

from streamfs.durations import ms_to_datetime
from streamfs.registry import Pipeline, load_pipeline
from streamfs.settings import Settings


def progress_key(namespace: str, group_id: str) -> str:
    """The Redis hash where workers record per-view progress (view -> JSON)."""
    return f"{namespace}:progress:{group_id}"


def record_progress(
    client: redis.Redis, namespace: str, group_id: str, progress: dict[str, dict[str, Any]]
) -> None:
    """Merge per-view progress (newest event time, write time, counts) into the progress hash."""
    if progress:
        client.hset(
            progress_key(namespace, group_id), mapping={k: orjson.dumps(v) for k, v in progress.items()}
        )


def partition_lag(pipeline: Pipeline, settings: Settings) -> list[tuple[str, int, int | None, int]]:
    """(topic, partition, committed offset or None, end offset) for every partition of the pipeline."""
    consumer = Consumer(settings.consumer_config())
    try:
        rows = []
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(topic, p)
            for topic in pipeline.topics
            if topic in metadata.topics
            for p in sorted(metadata.topics[topic].partitions)
        ]
        committed = consumer.committed(partitions, timeout=10) if partitions else []
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            rows.append((tp.topic, tp.partition, tp.offset if tp.offset >= 0 else None, int(high)))
        return rows
    finally:
        consumer.close()


def pipeline_status(spec: str, settings: Settings) -> str:
    """A plain-text report of lag per partition and freshness per view."""
    pipeline = load_pipeline(spec)
    lines = [
        f"pipeline {spec} — group {settings.group_id}",
        "",
        "partition                      committed        end      lag",
    ]
    for topic, partition, committed, end in partition_lag(pipeline, settings):
        lag = end - (committed or 0)
        shown = "-" if committed is None else str(committed)
        lines.append(f"{topic + '[' + str(partition) + ']':<28} {shown:>11} {end:>10} {lag:>8}")
    client = redis.Redis.from_url(settings.require_redis())
    raw = client.hgetall(progress_key(settings.online_namespace, settings.group_id))
    progress = {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()}
    now = time.time() * 1000
    lines += ["", "view                     newest event (UTC)          written          entities"]
    for view in pipeline.views:
        entry = progress.get(view.name)
        if entry is None:
            lines.append(f"{view.name:<24} (nothing written yet)")
            continue
        newest = ms_to_datetime(entry["max_event_time"]).isoformat(timespec="seconds")
        age = (now - entry["written_ms"]) / 1000
        lines.append(f"{view.name:<24} {newest:<27} {age:>7.1f} s ago {entry['keys']:>10}")
    return "\n".join(lines)
