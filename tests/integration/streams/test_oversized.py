"""A record published straight to events.raw near the broker's size limit, on both engines.

The clean record it would become is larger than Kafka takes; before, the send
failed inside the Faust agent, the offset moved past it and the event was
gone without a trace. Now it is parked in the DLQ (truncated, reason
``too_large``) and the records after it are decided as usual.
"""

from __future__ import annotations

from eventsieve.config import Settings
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
    big = _keyed("huge", properties={"blob": "x" * 960_000})
    assert len(big[2]) > 960_000
    records = [kit.Raw(*big), *(kit.Raw(*_keyed(f"after-{i}", name=f"e{i}")) for i in range(5))]
    kit.publish(test_settings, records)
    worker = worker_factory(test_settings)
    found = kit.collect(test_settings, len(records), [worker])
    final = found.final()
    parked = {k: v for k, v in final.items() if v[0] == "dlq"}
    assert list(parked.values()) == [("dlq", "too_large")]
    assert [final[f"after-{i}"] for i in range(5)] == [("clean", "")] * 5
    assert worker.alive()
