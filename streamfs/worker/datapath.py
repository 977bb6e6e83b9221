"""The data path of one polled batch: decode → every view's engine → buffered output.

Nothing is written here: feature rows and archived events wait in the OfflineWriter, changed
keys in the engines (OnlineSync collects them), rejections in the DeadLetterWriter, until the
commit protocol flushes them.

Each partition's records take one of two paths with the same output:

* columnar: the batch decodes at once to an Arrow table (decode_batch.BatchDecoder), the
  kernel's views run it as columns (ViewEngine.process_table) and the offline writer takes the
  tables as they are. No Python object per event. Views the kernel does not run (a transform,
  stddev, a value it cannot hold exactly) get the table's rows as SourceEvents.
  A batch with a few bad records stays columnar: decode_batch.decode_salvaging decodes around
  them, and the per-message decoder rejects each with its reason.
* per event: when the source's schema is not plain, a record of the batch is one the columnar
  checks refuse but pydantic accepts (e.g. a +02:00 offset), or more than one record in
  SALVAGE_DENSITY is bad, every record is decoded on its own (decode.Decoder), so each bad one
  is rejected with its reason, and the views process SourceEvents.

The streamfs_events_decoded counter counts each record by the way it went.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from streamfs.deadletter import DeadLetterWriter
from streamfs.decode import Decoder
from streamfs.decode_batch import BatchDecoder, Salvaged, decode_salvaging
from streamfs.engine import Engine, ViewEngine
from streamfs.engine.view import TableResult
from streamfs.metrics import WorkerMetrics
from streamfs.offline import OfflineWriter
from streamfs.offline.scan import events_from_table
from streamfs.pyvalues import python_values
from streamfs.records import TOO_LATE, Position, Rejected, SourceEvent
from streamfs.registry import Pipeline
from streamfs.sources import PartitionRun, Record, runs_of
from streamfs.worker.online_sync import OnlineSync
from streamfs.worker.partitions import PartitionTable

SALVAGE_DENSITY = 200
"""Decode around bad records while at most one in this many is bad (beyond about one in 100,
the per-message path costs less than the extra Arrow reads: see decode_salvaging)."""
SALVAGE_PAUSE = 16
"""After a batch too bad to decode around, its topic's next 16 batches are not decoded around
their bad records (a clean one still decodes at once; one with a bad record goes straight per
message, without Arrow reads wasted on finding out again)."""


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
        self._salvage_pause: dict[str, int] = {}  # topic -> batches to go before salvaging again
        self.table = table
        self.offline = offline
        self.online = online
        self.dead_letters = dead_letters
        self.metrics = metrics

    def process(self, records: Sequence[Record]) -> None:
        """Decode and aggregate records of owned partitions (hosts' records: see process_runs)."""
        self.process_runs(runs_of(records))

    def process_runs(self, runs: Sequence[PartitionRun]) -> None:
        """Decode and aggregate runs of owned partitions; output waits for the commit protocol.
        Records of partitions not owned, or below a partition's position, are dropped
        (PartitionTable.admit says why)."""
        for run in runs:
            admitted = self.table.admit(run)
            if admitted is not None and not self._process_columns(admitted):
                self.metrics.decoded.labels(admitted.topic, "per_event").inc(len(admitted.offsets))
                self._process_events(admitted)

    def _process_events(self, run: PartitionRun) -> None:
        """The per-event path: each record decoded and validated on its own."""
        topic, partition = run.topic, run.partition
        decoder = self.decoders[topic]
        events: list[SourceEvent] = []
        rejected: list[Rejected] = []
        for offset, value, arrival in zip(run.offsets, run.values, run.arrivals(), strict=True):
            decoded = decoder.decode(value, arrival_time=arrival, position=Position(topic, partition, offset))
            if isinstance(decoded, Rejected):
                rejected.append(decoded)
            else:
                events.append(decoded)
        self._aggregate(topic, events, rejected)

    def _process_columns(self, run: PartitionRun) -> bool:
        """The columnar path; False (nothing done) when the batch must take the per-event path."""
        topic, partition = run.topic, run.partition
        decoder = self.batch_decoders.get(topic)
        if decoder is None:
            return False
        arrivals = run.arrivals()
        if self._salvage_pause.get(topic, 0) > 0:  # bad records were dense: per message
            self._salvage_pause[topic] -= 1
            decoded: pa.Table | Salvaged | None = decoder.decode(
                topic, partition, run.offsets, run.values, arrivals
            )
        else:
            decoded = decode_salvaging(
                decoder, self.decoders[topic], topic, partition, run.offsets, run.values, arrivals,
                max_rejected=max(1, len(run.offsets) // SALVAGE_DENSITY),
            )  # fmt: skip
            if decoded is None:
                self._salvage_pause[topic] = SALVAGE_PAUSE
        if decoded is None:
            return False
        metrics = self.metrics
        rejected: list[Rejected] = []
        if isinstance(decoded, Salvaged):
            metrics.decoded.labels(topic, "columnar_salvaged").inc(len(run.offsets))
            rejected = decoded.rejected
            run = _subrun(run, decoded.kept, arrivals)
            arrivals = run.arrivals()  # (the kept records' arrival times: their timestamps now)
            table = decoded.table
            if not table.num_rows:
                self._aggregate(topic, [], rejected)
                return True
        else:
            metrics.decoded.labels(topic, "columnar").inc(len(run.offsets))
            table = decoded
        source = self.pipeline.source(topic)
        consumed = len(run.offsets) + len(rejected)
        self.offline.add_event_table(source, topic, partition, table)
        events: list[SourceEvent] | None = None
        for engine in self.engine.for_topic(topic):
            result = engine.process_table(table)
            if result is None:  # the row path for this view (no kernel, a transform, ...)
                if events is None:
                    events = events_from_table(table, source)
                    for event, value in zip(events, run.values, strict=True):
                        event.raw = value
                rejected.extend(self._run_view(engine, events))
                continue
            rows = result.rows
            self.offline.add_row_table(engine.name, topic, partition, rows)
            if rows.num_rows:
                newest = pc.max(rows.column("event_time")).value  # (a cast costs ~15 µs a call)
                self.online.processed(engine.name, newest)
            metrics.accepted.labels(engine.name).inc(rows.num_rows)
            if len(result.rejected):
                rejected.extend(self._too_late(engine, table, run, arrivals, result))
        self._hand_over(topic, consumed, rejected, arrivals)
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
        engine: ViewEngine, table: pa.Table, run: PartitionRun, arrivals: list[int], result: TableResult
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
            out.append(
                Rejected(
                    TOO_LATE,
                    engine.too_late_detail(key, time, newest),
                    Position(run.topic, run.partition, run.offsets[index]),
                    run.values[index],
                    engine.name,
                    arrivals[index],
                )
            )
        return out

    def _aggregate(self, topic: str, events: list[SourceEvent], rejected: list[Rejected]) -> None:
        consumed = len(events) + len(rejected)
        self.offline.add_events(self.pipeline.source(topic), events)
        for engine in self.engine.for_topic(topic):
            rejected.extend(self._run_view(engine, events))
        self._hand_over(topic, consumed, rejected, [event.arrival_time for event in events])

    def _hand_over(self, topic: str, consumed: int, rejected: list[Rejected], arrivals: list[int]) -> None:
        """Both paths' end: rejections counted and sent to the dead letters, arrivals noted for
        the freshness the next Redis write observes.

        Records count as consumed last, once every view's accepted and rejected counters hold
        them: a scrape that sees them consumed sees them fully accounted for.
        """
        for item in rejected:
            self.metrics.rejected.labels(item.reason, item.view or "").inc()
        self.metrics.consumed.labels(topic).inc(consumed)
        self.dead_letters.add(topic, rejected)
        self.online.arrived(arrivals)


def _subrun(run: PartitionRun, kept: list[int], arrivals: list[int]) -> PartitionRun:
    """The records at `kept`, their arrival times as their timestamps (a record without a
    Kafka timestamp keeps the arrival time it was decoded with)."""
    return PartitionRun(
        run.topic,
        run.partition,
        [run.offsets[i] for i in kept],
        [run.values[i] for i in kept],
        [arrivals[i] for i in kept],
    )
