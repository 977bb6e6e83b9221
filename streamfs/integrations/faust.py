"""Run a streamfs pipeline inside a Faust app (faust-streaming): same decoder, engine and sinks.

    import faust
    from streamfs.integrations.faust import FaustPipeline

    app = faust.App("fraud", broker="kafka://127.0.0.1:9092", topic_partitions=4, web_enabled=False)
    features = FaustPipeline(app, load_pipeline("pipelines.payments"), Settings.load())

or, with no app of your own, ``python -m streamfs.integrations.faust pipelines.payments``.

Each source topic gets one agent. It takes the topic's records in batches
(``stream.take_events(batch_size, within)``) and hands them, as the raw bytes plus the Kafka
record's topic / partition / offset / timestamp from ``event.message``, to a streamfs
:class:`~streamfs.runner.Worker` that is built but never run: its decoders, engine, Redis
writer, Parquet writer, dead-letter producer and checkpoint store do the work, so the outputs
are the worker's, byte for byte (docs/faust.md).

The commit discipline is the worker's with Faust's acknowledgements in place of Kafka commits:

  1. a batch is decoded and processed (``Worker.process``), and then ``Worker.flush`` writes
     Redis, flushes Parquet, flushes the dead letters and (every ``checkpoint_interval_s``)
     checkpoints the engine;
  2. only then does the agent ask ``take_events`` for the next batch, which acks this batch's
     events; Faust commits acked offsets on its own timer.

So Faust never commits an offset whose output is not flushed. If processing fails, the batch's
messages get an extra reference (``Message.incref``) so that ``take_events``' ack cannot release
them, and the whole app is crashed (Faust would otherwise restart the agent and carry on past
the failed batch). A restart, or a kill -9, replays from Faust's committed offset: the first
record of each partition the agent sees is the one Faust sought to, and ``Worker.recover`` runs
there (``Worker.assign``: delete uncommitted Parquet, load the newest checkpoint, replay the
event archive). Revoked partitions go through ``Worker.release``. Only the worker's public API
(process / flush / assign / release) is used.

Faust joins a consumer group named after the app (``app.conf.id``); streamfs keeps its engine
checkpoints under that name too. The agents run the (synchronous) pipeline in one background
thread, in order, so Faust's event loop stays free to fetch and to commit.

Partition counts are checked when the agents start: every source topic must exist and have
``app.conf.topic_partitions`` partitions, and so must every Table of the app. Faust otherwise
gives changelog topics another partition count, its agent crashes on the first event with
PartitionsMismatch and its supervisor restarts it every few seconds while nothing is processed.
A mismatch crashes the app with a message saying what to set.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from confluent_kafka.admin import AdminClient

from streamfs.errors import ConfigError
from streamfs.registry import Pipeline, load_pipeline
from streamfs.runner import Worker, WorkerOptions
from streamfs.settings import Settings
from streamfs.sources import SourceRecord, TopicPartitionKey

__all__ = ["FaustPipeline", "broker_url", "build_app", "check_partitions", "main", "source_partitions"]

log = logging.getLogger(__name__)


def source_record(message: Any) -> SourceRecord:
    """A Faust message as the worker's record (streamfs.sources.Record)."""
    value = message.value
    # Faust stores the record's epoch-ms timestamp divided by 1000 as a float; rounding gives
    # back the exact milliseconds (well inside a double's 53 bits).
    stamp = message.timestamp
    return SourceRecord(
        str(message.topic),
        int(message.partition),
        int(message.offset),
        None if value is None else bytes(value),
        None if stamp is None else round(stamp * 1000),
    )


def source_partitions(pipeline: Pipeline, admin: AdminClient, timeout_s: float = 10.0) -> dict[str, int]:
    """Partition count of each of the pipeline's topics; ConfigError names any that do not exist."""
    metadata = admin.list_topics(timeout=timeout_s)
    counts: dict[str, int] = {}
    missing: list[str] = []
    for topic in pipeline.topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            missing.append(topic)
        else:
            counts[topic] = len(found.partitions)
    if missing:
        raise ConfigError(
            f"source topic(s) {', '.join(map(repr, missing))} do not exist; create them (keyed by the "
            "entity, with the partition count you want) before starting the Faust app"
        )
    return counts


