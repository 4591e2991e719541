"""Helpers for the replay tests: the live pipeline as real processes, and a fresh-run oracle.

- ``live(settings)`` starts ``eventsieve worker`` and ``eventsieve sink`` as
  subprocesses (the same ones ``eventsieve run`` starts) on the test's topics
  and database;
- ``publish`` writes raw events to the partition their key belongs to, as a
  well-behaved publisher does, and returns them as the topic holds them;
- ``fresh_run`` decides published events with the pure Processor, partition
  by partition in offset order, with fresh state: what a fresh worker over
  the whole topic decides (independent of the replay's own merge);
- ``latest``/``wait_until`` read ClickHouse's latest decision per event id.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from ops.replay import latest_decisions
from schemas.canonical import topic_key
from schemas.codecs import decode_dropped, encode_raw
from schemas.events import RawEvent
from streams.partitioning import partition_for
from streams.processor import Processor, Record, Sink
from streams.replay import ReplayRange, label_of
from streams.state import InMemoryState


@dataclass(frozen=True)
class Published:
    """A raw event as the topic holds it."""

    event: RawEvent
    partition: int
    offset: int
    value: bytes

    @property
    def key(self) -> bytes:
        return topic_key(self.event["project"], self.event["user_id"] or "").encode()


class Topic:
    """Publishes to the raw topic and remembers each record's offset."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.offsets: dict[int, int] = {}
        self.records: list[Published] = []

    def publish(self, events: Sequence[RawEvent]) -> list[Published]:
        producer = Producer(
            {"bootstrap.servers": kafka_bootstrap(self.settings), "enable.idempotence": True}
        )
        out = []
        for event in events:
            value = encode_raw(event)
            key = topic_key(event["project"], event["user_id"] or "").encode()
            partition = partition_for(key, self.settings.topics.partitions)
            producer.produce(self.settings.topics.raw, key=key, value=value, partition=partition)
            offset = self.offsets.get(partition, 0)
            self.offsets[partition] = offset + 1
            out.append(Published(event, partition, offset, value))
        assert producer.flush(30) == 0
        self.records.extend(out)
        return out


def fresh_run(settings: Settings, records: Sequence[Published]) -> dict[str, str]:
    """Every event's decision in a fresh run: each partition in offset order, fresh state.

    Valid for records placed on their key's partition and order ids used by
    one user each (the synthetic mix): then no decision depends on how
    partitions interleave.
    """
    processor = Processor(settings)
    users: dict[int, InMemoryState] = {}
    orders: dict[int, InMemoryState] = {}
    order_offsets: dict[int, int] = {}
    out: dict[str, str] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        record = Record(settings.topics.raw, r.partition, r.offset, r.key, r.value)
        outcome = processor.on_raw(record, users.setdefault(r.partition, InMemoryState()))
        assert outcome.sink is not Sink.REKEY
        if outcome.sink is Sink.ORDERS:
            [o] = outcome.outputs
            p = o.partition or 0
            offset = order_offsets.get(p, 0)
            order_offsets[p] = offset + 1
            outcome = processor.on_order(
                Record(settings.topics.orders, p, offset, o.key, o.value),
                orders.setdefault(p, InMemoryState()),
            )
        [o] = outcome.outputs
        if outcome.sink is Sink.CLEAN:
            out[r.event["event_id"]] = "accepted"
        else:
            assert outcome.sink is Sink.DROPPED
            out[r.event["event_id"]] = label_of("dropped", decode_dropped(o.value)["reason"])
    return out


def latest(settings: Settings) -> dict[str, str]:
    """ClickHouse's latest decision of every stored event."""
    return latest_decisions(settings, ReplayRange(0))


def wait_until(
    check: Callable[[], bool], what: str, pipeline: Any = None, timeout: float = 90.0
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if pipeline is not None:
            pipeline.assert_alive()
        if time.monotonic() > deadline:
            logs = pipeline.log() if pipeline is not None else ""
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.3)


@pytest.fixture
def live_settings(pipeline_settings: Settings) -> Settings:
    """The test's settings with a private worker group, state dir and sink group."""
    return pipeline_settings


@pytest.fixture
def pipeline(live_settings: Settings, worker_and_sink: Callable[[Settings], Any]) -> Iterator[Any]:
    running = worker_and_sink(live_settings)
    try:
        yield running
        running.assert_alive()
    finally:
        running.stop()
        _delete_internal_topics(kafka_bootstrap(live_settings), live_settings.streams.app_id)


def _delete_internal_topics(bootstrap: str, app_id: str) -> None:
    """The worker's changelog, assignor and re-key topics, all named ``<app_id>-...``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{app_id}-")]
    if names:
        for future in admin.delete_topics(names, operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result()


@dataclass(frozen=True)
class Kit:
    """The helpers above, as one fixture (test modules cannot import conftest)."""

    Topic: type[Topic] = Topic
    fresh_run = staticmethod(fresh_run)
    latest = staticmethod(latest)
    wait_until = staticmethod(wait_until)


@pytest.fixture
def kit() -> Kit:
    return Kit()
