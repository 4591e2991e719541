"""Building events: complete dicts with defaults, and the stream's outputs from a raw event."""

from __future__ import annotations

import uuid

import pytest

import schemas
from schemas import registry


def test_new_raw_event_fills_every_field() -> None:
    event = schemas.new_raw_event(project="p", name="n", received_at=1000)
    fields = {f["name"] for f in registry.current(registry.RAW_EVENT).schema["fields"]}
    assert set(event) == fields
    assert event["timestamp"] == 1000
    assert event["source"] == "direct"
    assert event["kind"] == "track"
    uuid.UUID(event["event_id"])


def test_new_raw_event_defaults_are_not_shared() -> None:
    a = schemas.new_raw_event(project="p", name="n")
    a["properties"]["x"] = "1"
    assert schemas.new_raw_event(project="p", name="n")["properties"] == {}


def test_new_raw_event_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="userId"):
        schemas.new_raw_event(project="p", name="n", userId="u")


def test_now_ms_is_milliseconds() -> None:
    assert 1_700_000_000_000 < schemas.now_ms() < 10_000_000_000_000


def test_derived_event_id_is_stable_per_record_position() -> None:
    one = schemas.derived_event_id("events.raw", 1, 42)
    assert one == schemas.derived_event_id("events.raw", 1, 42)
    assert one != schemas.derived_event_id("events.raw", 1, 43)
    assert one != schemas.derived_event_id("events.raw", 2, 42)
    assert uuid.UUID(one).version == 5


def test_clean_event_removes_ip_and_rejects_unknown_derived_fields() -> None:
    raw = schemas.new_raw_event(project="p", name="n", ip="1.2.3.4")
    clean = schemas.clean_event(raw, normalised_name="n", user_key="", decided_at=1, os="Linux")
    assert "ip" not in clean
    assert clean["os"] == "Linux"
    assert raw["ip"] == "1.2.3.4"  # the input is not modified
    fields = {f["name"] for f in registry.current(registry.CLEAN_EVENT).schema["fields"]}
    assert set(clean) == fields
    with pytest.raises(TypeError, match="browsr"):
        schemas.clean_event(raw, normalised_name="n", user_key="", decided_at=1, browsr="x")


def test_dropped_event_has_every_field() -> None:
    raw = schemas.new_raw_event(project="p", name="n", ip="1.2.3.4")
    dropped = schemas.dropped_event(
        raw, reason=schemas.DropReason.INVALID, stage=schemas.Stage.VALIDATE, decided_at=2
    )
    fields = {f["name"] for f in registry.current(registry.DROPPED_EVENT).schema["fields"]}
    assert set(dropped) == fields
    assert (dropped["reason"], dropped["stage"], dropped["detail"]) == ("invalid", "validate", "")
