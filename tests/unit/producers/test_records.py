from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventsieve.config import ProjectSettings
from producers.edge import EdgeContext
from producers.model import Submission
from producers.projects import ProjectDirectory, hash_key
from producers.records import SaltUnavailableError, new_event_id, raw_event, record
from producers.salts import FixedSalts
from schemas.canonical import visitor_id_with
from schemas.codecs import decode_raw
from schemas.reasons import EventKind, Source

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SALTS = FixedSalts()
EDGE = EdgeContext(
    RECEIVED,
    ip="198.51.100.7",
    user_agent="UA",
    ip_classification="dc_ip",
    sdk_name="python",
    sdk_version="0.2.0",
)


def test_record_round_trips_and_is_keyed_by_user():
    sub = Submission(
        Source.VERO,
        EventKind.TRACK,
        "Viewed",
        user_id="u1",
        properties={"a": "1"},
        client_time=datetime(2026, 3, 1, 11, 59, tzinfo=UTC),
        event_id="e1",
    )
    rec = record(sub, "alpha", EDGE, SALTS)
    assert rec.key == b"alpha:u1"
    event = decode_raw(rec.value)
    assert event == rec.event
    assert (event["event_id"], event["project"], event["source"], event["kind"]) == (
        "e1",
        "alpha",
        "vero",
        "track",
    )
    assert event["timestamp"] == int(datetime(2026, 3, 1, 11, 59, tzinfo=UTC).timestamp() * 1000)
    assert event["received_at"] == int(RECEIVED.timestamp() * 1000)
    assert (event["ip"], event["user_agent"], event["ip_classification"]) == (
        "198.51.100.7",
        "UA",
        "dc_ip",
    )
    assert (event["sdk_name"], event["sdk_version"]) == ("python", "0.2.0")


def test_anonymous_events_are_keyed_by_the_visitor_id():
    sub = Submission(
        Source.PLAUSIBLE,
        EventKind.TRACK,
        "$pageview",
        url="https://a.example/x",
        domain="a.example",
        sdk_name="plausible-tracker",
        sdk_version="27",
    )
    event = raw_event(sub, "alpha", EDGE, SALTS)
    salt = SALTS.salt(RECEIVED.date())
    assert salt is not None
    expected = visitor_id_with(salt, "198.51.100.7", "UA", "a.example")
    assert event["visitor_id"] == expected
    assert record(sub, "alpha", EDGE, SALTS).key == f"alpha:{expected}".encode()
    assert (event["sdk_name"], event["sdk_version"]) == ("plausible-tracker", "27")
    assert event["timestamp"] == event["received_at"]


def test_email_keys_lower_case_and_no_ip_no_visitor():
    sub = Submission(Source.VTCDN, EventKind.UPDATE_USER, "$update_user", email="A@B.co")
    rec = record(sub, "p", EdgeContext(RECEIVED), SALTS)
    assert rec.key == b"p:a@b.co"
    assert rec.event["visitor_id"] is None


def test_a_credential_shared_by_two_projects_is_refused():
    projects = [
        ProjectSettings(id="a", server_keys=(hash_key("k"),)),
        ProjectSettings(id="b", server_keys=(hash_key("k"),)),
    ]
    with pytest.raises(ValueError, match="both"):
        ProjectDirectory.from_projects(projects)


def test_directory_lookups_are_per_kind():
    directory = ProjectDirectory.from_projects(
        [
            ProjectSettings(
                id="a", tokens=("t",), server_keys=(hash_key("s"),), domains=("WWW.Shop.example",)
            )
        ]
    )
    assert directory.by_token("t") == "a"
    assert directory.by_server_key("t") is None
    assert directory.by_server_key("s") == "a"
    assert directory.by_token("s") is None
    assert directory.by_domain("shop.example") == directory.by_domain("www.SHOP.example") == "a"


def test_event_ids_are_uuid4_text():
    import uuid

    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_raw_event_has_exactly_the_schema_fields():
    from schemas.events import RAW_DEFAULTS

    event = raw_event(Submission(Source.NATIVE, EventKind.TRACK, "x"), "p", EDGE, SALTS)
    assert set(event) == {"event_id", "project", "name", "timestamp", "received_at", *RAW_DEFAULTS}


class NoSalts:
    def salt(self, day):  # type: ignore[no-untyped-def]
        return None


def test_the_visitor_id_uses_the_receive_days_salt_whatever_the_client_time():
    """Only today's salt exists at the edge: a client's old timestamp must not need another."""
    sub = Submission(Source.PLAUSIBLE, EventKind.TRACK, "$pageview", domain="a.example")
    old = Submission(
        Source.PLAUSIBLE,
        EventKind.TRACK,
        "$pageview",
        domain="a.example",
        client_time=datetime(2020, 1, 1, tzinfo=UTC),
    )
    assert (
        raw_event(sub, "alpha", EDGE, SALTS)["visitor_id"]
        == raw_event(old, "alpha", EDGE, SALTS)["visitor_id"]
    )


def test_without_a_salt_for_the_day_no_record_is_built():
    sub = Submission(Source.PLAUSIBLE, EventKind.TRACK, "$pageview", domain="a.example")
    with pytest.raises(SaltUnavailableError):
        raw_event(sub, "alpha", EDGE, NoSalts())
    no_ip = EdgeContext(RECEIVED)
    assert raw_event(sub, "alpha", no_ip, NoSalts())["visitor_id"] is None
