"""Prometheus metrics of the sink: rows written, batch size and latency, retries, lag.

Metrics live in a registry passed in (a fresh one per writer in tests), so two
writers in one process never collide on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SinkMetrics:
    """The sink's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rows_written = Counter(
            "eventsieve_sink_rows_written_total",
            "Rows acknowledged by ClickHouse, per table.",
            ["table"],
            registry=r,
        )
        self.records_consumed = Counter(
            "eventsieve_sink_records_consumed_total",
            "Kafka records consumed, per topic.",
            ["topic"],
            registry=r,
        )
        self.dlq_records = Counter(
            "eventsieve_sink_dlq_records_total",
            "Records sent to the DLQ, per error type.",
            ["error_type"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "eventsieve_sink_batch_rows",
            "Event rows per flushed batch.",
            buckets=(10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000),
            registry=r,
        )
        self.flush_seconds = Histogram(
            "eventsieve_sink_flush_seconds",
            "Time from flush start to committed offsets (inserts + DLQ + commit).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.retries = Counter(
            "eventsieve_sink_retries_total",
            "Failed flush attempts that were retried after a backoff.",
            registry=r,
        )
        self.commits_failed = Counter(
            "eventsieve_sink_commit_failures_total",
            "Offset commits that failed after a successful insert (the batch is re-read).",
            registry=r,
        )
        self.paused = Gauge(
            "eventsieve_sink_paused",
            "1 while consumption is paused because ClickHouse or Kafka is unavailable.",
            registry=r,
        )
        self.lag = Gauge(
            "eventsieve_sink_lag_records",
            "Records between the sink's position and the partition's end (as of the last fetch).",
            ["topic", "partition"],
            registry=r,
        )
