"""A record published straight to events.raw near the broker's size limit, on both engines.

The clean record it would become is larger than Kafka takes; before, the send
failed inside the Faust agent, the offset moved past it and the event was
gone without a trace. Now it is parked in the DLQ (truncated, reason
``too_large``) and the records after it are decided as usual.
"""

from __future__ import annotations

from confluent_kafka import Producer

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import new_raw_event
from streams.partitioning import partition_for

T0 = 1_767_225_600_000


def _keyed(event_id: str, **fields) -> tuple[int, bytes, bytes]:
    raw = new_raw_event(
        project="demo",
        name=fields.pop("name", "signup"),
        event_id=event_id,
        user_id="u1",
        timestamp=T0,
        received_at=T0,
        **fields,
    )
    key = topic_key("demo", "u1").encode()
    return partition_for(key, 3), key, encode_raw(raw)


def test_a_record_too_large_to_carry_on_is_parked_and_the_stream_goes_on(
    test_settings: Settings, worker_factory, kit
):
    # Under the broker's limit (1,048,588 bytes); the clean record it would
    # become, with the derived fields, is over librdkafka's 1,000,000.
    partition, key, value = _keyed("huge", properties={"blob": "x" * 999_900})
    assert 999_900 < len(value) < 1_040_000
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap(test_settings), "message.max.bytes": 1_048_576}
    )
    producer.produce(test_settings.topics.raw, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0
    after = [kit.Raw(*_keyed(f"after-{i}", name=f"e{i}")) for i in range(5)]
    kit.publish(test_settings, after)
    records = [None, *after]
    worker = worker_factory(test_settings)
    found = kit.collect(test_settings, len(records), [worker])
    final = found.final()
    parked = {k: v for k, v in final.items() if v[0] == "dlq"}
    assert list(parked.values()) == [("dlq", "too_large")]
    assert [final[f"after-{i}"] for i in range(5)] == [("clean", "")] * 5
    assert worker.alive()
