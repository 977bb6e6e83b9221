"""The data path of one polled batch: decode → every view's engine → buffered output.

Nothing is written here: feature rows and archived events wait in the OfflineWriter, changed
keys in the engines (OnlineSync collects them), rejections in the DeadLetterWriter, until the
commit protocol flushes them.

Each partition's records take one of two paths with the same output:

* columnar: the batch decodes at once to an Arrow table (decode_batch.BatchDecoder), the
  kernel's views run it as columns (ViewEngine.process_table) and the offline writer takes the
  tables as they are. No Python object per event. Views the kernel does not run (a transform,
  stddev, a value it cannot hold exactly) get the table's rows as SourceEvents.
* per event: when the source's schema is not plain, or any record of the batch is not
  (bad input, a naive timestamp, ...), every record is decoded on its own (decode.Decoder),
  so each bad one is rejected with its reason, and the views process SourceEvents.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from streamfs.deadletter import DeadLetterWriter
from streamfs.decode import Decoder
from streamfs.decode_batch import BatchDecoder
from streamfs.engine import Engine, ViewEngine
from streamfs.engine.view import TableResult
from streamfs.metrics import WorkerMetrics
from streamfs.offline import OfflineWriter
from streamfs.offline.scan import events_from_table
from streamfs.pyvalues import python_values
from streamfs.records import TOO_LATE, Position, Rejected, SourceEvent
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
        self.batch_decoders = {
            source.topic: decoder
            for source in pipeline.sources
            if (decoder := BatchDecoder.build(source)) is not None
        }
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
        runs: dict[tuple[str, int], list[Record]] = {}
        for record in records:
            tp = (record.topic, record.partition)
            position = positions.get(tp)
            if position is None:
                continue  # a late record of a partition revoked during this consume call
            if record.offset < position:
                self.table.skipped_below(tp, record.offset, position)
                continue
            run = runs.get(tp)
            if run is None:
                run = runs[tp] = []
            run.append(record)
            positions[tp] = record.offset + 1
        for (topic, partition), run in runs.items():
            if not self._process_columns(topic, partition, run):
                self._process_events(topic, run)

    def _process_events(self, topic: str, records: list[Record]) -> None:
        """The per-event path: each record decoded and validated on its own."""
        decoder = self.decoders[topic]
        events: list[SourceEvent] = []
        rejected: list[Rejected] = []
        for record in records:
            decoded = decoder.decode(
                record.value,
                arrival_time=arrival_ms(record),
                position=Position(topic, record.partition, record.offset),
            )
            if isinstance(decoded, Rejected):
                rejected.append(decoded)
            else:
                events.append(decoded)
        self._aggregate(topic, events, rejected)

    def _process_columns(self, topic: str, partition: int, records: list[Record]) -> bool:
        """The columnar path; False (nothing done) when the batch must take the per-event path."""
        decoder = self.batch_decoders.get(topic)
        if decoder is None:
            return False
        arrivals = [arrival_ms(record) for record in records]
        table = decoder.decode(
            topic, partition, [r.offset for r in records], [r.value for r in records], arrivals
        )
        if table is None:
            return False
        metrics = self.metrics
        source = self.pipeline.source(topic)
        metrics.consumed.labels(topic).inc(len(records))
        self.offline.add_event_table(source, topic, partition, table)
        rejected: list[Rejected] = []
        events: list[SourceEvent] | None = None
        for engine in self.engine.for_topic(topic):
            result = engine.process_table(table)
            if result is None:  # the row path for this view (no kernel, a transform, ...)
                if events is None:
                    events = events_from_table(table, source)
                    for event, record in zip(events, records, strict=True):
                        event.raw = record.value
                rejected.extend(self._run_view(engine, events))
                continue
            rows = result.rows
            self.offline.add_row_table(engine.name, topic, partition, rows)
            if rows.num_rows:
                newest = int(np.max(rows.column("event_time").cast(pa.int64()).to_numpy()))
                self.online.processed(engine.name, newest)
            metrics.accepted.labels(engine.name).inc(rows.num_rows)
            if len(result.rejected):
                rejected.extend(self._too_late(engine, table, records, arrivals, result))
        self._hand_over(topic, rejected, arrivals)
        return True

    def _run_view(self, engine: ViewEngine, events: list[SourceEvent]) -> list[Rejected]:
        """One view over SourceEvents: rows to the offline writer; its rejections returned."""
        result = engine.process(events)
        rows = result.rows
        self.offline.add_rows(rows)
        if rows:
            self.online.processed(engine.name, max(row.event_time for row in rows))
        self.metrics.accepted.labels(engine.name).inc(len(rows))
        if result.filtered:
            self.metrics.filtered.labels(engine.name).inc(result.filtered)
        return result.rejected

    @staticmethod
    def _too_late(
        engine: ViewEngine, table: pa.Table, records: list[Record], arrivals: list[int], result: TableResult
    ) -> list[Rejected]:
        """The TOO_LATE rejections of process_table's rejected rows (as ViewEngine.process gives them)."""
        chosen = table.take(pa.array(result.rejected))
        keys = list(
            zip(*(python_values(chosen.column(name)) for name in engine.compiled.key_fields), strict=True)
        )
        times = chosen.column("event_time").cast(pa.int64()).to_pylist()
        out = []
        for index, key, time, newest in zip(
            result.rejected.tolist(), keys, times, result.newest.tolist(), strict=True
        ):
            record = records[index]
            out.append(
                Rejected(
                    TOO_LATE,
                    engine.too_late_detail(key, time, newest),
                    Position(record.topic, record.partition, record.offset),
                    record.value,
                    engine.name,
                    arrivals[index],
                )
            )
        return out

    def _aggregate(self, topic: str, events: list[SourceEvent], rejected: list[Rejected]) -> None:
        metrics = self.metrics
        metrics.consumed.labels(topic).inc(len(events) + len(rejected))
        self.offline.add_events(self.pipeline.source(topic), events)
        for engine in self.engine.for_topic(topic):
            rejected.extend(self._run_view(engine, events))
        self._hand_over(topic, rejected, [event.arrival_time for event in events])

    def _hand_over(self, topic: str, rejected: list[Rejected], arrivals: list[int]) -> None:
        """Both paths' end: rejections counted and sent to the dead letters, arrivals noted for
        the freshness the next Redis write observes."""
        for item in rejected:
            self.metrics.rejected.labels(item.reason, item.view or "").inc()
        self.dead_letters.add(topic, rejected)
        self.online.arrived(arrivals)