def check_partitions(app: Any, pipeline: Pipeline, admin: AdminClient) -> int:
    """Refuse a Faust app whose partition counts differ from the source topics'; return the count."""
    counts = source_partitions(pipeline, admin)
    distinct = sorted(set(counts.values()))
    if len(distinct) > 1:
        listed = ", ".join(f"{topic} ({n})" for topic, n in counts.items())
        raise ConfigError(
            f"the pipeline's source topics have different partition counts: {listed}. A Faust app has "
            "one topic_partitions; host these topics in separate apps, or give them one partition count"
        )
    expected = distinct[0]
    wrong: list[str] = []
    configured = int(app.conf.topic_partitions)
    if configured != expected:
        wrong.append(f"the app's topic_partitions is {configured}")
    for name, table in app.tables.items():
        partitions = table.partitions or configured
        if partitions != expected:
            wrong.append(f"table {name!r} has {partitions} partitions")
    if wrong:
        raise ConfigError(
            f"source topic(s) {', '.join(counts)} have {expected} partitions but {'; '.join(wrong)}. "
            f"Faust would create changelog topics with that count, crash the agent with "
            f"PartitionsMismatch on its first event and restart it every few seconds, processing "
            f"nothing. Create the app with faust.App(..., topic_partitions={expected}) (and give "
            f"Tables partitions={expected} or leave it unset)."
        )
    return expected


