"""The confluent-kafka client and the real broker agree: nothing lost, order per key kept."""

from __future__ import annotations

import time
from collections import defaultdict

from confluent_kafka import Consumer, Producer

MESSAGES = 10_000
KEYS = 50


def test_keyed_messages_round_trip_with_per_key_order(kafka_bootstrap, new_topic):
    topic = new_topic(partitions=3)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )
    sent: dict[bytes, list[bytes]] = defaultdict(list)
    for i in range(MESSAGES):
        key = f"project:user-{i % KEYS}".encode()
        value = f'{{"seq":{i},"user":{i % KEYS}}}'.encode()
        producer.produce(topic, key=key, value=value)
        sent[key].append(value)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{topic}.reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, list[bytes]] = defaultdict(list)
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    count = 0
    deadline = time.monotonic() + 60
    try:
        while count < MESSAGES and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                received[msg.key()].append(msg.value())
                partitions_of_key[msg.key()].add(msg.partition())
                count += 1
    finally:
        consumer.close()

    assert count == MESSAGES
    assert received == sent  # same content, and for each key the same order
    assert all(len(p) == 1 for p in partitions_of_key.values())  # a key stays on one partition
    assert len({p for ps in partitions_of_key.values() for p in ps}) == 3  # all partitions used
