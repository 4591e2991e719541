"""faust-streaming (via aiokafka) works against our broker: a copy agent delivers everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer

APP = Path(__file__).with_name("faust_copy_app.py")
MESSAGES = 2_000


def test_faust_agent_copies_every_message(kafka_bootstrap, new_topic, tmp_path):
    source, sink = new_topic(partitions=3), new_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(MESSAGES):
        producer.produce(source, key=f"k{i % 7}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0

    env = {
        **os.environ,
        "SMOKE_APP_ID": f"{source}.copier",
        "SMOKE_BOOTSTRAP": kafka_bootstrap,
        "SMOKE_SOURCE": source,
        "SMOKE_SINK": sink,
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, str(APP), f"--datadir={tmp_path}", "worker", "--loglevel=warn"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{sink}.reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([sink])
    values: list[bytes] = []
    deadline = time.monotonic() + 90
    try:
        while len(values) < MESSAGES and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            values.extend(m.value() for m in consumer.consume(500, 1.0) if m.error() is None)
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()

    assert sorted(values) == sorted(f"v{i}".encode() for i in range(MESSAGES))
