"""Which confirmation keeps an order id follows event time, not arrival order.

Two users' confirmations with one order id start on different raw
partitions and meet on one ``events.orders`` partition in whatever order the
worker reads them. Here the order is forced: the *later* confirmations (in
event time) are published and decided first, the earlier ones only once
ClickHouse holds the first decisions, as in a backlog drained late. The
earliest confirmation (ties: the lower event id) must end up holding the
order id and every other one must be ``duplicate_order`` in ClickHouse,
exactly as if they had arrived in event-time order. The worker and the sink
are real processes on the real broker and ClickHouse, on both engines.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import pytest
from confluent_kafka import Producer

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from ops.replay import ReplayError, latest_decisions
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import RawEvent, new_raw_event
from streams.partitioning import partition_for
from streams.replay import ReplayRange

T0 = 1_767_225_600_000
HOUR = 3_600_000
BACKLOG = 23_040_000  # 6.4 hours: the gap seen between the two confirmations of one order


def users_on_distinct_partitions(tag: str, count: int, partitions: int) -> list[str]:
    """``count`` user ids of project demo whose raw records land on different partitions
    (cycling through them when there are more users than partitions)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        user = f"{tag}-u{i}"
        found.setdefault(partition_for(topic_key("demo", user).encode(), partitions), user)
        i += 1
    by_partition = [found[p] for p in sorted(found)]
    extra = [f"{tag}-x{i}" for i in range(max(0, count - partitions))]
    return (by_partition + extra)[:count]


def confirmation(event_id: str, user: str, order_id: str, t: int) -> RawEvent:
    return new_raw_event(
        project="demo",
        name="confirmation",
        event_id=event_id,
        user_id=user,
        order_id=order_id,
        timestamp=t,
        received_at=t,
    )


def publish(settings: Settings, events: Iterable[RawEvent]) -> None:
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap(settings), "enable.idempotence": True}
    )
    partitions = settings.topics.partitions
    for event in events:
        key = topic_key(event["project"], event["user_id"] or "").encode()
        producer.produce(
            settings.topics.raw,
            key=key,
            value=encode_raw(event),
            partition=partition_for(key, partitions),
        )
    assert producer.flush(30) == 0


def decisions(settings: Settings) -> dict[str, str]:
    """ClickHouse's latest decision per event id (empty until the sink made the table)."""
    try:
        return latest_decisions(settings, ReplayRange(0))
    except ReplayError:  # ClickHouse's error, wrapped: the table does not exist yet
        return {}


def wait_for(settings: Settings, pipeline, want: dict[str, str], timeout: float = 120.0):
    """Wait until ClickHouse's latest decision of every id in ``want`` is the one given."""
    deadline = time.monotonic() + timeout
    while True:
        pipeline.assert_alive()
        found = decisions(settings)
        got = {event_id: found.get(event_id) for event_id in want}
        if got == want:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"ClickHouse holds {got}, expected {want}\n{pipeline.log()}")
        time.sleep(0.5)


def test_the_earliest_confirmation_keeps_the_order_id_whatever_the_arrival_order(
    pipeline_settings: Settings, worker_and_sink
):
    settings = pipeline_settings
    tag = uuid.uuid4().hex[:8]
    u = users_on_distinct_partitions(tag, 3, settings.topics.partitions)
    order = {name: f"{tag}-{name}" for name in ("backlog", "tie", "three")}

    def eid(name: str) -> str:
        return f"{tag}-{name}"

    # Decided first: the later confirmation of each order id.
    late = [
        # the backlog: the merchant's confirmation, 6.4 h after the customer's
        confirmation(eid("backlog-late"), u[0], order["backlog"], T0 + BACKLOG),
        # equal event times: the higher event id first
        confirmation(eid("tie-b"), u[1], order["tie"], T0),
        # three confirmations of one order id, the latest first
        confirmation(eid("three-3"), u[2], order["three"], T0 + 2 * HOUR),
    ]
    # Decided second, once the late ones are in ClickHouse.
    early = [
        confirmation(eid("backlog-early"), u[1], order["backlog"], T0),
        confirmation(eid("tie-a"), u[2], order["tie"], T0),
        confirmation(eid("three-1"), u[0], order["three"], T0),
        confirmation(eid("three-2"), u[1], order["three"], T0 + HOUR),
    ]

    pipeline = worker_and_sink(settings)
    publish(settings, late)
    wait_for(settings, pipeline, {e["event_id"]: "accepted" for e in late})

    publish(settings, early)
    dup = "dropped:duplicate_order"
    expected = {
        eid("backlog-early"): "accepted",
        eid("backlog-late"): dup,
        eid("tie-a"): "accepted",
        eid("tie-b"): dup,
        eid("three-1"): "accepted",
        eid("three-2"): dup,
        eid("three-3"): dup,
    }
    found = wait_for(settings, pipeline, expected)
    # Exactly one accepted confirmation per order id: the counts are exact.
    accepted = sorted(event_id for event_id, label in found.items() if label == "accepted")
    assert accepted == [eid("backlog-early"), eid("three-1"), eid("tie-a")]
    assert len(found) == len(expected)
