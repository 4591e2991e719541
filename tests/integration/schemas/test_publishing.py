"""The direct-publisher examples of docs/publishing.md, run against the real broker.

The code is taken from the document itself (the fenced block after each
``<!-- example: NAME -->`` marker), so the documentation cannot drift from
what works. Each example writes to a fresh topic; the test reads the record
back and decodes it with the eventsieve codec.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer

import schemas

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "publishing.md"


def example(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"no example {name!r} in {DOC}"
    return match.group(1)


def read_records(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records = []
    try:
        for message in consumer.consume(num_messages=count, timeout=timeout):
            assert message.error() is None, message.error()
            records.append(message)
    finally:
        consumer.close()
    assert len(records) == count, f"expected {count} record(s) on {topic}, got {len(records)}"
    return records


def example_env(bootstrap: str, topic: str) -> dict[str, str]:
    return os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EVENTSIEVE_TOPIC": topic,
        "EVENTSIEVE_SCHEMA": str(ROOT / "schemas" / "avro" / "raw_event.avsc"),
    }


def test_python_avro_example(kafka_bootstrap: str, new_topic, tmp_path: Path) -> None:
    topic = new_topic(partitions=1)
    script = tmp_path / "publish_example.py"
    script.write_text(example("python-avro"), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        env=example_env(kafka_bootstrap, topic),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()

    (record,) = read_records(kafka_bootstrap, topic, 1)
    assert record.key() == b"demo:user_123"
    assert record.value()[:2] == b"\xc3\x01"
    event = schemas.decode_raw(record.value())
    assert event["event_id"] == event_id
    assert event["project"] == "demo"
    assert event["user_id"] == "user_123"
    assert event["properties"] == {"plan": "pro", "amount": "49.90"}
    assert event["order_id"] == "ord-1001"
    assert event["timestamp"] == event["received_at"] > 1_700_000_000_000
    assert event["source"] == "direct"
    assert event["ip"] is None  # defaults applied by the writer
    assert schemas.topic_key(event["project"], schemas.user_key(event)) == "demo:user_123"


@pytest.mark.skipif(
    shutil.which("kcat") is None,
    reason="kcat is not installed (Debian package 'kcat'; the CI script installs it)",
)
def test_kcat_json_example(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(partitions=1)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example("kcat-json")],
        env=example_env(kafka_bootstrap, topic),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    (record,) = read_records(kafka_bootstrap, topic, 1)
    assert record.key() == b"demo:user_123"
    _, kafka_ts = record.timestamp()
    event = schemas.decode_raw(record.value(), received_at=kafka_ts)
    assert event["event_id"] == "signup-user_123"
    assert event["name"] == "Signup"
    assert schemas.normalise_event_name(event["name"]) == "signup"
    assert event["timestamp"] == 1_795_860_000_000  # 2026-11-28T10:00:00Z
    assert event["received_at"] == kafka_ts
    assert event["properties"] == {"plan": "pro", "seats": "3"}
