"""A client that retries a request after a 503 is never counted twice.

A request's records go to Kafka together. If any of them fails (here one
record's delivery is reported failed, as a delivery timeout would, while the
others really reach the broker), the endpoint answers 503 and the client
retries the whole request. What readers of the raw topic see afterwards must
be each event once: none of the failed attempt, all of the retry.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
from confluent_kafka import KafkaError, Producer

from producers.publisher import Publisher, producer_config

SERVER = {"Authorization": "Bearer demo-secret-key"}
FAILING_USER = "u-unlucky"


class FailsOnce(Producer):
    """The real producer, except that the first record of FAILING_USER is reported failed."""

    armed = True

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        if FailsOnce.armed and key is not None and FAILING_USER.encode() in key:
            FailsOnce.armed = False
            kwargs["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
            return
        super().produce(topic, value, key, **kwargs)


def test_a_request_retried_after_a_503_lands_each_event_once(make_settings, serve, read_raw):
    settings = make_settings()
    publisher = Publisher(
        producer_config(settings.kafka.bootstrap_servers or ""),
        settings.topics.raw,
        delivery_timeout_s=5.0,
        retry_after_s=1,
        producer_factory=FailsOnce,
    )
    endpoint = serve(settings, publisher=publisher)
    batch = {
        "events": [
            {"name": "Report Exported", "user_id": user, "properties": {"n": str(i)}}
            for i, user in enumerate(["u-first", "u-second", FAILING_USER, "u-last"])
        ]
    }
    with httpx.Client(base_url=endpoint.url, timeout=30) as http:
        failed = http.post("/v1/events", headers=SERVER, json=batch)
        assert failed.status_code == 503
        assert failed.headers["retry-after"] == "1"
        time.sleep(1.1)  # as the client is told
        retried = http.post("/v1/events", headers=SERVER, json=batch)
        assert retried.status_code == 202
    landed = Counter(event["user_id"] for _key, event in read_raw(endpoint.topic))
    assert landed == {"u-first": 1, "u-second": 1, FAILING_USER: 1, "u-last": 1}
