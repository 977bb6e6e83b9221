"""Prometheus metrics and the worker's health endpoints (/metrics, /healthz, /readyz).

Each worker owns a CollectorRegistry (not the global one), so tests and embedded uses can run
several workers in one process without metric name clashes.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamfs.errors import ConfigError


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """histogram.observe(v) for every v, counted per bucket at once.

    The worker observes one freshness per event: a million `observe` calls cost ~3 % of its CPU.
    prometheus_client has no bulk observe, so this adds each bucket's count to the histogram's
    own counters (the attributes observe uses); without them (another client version) it
    falls back to observe one by one.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for value in values.tolist():
            histogram.observe(value)
        return
    if not len(values):
        return
    counts = np.bincount(np.searchsorted(np.asarray(bounds), values, side="left"), minlength=len(bounds))
    for bucket, count in zip(buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    total.inc(float(values.sum()))


FRESHNESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    """Counters, gauges and histograms of one worker."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("streamfs_events_consumed", "Kafka records consumed", ["topic"], registry=r)
        self.decoded = Counter(
            "streamfs_events_decoded",
            "Records consumed, per decode path: columnar (the batch at once), columnar_salvaged (a"
            " batch with bad records, decoded around them), per_event (one by one: the schema is"
            " not plain, or a record pydantic accepts is one the columnar decoder refuses)",
            ["topic", "path"],
            registry=r,
        )
        self.accepted = Counter(
            "streamfs_events_accepted", "Events aggregated, per view", ["view"], registry=r
        )
        self.rejected = Counter(
            "streamfs_events_rejected", "Events sent to the dead-letter topic", ["reason", "view"], registry=r
        )
        self.filtered = Counter(
            "streamfs_events_filtered", "Events a view's transform filtered out", ["view"], registry=r
        )
        self.lag = Gauge(
            "streamfs_consumer_lag", "Records behind the high watermark", ["topic", "partition"], registry=r
        )
        self.freshness = Histogram(
            "streamfs_freshness_seconds",
            "From the event's Kafka timestamp to its features being readable in Redis",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "streamfs_batch_size",
            "Records per consumed batch",
            buckets=(1, 10, 100, 1_000, 5_000, 10_000, 50_000),
            registry=r,
        )
        self.sink_seconds = Histogram(
            "streamfs_sink_seconds",
            "Time to flush a sink",
            ["sink"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.commits = Counter("streamfs_commits", "Offset commits", registry=r)
        self.sink_errors = Counter(
            "streamfs_sink_errors",
            "Sink or offset-commit failures (retried): redis, kafka",
            ["sink"],
            registry=r,
        )
        self.skipped = Counter(
            "streamfs_records_skipped",
            "Records below the worker's position, not processed again (the broker reset its offsets)",
            ["topic", "partition"],
            registry=r,
        )
        self.resume_beyond_end = Counter(
            "streamfs_resume_beyond_end",
            "Assignments resuming past the end offset (the broker lost records or the topic was re-created)",
            ["topic", "partition"],
            registry=r,
        )
        self.paused = Gauge(
            "streamfs_consumption_paused",
            "1 while consumption is paused because Redis is unavailable",
            registry=r,
        )
        self.last_progress = Gauge(
            "streamfs_last_progress_timestamp", "Unix time of the last loop turn", registry=r
        )
        self.ready = False
        self.alive_after = 0.0

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def healthy(self, stall_seconds: float = 120.0) -> bool:
        """Alive unless the loop has not turned for `stall_seconds` (a stuck worker should be restarted)."""
        last = float(self.last_progress._value.get())
        return last == 0 or time.time() - last < stall_seconds


class HealthServer:
    """A tiny HTTP server in a daemon thread: /metrics, /healthz (liveness), /readyz (readiness)."""

    def __init__(self, metrics: WorkerMetrics, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        self.metrics = metrics
        handler = _handler_for(metrics)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:  # typically a second worker on the same host and port
            raise ConfigError(
                f"cannot serve /metrics on port {port}: {exc.strerror or exc}; give each worker on a "
                "host its own STREAMFS_METRICS_PORT (0 picks a free one) or run it with --no-metrics"
            ) from None
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="streamfs-health", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_for(metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                ok = metrics.healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain")
            elif self.path.startswith("/readyz"):
                ok = metrics.ready
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler
