"""The endpoint's producer places each key where the stream expects it (no re-key detour)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from producers.publisher import producer_config
from streams.partitioning import partition_for


def test_records_land_on_the_partition_the_stream_computes(kafka_bootstrap, new_topic):
    topic = new_topic(partitions=6)
    producer = Producer(producer_config(kafka_bootstrap))
    keys = [f"demo:user-{i}".encode() for i in range(200)]
    for key in keys:
        producer.produce(topic, key=key, value=b"x")
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{topic}.r",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    placed: dict[bytes, int] = {}
    try:
        for _ in range(60):
            for m in consumer.consume(200, 0.5):
                if m.error() is None:
                    placed[m.key()] = m.partition()
            if len(placed) == len(keys):
                break
    finally:
        consumer.close()
    assert len(placed) == len(keys)
    assert {k: p for k, p in placed.items() if p != partition_for(k, 6)} == {}
    assert len(set(placed.values())) == 6
