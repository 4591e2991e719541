"""The pure parts of ``eventsieve tail`` and ``eventsieve publish``."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

import schemas
from eventsieve.config import Settings, load_settings
from ops.cli.topics import InvalidInputError, prepare_events, view_record
from producers.salts import FixedSalts

ROOT = Path(__file__).resolve().parents[3]
NOW = 1_795_860_000_000  # 2026-11-28T10:00:00Z


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(ROOT / "eventsieve.toml")


def view(value: bytes | None, *, json_as_raw: bool = True) -> dict:
    return view_record(
        topic="events.raw",
        partition=2,
        offset=7,
        key=b"demo:u1",
        value=value,
        timestamp_ms=NOW,
        json_as_raw=json_as_raw,
    )


def test_view_of_avro_records_of_every_schema() -> None:
    event = schemas.new_raw_event(project="demo", name="n", received_at=NOW)
    seen = view(schemas.encode_raw(event))
    assert seen["format"] == "avro:raw_event"
    assert seen["value"] == event
    assert (seen["topic"], seen["partition"], seen["offset"], seen["key"]) == (
        "events.raw",
        2,
        7,
        "demo:u1",
    )
    dropped = schemas.dropped_event(event, reason="bot", stage="bot", decided_at=NOW)
    assert view(schemas.encode_dropped(dropped))["format"] == "avro:dropped_event"


def test_view_of_json_as_the_stream_sees_it() -> None:
    seen = view(b'{"project":"demo","name":"n"}')
    assert seen["format"] == "json:raw_event"
    assert seen["value"]["event_id"] == schemas.derived_event_id("events.raw", 2, 7)
    assert seen["value"]["received_at"] == NOW
    plain = view(b'{"anything": [1]}', json_as_raw=False)
    assert (plain["format"], plain["value"]) == ("json", {"anything": [1]})


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"\xc3\x01" + b"\x00" * 9, "unknown_fingerprint"),
        (b"not json", "not_json"),
        (b'{"project":"demo","name":5}', "wrong_type"),
    ],
)
def test_view_of_undecodable_records_keeps_the_bytes(value: bytes, code: str) -> None:
    seen = view(value)
    assert seen["format"] == "undecodable"
    assert seen["error"].startswith(code)
    assert base64.b64decode(seen["value_base64"]) == value


def test_view_of_a_tombstone() -> None:
    assert view(None)["format"] == "null"


def test_prepare_events_keys_ids_and_visitor_ids(settings: Settings) -> None:
    lines = [
        b'{"project":"demo","name":"Signup","email":"Ann@Example.com"}',
        b"   ",
        b'{"project":"demo","name":"pv","ip":"203.0.113.9","user_agent":"UA","domain":"a.com",'
        b'"timestamp":"2026-11-27T23:59:59Z"}',
        b'{"project":"demo","name":"anon"}',
    ]
    salts = FixedSalts()
    first, second, third = prepare_events(lines, settings, salts=salts, received_at=NOW)
    assert first.key == b"demo:ann@example.com"
    assert schemas.decode_raw(first.value) == first.event
    assert first.event["received_at"] == NOW
    assert first.event["timestamp"] == NOW
    assert first.event["event_id"] != second.event["event_id"]
    salt = salts.salt(datetime.date(2026, 11, 28))
    assert salt is not None
    expected = schemas.visitor_id_with(salt, "203.0.113.9", "UA", "a.com")
    assert second.event["visitor_id"] == expected  # the receive day's salt, as the endpoint
    assert second.key == f"demo:{expected}".encode()
    assert third.key == b"demo:"


def test_prepare_events_refuses_an_anonymous_event_whose_day_has_no_salt(
    settings: Settings,
) -> None:
    """Salts are deleted after 48 h: an old anonymous event cannot get a visitor id."""
    lines = [b'{"project":"demo","name":"pv","ip":"203.0.113.9","received_at":1000}']
    with pytest.raises(InvalidInputError) as info:
        prepare_events(lines, settings, salts=_NoSalts(), received_at=NOW)
    [(number, message)] = info.value.problems
    assert number == 1
    assert "no visitor-id salt for 1970-01-01" in message
    assert "user_id or anonymous_id" in message


class _NoSalts:
    def salt(self, day: datetime.date) -> bytes | None:
        return None


def test_prepare_events_lists_every_bad_line(settings: Settings) -> None:
    lines = [
        b'{"project":"demo","name":"ok"}',
        b"{oops",
        b'{"project":"elsewhere","name":"x"}',
        b'{"project":"demo","name":"  "}',
        b'{"project":"demo","name":"x","interactive":"yes"}',
    ]
    with pytest.raises(InvalidInputError) as info:
        prepare_events(lines, settings, source="events.jsonl")
    assert [n for n, _ in info.value.problems] == [2, 3, 4, 5]
    message = str(info.value)
    assert message.startswith("4 invalid line(s) in events.jsonl, nothing published")
    assert "line 3: unknown project 'elsewhere' (known: " in message
    assert "line 5: wrong type for field 'interactive'" in message


def test_many_bad_lines_are_summarised(settings: Settings) -> None:
    with pytest.raises(InvalidInputError, match=r"\.\.\. and 5 more"):
        prepare_events([b"x"] * 25, settings)
