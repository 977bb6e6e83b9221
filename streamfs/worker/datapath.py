"""The data path of one polled batch: decode → every view's engine → buffered output.

Nothing is written here: feature rows and archived events wait in the OfflineWriter, changed
keys in the engines (OnlineSync collects them), rejections in the DeadLetterWriter, until the
commit protocol flushes them.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamfs.deadletter import DeadLetterWriter
from streamfs.decode import Decoder
from streamfs.engine import Engine
from streamfs.metrics import WorkerMetrics
from streamfs.offline import OfflineWriter
from streamfs.records import Position, Rejected, SourceEvent
from streamfs.registry import Pipeline
from streamfs.sources import Record, arrival_ms
from streamfs.worker.online_sync import OnlineSync
from streamfs.worker.partitions import PartitionTable


class DataPath:
    def __init__(
        self,
        pipeline: Pipeline,
        engine: Engine,
        *,
        table: PartitionTable,
        offline: OfflineWriter,
        online: OnlineSync,
        dead_letters: DeadLetterWriter,
        metrics: WorkerMetrics,
    ) -> None:
        self.pipeline = pipeline
        self.engine = engine
        self.decoders = {source.topic: Decoder(source) for source in pipeline.sources}
        self.table = table
        self.offline = offline
        self.online = online
        self.dead_letters = dead_letters
        self.metrics = metrics

    def process(self, records: Sequence[Record]) -> None:
        """Decode and aggregate records of owned partitions; output waits for the commit protocol.

        Records of partitions not owned are ignored (late records of a revoked partition), and so
        are records below a partition's position: they were processed already, and a broker only
        sends them again after an offset reset (e.g. a restarted in-memory broker whose topic was
        re-created); they are counted in streamfs_records_skipped and logged once per partition.
        """
        positions = self.table.positions
        decoders = self.decoders
        by_topic: dict[str, tuple[list[SourceEvent], list[Rejected]]] = {}
        for record in records:
            topic, partition, offset = record.topic, record.partition, record.offset
            tp = (topic, partition)
            position = positions.get(tp)
            if position is None:
                continue  # a late record of a partition revoked during this consume call
            if offset < position:
                self.table.skipped_below(tp, offset, position)
                continue
            decoded = decoders[topic].decode(
                record.value, arrival_time=arrival_ms(record), position=Position(topic, partition, offset)
            )
            found = by_topic.get(topic)
            if found is None:
                found = by_topic[topic] = ([], [])
            if isinstance(decoded, Rejected):
                found[1].append(decoded)
            else:
                found[0].append(decoded)
            positions[tp] = offset + 1
        for topic, (events, rejected) in by_topic.items():
            self._aggregate(topic, events, rejected)

    def _aggregate(self, topic: str, events: list[SourceEvent], rejected: list[Rejected]) -> None:
        metrics = self.metrics
        metrics.consumed.labels(topic).inc(len(events) + len(rejected))
        self.offline.add_events(self.pipeline.source(topic), events)
        for engine in self.engine.for_topic(topic):
            result = engine.process(events)
            rows = result.rows
            self.offline.add_rows(rows)
            if rows:
                self.online.processed(engine.name, max(row.event_time for row in rows))
            rejected.extend(result.rejected)
            metrics.accepted.labels(engine.name).inc(len(rows))
            if result.filtered:
                metrics.filtered.labels(engine.name).inc(result.filtered)
        for item in rejected:
            metrics.rejected.labels(item.reason, item.view or "").inc()
        self.dead_letters.add(topic, rejected)
        self.online.arrived(event.arrival_time for event in events)