class FaustPipeline:
    """A streamfs pipeline hosted by a Faust app: one agent per source topic (see the module docstring)."""

    def __init__(
        self,
        app: Any,
        pipeline: Pipeline,
        settings: Settings,
        *,
        batch_size: int = 5_000,
        within_s: float = 0.5,
        checkpoint_interval_s: float = 30.0,
        check: bool = True,
    ) -> None:
        if batch_size < 1 or within_s <= 0:
            raise ValueError("batch_size must be ≥ 1 and within_s > 0")
        self.app = app
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.within_s = within_s
        self.check = check
        # The worker is built, never run: its sinks, engine and recovery do the work here.
        self.settings = settings.model_copy(update={"group_id": str(app.conf.id)})
        self.worker = Worker(
            pipeline,
            self.settings,
            WorkerOptions(serve_metrics=False, checkpoint_interval_s=checkpoint_interval_s),
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamfs-faust")
        self._ready: asyncio.Future[None] | None = None
        self._owned: set[TopicPartitionKey] = set()  # partitions assigned to the worker (own thread only)
        self.agents = [
            app.agent(
                app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw"),
                name=f"streamfs.{topic}",
                concurrency=1,
            )(self._agent)
            for topic in pipeline.topics
        ]
        app.on_partitions_revoked.connect(self._on_revoked)

    # ------------------------------------------------------------------ Faust side (event loop)

    async def _agent(self, stream: Any) -> None:
        if not await self._start():
            return
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(self.batch_size, within=self.within_s):
            messages = [event.message for event in events]
            future = loop.run_in_executor(self._executor, self.process, messages)
            try:
                await asyncio.shield(future)
            except BaseException as exc:
                for message in messages:  # take_events acks these when we leave: keep them unacked
                    message.incref()
                if not isinstance(exc, asyncio.CancelledError):
                    log.critical("streamfs batch failed; stopping the app so no offset passes it: %r", exc)
                    await self.app.crash(exc)
                raise

    async def _start(self) -> bool:
        """Check partitions and create dead-letter topics, once for all agents; crash the app on failure."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().run_in_executor(self._executor, self._prepare)
        try:
            await asyncio.shield(self._ready)
        except Exception as exc:
            log.critical("streamfs cannot run in Faust app %r: %s", self.app.conf.id, exc)
            await self.app.crash(exc)
            return False
        return True

    def _prepare(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.settings.require_kafka()})
        if self.check:
            check_partitions(self.app, self.pipeline, admin)
        self.worker.dead_letters.ensure_topics(admin, self.pipeline.topics)

    async def _on_revoked(self, app: Any, revoked: Any, **_: Any) -> None:
        partitions = [(tp.topic, tp.partition) for tp in revoked]
        await asyncio.get_running_loop().run_in_executor(self._executor, self.release, partitions)

    # ------------------------------------------------------------------ streamfs side (one thread)

    def process(self, messages: Sequence[Any]) -> None:
        """Decode, process and flush one batch of Faust messages (the worker's step, without Kafka)."""
        worker = self.worker
        records = [source_record(message) for message in messages]
        for record in records:
            tp = (record.topic, record.partition)
            if tp not in self._owned:
                # The first record of a partition since start or reassignment is where Faust
                # sought: its committed offset.
                worker.assign(tp, record.offset)
                self._owned.add(tp)
                log.info("streamfs resumed %s[%d] at offset %d", tp[0], tp[1], record.offset)
        worker.process(records)
        # Faust commits the offsets of acked events on its own timer; acking happens only after
        # this flush returns (see the module docstring), so the returned offsets are not needed.
        worker.flush(checkpoint=worker.checkpoint_due())

    def release(self, partitions: list[TopicPartitionKey]) -> None:
        """On revoke: flush and checkpoint the partitions we held, then forget their state."""
        self._owned.difference_update(partitions)
        self.worker.release(partitions)


def broker_url(bootstrap: str) -> list[str]:
    """Faust broker URLs for a Kafka bootstrap string ("h1:9092,h2:9092")."""
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def build_app(
    pipeline: Pipeline,
    settings: Settings,
    *,
    app_id: str | None = None,
    topic_partitions: int | None = None,
    batch_size: int = 5_000,
    within_s: float = 0.5,
    checkpoint_interval_s: float = 30.0,
    **app_options: Any,
) -> tuple[Any, FaustPipeline]:
    """A Faust app hosting `pipeline`: loopback-friendly defaults, partitions taken from the topics."""
    bootstrap = settings.require_kafka()
    if topic_partitions is None:
        counts = source_partitions(pipeline, AdminClient({"bootstrap.servers": bootstrap}))
        topic_partitions = max(counts.values())
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": broker_url(bootstrap),
        "topic_partitions": topic_partitions,
        "store": "memory://",
        "web_enabled": False,
        "datadir": str(datadir),
    }
    if settings.kafka_dev_broker:
        options["broker_session_timeout"] = 6  # the embedded broker then joins a group in ~3 s
    options.update(app_options)
    app = faust.App(app_id or settings.group_id, **options)
    hosted = FaustPipeline(
        app,
        pipeline,
        settings,
        batch_size=batch_size,
        within_s=within_s,
        checkpoint_interval_s=checkpoint_interval_s,
    )
    return app, hosted


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamfs.integrations.faust PIPELINE``: a Faust worker; settings from STREAMFS_*."""
    parser = argparse.ArgumentParser(
        prog="python -m streamfs.integrations.faust", description="Run a streamfs pipeline as a Faust app."
    )
    parser.add_argument("pipeline", help="import string, e.g. pipelines.payments")
    parser.add_argument("--app-id", help="Faust app id = consumer group (default: STREAMFS_GROUP_ID)")
    parser.add_argument("--topic-partitions", type=int, help="default: the source topics' partition count")
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--within", type=float, default=0.5, help="seconds to wait for a full batch")
    parser.add_argument("--checkpoint-interval", type=float, default=30.0)
    parser.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    args = parser.parse_args(argv)
    settings = Settings.load()
    app, _ = build_app(
        load_pipeline(args.pipeline),
        settings,
        app_id=args.app_id,
        topic_partitions=args.topic_partitions,
        batch_size=args.batch_size,
        within_s=args.within,
        checkpoint_interval_s=args.checkpoint_interval,
    )
    faust.Worker(app, loglevel=args.loglevel, quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
