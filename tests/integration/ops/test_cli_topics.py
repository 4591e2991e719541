"""``eventsieve publish`` and ``eventsieve tail`` against the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

import schemas
from ops.cli import app

ROOT_CONFIG = ["--config", "eventsieve.toml"]


@pytest.fixture
def runner(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.chdir(Path(__file__).resolve().parents[3])
    return CliRunner()


def lines(output: str) -> list[dict]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_publish_then_tail_every_format(runner: CliRunner, kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(partitions=3)
    events = (
        b'{"project":"demo","name":"Signup","user_id":"u1","event_id":"e-1","properties":{"n":3}}\n'
        b"\n"
        b'{"project":"demo","name":"pageview","ip":"203.0.113.9","user_agent":"UA/1",'
        b'"domain":"example.com"}\n'
    )
    published = runner.invoke(app, [*ROOT_CONFIG, "publish", "-", "--topic", topic], input=events)
    assert published.exit_code == 0, published.output
    reports = lines(published.stdout)
    assert reports[0]["key"] == "demo:u1"
    assert reports[0]["event_id"] == "e-1"
    visitor_key = reports[1]["key"]
    assert visitor_key.startswith("demo:")
    assert len(visitor_key) == len("demo:") + 32

    # Records in the other formats a topic may hold: JSON, another schema, garbage.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b'{"project":"demo","name":"direct json"}', b"demo:x", partition=0)
    dlq: schemas.DlqRecord = {
        "key": b"k",
        "value": b"\x00",
        "headers": [],
        "topic": "t",
        "partition": 0,
        "offset": 1,
        "record_timestamp": None,
        "error_type": "truncated",
        "error": "cut",
        "stage": "decode",
        "failed_at": 5,
    }
    producer.produce(topic, schemas.encode_dlq(dlq), b"k", partition=0)
    producer.produce(topic, b"\xc3\x01garbage!", b"k", partition=0)
    assert producer.flush(20) == 0

    tail_args = ["tail", topic, "--from-beginning", "--max", "5", "--idle-timeout", "20"]
    tailed = runner.invoke(app, [*ROOT_CONFIG, *tail_args, "--raw-events"])
    assert tailed.exit_code == 0, tailed.output
    views = lines(tailed.stdout)
    assert len(views) == 5
    by_format: dict[str, list[dict]] = {}
    for view in views:
        assert {"topic", "partition", "offset", "key", "timestamp", "format"} <= set(view)
        by_format.setdefault(view["format"], []).append(view)

    raws = sorted(by_format["avro:raw_event"], key=lambda v: v["value"]["name"])
    assert [v["value"]["name"] for v in raws] == ["Signup", "pageview"]
    assert raws[0]["value"]["properties"] == {"n": "3"}
    assert raws[1]["value"]["visitor_id"] == raws[1]["key"].split(":", 1)[1]
    (json_view,) = by_format["json:raw_event"]
    assert json_view["value"]["name"] == "direct json"
    assert json_view["value"]["event_id"] == schemas.derived_event_id(
        topic, json_view["partition"], json_view["offset"]
    )
    (dlq_view,) = by_format["avro:dlq_record"]
    assert dlq_view["value"]["error_type"] == "truncated"
    (bad,) = by_format["undecodable"]
    assert bad["error"].startswith("unknown_fingerprint")
    assert bad["value_base64"] == "wwFnYXJiYWdlIQ=="

    plain = runner.invoke(
        app, [*ROOT_CONFIG, "tail", topic, "--from-beginning", "--max", "5", "--plain-json"]
    )
    (json_plain,) = [v for v in lines(plain.stdout) if v["format"] == "json"]
    assert json_plain["value"] == {"project": "demo", "name": "direct json"}


def test_publish_checks_every_line_before_writing(
    runner: CliRunner, kafka_bootstrap: str, new_topic
) -> None:
    topic = new_topic(partitions=1)
    events = b'{"project":"demo","name":"ok"}\n{"project":"nope","name":"x"}\n{"name":"x"}\n'
    result = runner.invoke(app, [*ROOT_CONFIG, "publish", "-", "--topic", topic], input=events)
    assert result.exit_code != 0
    message = str(result.exception)
    assert "line 2: unknown project 'nope'" in message
    assert "line 3: missing required field 'project'" in message
    # Then a good publish: it must be the first record of the topic.
    good = runner.invoke(
        app,
        [*ROOT_CONFIG, "publish", "-", "--topic", topic],
        input=b'{"project":"demo","name":"after"}\n',
    )
    assert good.exit_code == 0, good.output
    assert lines(good.stdout)[0]["offset"] == 0
    tail_args = ["tail", topic, "--from-beginning", "--max", "1", "--idle-timeout", "20"]
    (view,) = lines(runner.invoke(app, [*ROOT_CONFIG, *tail_args]).stdout)
    assert (view["offset"], view["value"]["name"]) == (0, "after")
