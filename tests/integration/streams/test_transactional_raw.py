"""A raw topic written in small transactions, as the endpoint writes it, decides at speed.

Every committed transaction leaves a marker that takes an offset, so a raw
partition the endpoint fills one request at a time has a gap after nearly
every record. No engine may treat each gap as a loss to investigate.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Producer

from eventsieve.kafka import durable_producer_config
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import new_raw_event
from streams.partitioning import partition_for

T0 = 1_767_225_600_000
RECORDS = 300
DEADLINE_S = 90.0  # both engines decide 300 records in seconds; a gap probe per marker took minutes


def test_records_between_transaction_markers_are_all_decided_in_time(
    test_settings, worker_factory, kit
):
    settings = test_settings
    producer = Producer(
        durable_producer_config(
            kafka_bootstrap(settings), **{"transactional.id": f"raw-{uuid.uuid4().hex}"}
        )
    )
    producer.init_transactions(30)
    partitions = settings.topics.partitions
    ids = []
    for i in range(RECORDS):
        user = f"u{i % 40}"
        event = new_raw_event(
            project="demo", name=f"view {i}", user_id=user, timestamp=T0 + i, received_at=T0 + i
        )
        key = topic_key("demo", user).encode()
        producer.begin_transaction()
        producer.produce(
            settings.topics.raw, encode_raw(event), key, partition_for(key, partitions)
        )
        producer.commit_transaction(30)  # one record, one marker: as the endpoint writes
        ids.append(event["event_id"])

    started = time.monotonic()
    worker = worker_factory(settings)
    found = kit.collect(settings, RECORDS, [worker], timeout=DEADLINE_S)
    took = time.monotonic() - started
    assert found.final() == dict.fromkeys(ids, ("clean", ""))
    assert took < DEADLINE_S
