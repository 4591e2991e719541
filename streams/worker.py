"""Starting a worker process: topics checked, metrics served, the configured engine run.

Kept apart from streams/app.py and streams/engine.py so building either has
no side effects; this module is what ``eventsieve worker`` calls. Faust is
imported only when the ``faust`` engine runs.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

from eventsieve.config import Settings
from eventsieve.kafka import admin_client, ensure_eventsieve_topics, ensure_topics
from eventsieve.logging import configure_logging, get_logger
from eventsieve.ratelog import RateLog
from eventsieve.services import kafka_bootstrap
from schemas.topology import (
    ORDER_STORE,
    USER_STORE,
    changelog_topic,
    faust_changelog_topic,
    rekey_topic,
)
from streams.engine import Engine
from streams.errors import StreamsError
from streams.instance import claim_instance
from streams.metrics import StreamMetrics
from streams.store import MemoryStores, RocksStores, StoreFactory

log = get_logger(__name__)


def prepare_topics(settings: Settings) -> None:
    """Create missing topics, then check that partition counts agree.

    Tables are co-partitioned with their source topics: a raw topic with more
    or fewer partitions than ``topics.partitions`` would put one user's state
    on two partitions, so the worker refuses to start instead.
    """
    bootstrap = kafka_bootstrap(settings)
    topics = settings.topics
    ensure_eventsieve_topics(settings)
    ensure_topics(bootstrap, [rekey_topic(settings)], topics.partitions, topics.replication_factor)
    names: tuple[str, ...] = (topics.raw, topics.orders, rekey_topic(settings))
    # Every changelog exists, with the partitions of its source, before any
    # consumer starts: Faust's assignor ignores a changelog topic not yet in
    # the cluster metadata, and its agent then fails on every record of it.
    name_of = changelog_topic if settings.streams.engine == "kafka" else faust_changelog_topic
    changelogs = [name_of(settings, store) for store in (USER_STORE, ORDER_STORE)]
    ensure_topics(
        bootstrap,
        changelogs,
        topics.partitions,
        topics.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    names = (*names, *changelogs)
    partitions = _partition_counts(bootstrap, names)
    for name in names:
        found = partitions[name]
        if found != topics.partitions:
            raise StreamsError(
                f"topic {name!r} has {found} partitions, the configuration says "
                f"{topics.partitions} (topics.partitions): state would be split"
            )


def _partition_counts(
    bootstrap: str, names: tuple[str, ...], timeout: float = 30.0
) -> dict[str, int]:
    """Partition count per topic, waiting for topics created a moment ago.

    A broker answers CreateTopics before every broker's metadata shows the new
    topic (KRaft propagates it asynchronously), so the first listing can miss
    a topic that ``ensure_topics`` has just created.
    """
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        found = {
            name: len(metadata.topics[name].partitions)
            for name in names
            if name in metadata.topics and metadata.topics[name].error is None
        }
        missing = [name for name in names if not found.get(name)]
        if not missing:
            return found
        if time.monotonic() > deadline:
            raise StreamsError(f"topics {missing} do not show in the broker's metadata")
        time.sleep(0.2)


# The worker's periodic rate line: records decided, of which dropped, and sent to the DLQ.
RATES = {
    "decided": "eventsieve_stream_events",
    "dropped": "eventsieve_stream_dropped",
    "dlq": "eventsieve_stream_dlq",
}


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run one stream worker of the configured engine until it is stopped (SIGTERM/SIGINT)."""
    configure_logging(loglevel)
    prepare_topics(settings)
    metrics = StreamMetrics()
    metrics.serve(settings.streams.metrics_port)
    RateLog(metrics.registry, RATES).start()
    log.info(
        "worker starting",
        engine=settings.streams.engine,
        app_id=settings.streams.app_id,
        raw=settings.topics.raw,
        partitions=settings.topics.partitions,
        store=settings.streams.store,
        metrics_port=settings.streams.metrics_port,
    )
    if settings.streams.engine == "kafka":
        _run_kafka(settings, metrics)
    else:
        _run_faust(settings, metrics, loglevel)


def _run_kafka(settings: Settings, metrics: StreamMetrics) -> None:
    """The kafka engine in this thread; a fatal error propagates (non-zero exit)."""
    instance = claim_instance(Path(settings.streams.data_dir), settings.streams.app_id)
    stores: StoreFactory = (
        RocksStores(instance.directory) if settings.streams.store == "rocksdb" else MemoryStores()
    )
    engine = Engine(settings, stores, instance.transactional_id, metrics=metrics)

    def stop(signum: int, frame: Any) -> None:
        engine.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        engine.run()
    finally:
        instance.release()
    log.info("worker stopped", batches=engine.batches)


def _run_faust(settings: Settings, metrics: StreamMetrics, loglevel: str) -> None:
    import faust

    from streams.app import build_app

    class _Worker(faust.Worker):
        """Faust's worker, with our structured logging instead of Faust's own format."""

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            """Runs once Faust has set up logging at start: put structlog's handler back."""
            configure_logging(logging.getLevelName(level))

    app = build_app(settings, metrics=metrics)
    worker = _Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
