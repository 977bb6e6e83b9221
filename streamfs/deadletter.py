"""The dead-letter sink: every rejected event goes to `<topic>.dlq` with why, where from, and its bytes.

Headers carry the reason (one of records.REJECTION_REASONS), a human-readable detail, the view
that rejected it (if any) and the source topic/partition/offset; the value is the original
message bytes, untouched (up to MAX_VALUE_BYTES), so a fixed consumer can replay it. Delivery
is confirmed before the worker commits offsets (flush in the commit protocol), so a rejection
is never lost; after a crash it may be delivered twice (dead letters are at-least-once).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamfs.errors import ServiceError
from streamfs.produce import produce_waiting
from streamfs.records import Rejected

DLQ_SUFFIX = ".dlq"
MAX_VALUE_BYTES = 512 * 1024
"""The most of a rejected message's bytes a dead letter carries. A source topic may allow bigger
messages than the dead-letter topic and producer do (1 MB by default); a longer message's head
goes, with `streamfs.truncated` and `streamfs.original_bytes` headers (its source position says
where the whole message is)."""


def dead_letter_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


class DeadLetterWriter:
    """Produces rejected events; `flush()` returns only when the broker acknowledged them all."""

    def __init__(self, producer_config: dict[str, Any]) -> None:
        self._producer = Producer({**producer_config, "enable.idempotence": False, "acks": "all"})
        self._errors: list[str] = []
        self.pending = 0

    def ensure_topics(self, admin: AdminClient, source_topics: Iterable[str], partitions: int = 1) -> None:
        """Create the `.dlq` topics that do not exist yet (brokers may not auto-create)."""
        wanted = {dead_letter_topic(t) for t in source_topics}
        existing = set(admin.list_topics(timeout=10).topics)
        missing = [
            NewTopic(
                t,
                num_partitions=partitions,
                replication_factor=-1,
                config={"retention.ms": "604800000", "retention.bytes": "-1"},
            )
            for t in sorted(wanted - existing)
        ]
        if not missing:
            return
        for topic, future in admin.create_topics(missing).items():
            try:
                future.result(timeout=15)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise ServiceError(f"cannot create dead-letter topic {topic}: {exc}") from exc

    def add(self, source_topic: str, rejected: Iterable[Rejected]) -> int:
        count = 0
        for item in rejected:
            headers: list[tuple[str, str | bytes | None]] = [
                ("streamfs.reason", item.reason.encode()),
                ("streamfs.detail", item.detail.encode("utf-8", "replace")[:4000]),
                ("streamfs.view", (item.view or "").encode()),
            ]
            if item.position is not None:
                headers += [
                    ("streamfs.topic", item.position.topic.encode()),
                    ("streamfs.partition", str(item.position.partition).encode()),
                    ("streamfs.offset", str(item.position.offset).encode()),
                ]
            value = item.raw
            if value is not None and len(value) > MAX_VALUE_BYTES:
                size = str(len(value)).encode()
                headers += [("streamfs.truncated", b"1"), ("streamfs.original_bytes", size)]
                value = value[:MAX_VALUE_BYTES]
            produce_waiting(
                self._producer,
                dead_letter_topic(source_topic),
                wait_s=0.1,
                value=value,
                headers=headers,
                on_delivery=self._delivered,
            )
            count += 1
        self.pending += count
        self._producer.poll(0)
        return count

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._errors.append(str(error))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every dead letter to be acknowledged; raise ServiceError if any failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise ServiceError(f"{remaining} dead letters not acknowledged within {timeout} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise ServiceError(f"dead-letter delivery failed: {errors[0]} (+{len(errors) - 1} more)")
        self.pending = 0
