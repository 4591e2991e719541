"""librdkafka's own lines reach Python logging, not the terminal as raw ``%3|...`` text."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer

from eventsieve.kafka import durable_producer_config

UNREACHABLE = "127.0.0.1:9"  # the discard port: nothing listens, connecting is refused


def test_a_clients_log_lines_go_to_the_librdkafka_logger(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="librdkafka")
    producer = Producer(durable_producer_config(UNREACHABLE, **{"message.timeout.ms": 1_000}))
    producer.produce("t", b"v")
    deadline = time.monotonic() + 10
    while not caplog.records and time.monotonic() < deadline:
        producer.poll(0.2)
    producer.flush(2)
    lines = [r.getMessage() for r in caplog.records if r.name == "librdkafka"]
    assert any(UNREACHABLE in line for line in lines), lines
    assert "|FAIL|" not in capfd.readouterr().err
