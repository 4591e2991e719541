"""Assembles a running sink from Settings: migrate, then consume and write until stopped."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer
from prometheus_client import start_http_server

from eventsieve.config import Settings
from eventsieve.errors import ServiceUnavailableError
from eventsieve.kafka import durable_producer_config, sink_consumer_config
from eventsieve.logging import get_logger
from eventsieve.ratelog import RateLog
from eventsieve.services import clickhouse_url, kafka_bootstrap
from sinks.batching import Backoff, FlushPolicy
from sinks.clickhouse import ClickHouse
from sinks.dlq import DlqSender
from sinks.metrics import SinkMetrics
from sinks.migrate import MigrationResult, migrate
from sinks.writer import SinkWriter, routes_for

log = get_logger(__name__)


def connect(settings: Settings) -> ClickHouse:
    """A ClickHouse connection to the configured database."""
    # Connect to `default`: our database may not exist before the first migration.
    return ClickHouse(clickhouse_url(settings, "default"), settings.clickhouse.database)


def migrate_when_ready(ch: ClickHouse, settings: Settings, stop: threading.Event) -> bool:
    """Run the migrations, waiting (with backoff) while ClickHouse does not answer.

    Returns False when ``stop`` was set before ClickHouse answered.
    """
    backoff = Backoff(settings.sink.retry_initial_s, settings.sink.retry_max_s)
    while not stop.is_set():
        try:
            result: MigrationResult = migrate(
                ch, settings.sink.dedup_window, settings.clickhouse.cluster
            )
        except ServiceUnavailableError as exc:
            delay = backoff.next_delay()
            log.warning("ClickHouse not ready for migrations", error=str(exc), retry_in_s=delay)
            stop.wait(delay)
            continue
        log.info(
            "schema ready",
            version=result.version,
            applied=list(result.applied),
            server=".".join(map(str, result.server_version)),
        )
        return True
    return False


FAILPOINT_ENV = "EVENTSIEVE_SINK_FAILPOINT"


def failpoint_from_env() -> Callable[[str], None] | None:
    """A failpoint hook from ``$EVENTSIEVE_SINK_FAILPOINT`` (crash tests only).

    ``after_insert`` makes the sink hang right after ClickHouse acknowledged a
    batch and before its offsets are committed, logging ``failpoint reached``,
    so a test can ``kill -9`` it at exactly that point. Unset: no hook.
    """
    wanted = os.environ.get(FAILPOINT_ENV)
    if not wanted:
        return None

    def hook(step: str) -> None:
        if step == wanted:
            log.warning("failpoint reached", step=step)
            for handler in logging.getLogger().handlers:
                handler.flush()
            while True:
                time.sleep(3600)

    return hook


def build_writer(settings: Settings, metrics: SinkMetrics | None = None) -> SinkWriter:
    """A SinkWriter wired to the configured Kafka and ClickHouse (not yet subscribed)."""
    bootstrap = kafka_bootstrap(settings)
    sink = settings.sink
    return SinkWriter(
        consumer=Consumer(sink_consumer_config(bootstrap, sink.group_id)),
        clickhouse=connect(settings),
        dlq=DlqSender(Producer(durable_producer_config(bootstrap)), settings.topics.dlq),
        routes=routes_for(settings.topics.clean, settings.topics.dropped),
        policy=FlushPolicy(sink.batch_max_rows, sink.batch_max_interval_s),
        backoff=Backoff(sink.retry_initial_s, sink.retry_max_s),
        metrics=metrics,
        failpoint=failpoint_from_env(),
        # Insert in the background while the next batch is consumed and decoded.
        concurrent=True,
    )


def tune_gc() -> None:
    """Fewer garbage collections while batches of 50k rows pile up.

    A batch is hundreds of thousands of small acyclic containers (row tuples,
    property lists, decoded dicts); with the default thresholds the collector
    rescans them over and over, which measured as 2-3x slower row building.
    Objects alive at start are frozen out of collection; young-generation
    collections run every 50k allocations instead of 700.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (glibc's largest allowed value on
# 64-bit); freed memory is given back to the system only past the trim size.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 512 * 1024 * 1024


def tune_malloc() -> bool:
    """Keep freed memory for the next batch instead of giving it back at once.

    Every chunk of a batch allocates a few MB (the values joined, the
    decoder's arrays, the laid-out strings) and frees them a moment later.
    With glibc's defaults those blocks are mapped fresh each time or trimmed
    off the heap when freed, so every page is faulted in again: about 1,500
    page faults per 4,096 records, which measured as half of the decoding
    time. Here the heap keeps up to ``_TRIM_THRESHOLD`` of free memory (the
    sink's resident memory stays at its peak, about one batch's worth).
    Returns False where this is not glibc (nothing is changed then).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mmap_set: bool = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    trim_set: bool = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return trim_set and mmap_set


# The sink's periodic rate line: rows written, records sent to the DLQ, retried flushes.
RATES = {
    "rows": "eventsieve_sink_rows_written_total",
    "dlq": "eventsieve_sink_dlq_records_total",
    "retries": "eventsieve_sink_retries_total",
}


def run_sink(settings: Settings, stop: threading.Event) -> None:
    """The ``eventsieve sink`` process: migrations, metrics endpoint, then the loop."""
    tune_gc()
    tune_malloc()
    metrics = SinkMetrics()
    if settings.sink.metrics_port:
        # Every interface, like the worker's: Prometheus scrapes from another host or container.
        start_http_server(settings.sink.metrics_port, registry=metrics.registry)
    ch = connect(settings)
    try:
        if not migrate_when_ready(ch, settings, stop):
            return
    finally:
        ch.close()
    writer = build_writer(settings, metrics)
    log.info(
        "sink started",
        topics=list(writer.routes),
        group_id=settings.sink.group_id,
        database=settings.clickhouse.database,
    )
    rate_log = RateLog(metrics.registry, RATES).start()
    writer.run(stop)
    rate_log.stop()
    log.info("sink stopped")
