"""Starting a worker process: topics checked, metrics served, the Faust worker run.

Kept apart from streams/app.py so building the app has no side effects; this
module is what ``eventsieve worker`` calls.
"""

from __future__ import annotations

import logging
import time

import faust
from confluent_kafka.admin import AdminClient

from eventsieve.config import Settings
from eventsieve.kafka import ensure_eventsieve_topics, ensure_topics
from eventsieve.logging import configure_logging, get_logger
from eventsieve.services import kafka_bootstrap
from streams.app import build_app, rekey_topic
from streams.errors import StreamsError
from streams.metrics import StreamMetrics

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
    names = (topics.raw, topics.orders, rekey_topic(settings))
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
    admin = AdminClient({"bootstrap.servers": bootstrap})
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


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run one stream worker until it is stopped (SIGTERM/SIGINT)."""
    configure_logging(loglevel)
    prepare_topics(settings)
    metrics = StreamMetrics()
    metrics.serve(settings.streams.metrics_port)
    app = build_app(settings, metrics=metrics)
    log.info(
        "worker starting",
        app_id=settings.streams.app_id,
        raw=settings.topics.raw,
        partitions=settings.topics.partitions,
        store=settings.streams.store,
        metrics_port=settings.streams.metrics_port,
    )
    worker = _Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker, with our structured logging instead of Faust's own format."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Runs once Faust has set up logging at start: put structlog's handler back."""
        configure_logging(logging.getLevelName(level))
