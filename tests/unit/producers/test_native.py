from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from producers.apis import native
from producers.errors import Rejection
from schemas.reasons import EventKind, Source

AUTH = {"Authorization": "Bearer alpha-token"}


def test_single_event_with_every_field(make_request, ctx):
    body = {
        "event_id": "e-1",
        "name": "purchase",
        "user_id": "u1",
        "anonymous_id": "a1",
        "email": "u1@example.com",
        "display_name": "U",
        "timestamp": "2026-02-28T10:00:00Z",
        "url": "https://alpha.example/checkout",
        "referrer": "https://ref.example/",
        "domain": "alpha.example",
        "properties": {"total": 9.5, "items": ["a"]},
        "user_properties": {"tier": "gold"},
        "user_properties_once": {"first": "x"},
        "user_properties_unset": ["old"],
        "context_id": "c",
        "order_id": "o-1",
    }
    parsed = native.parse_events(make_request(body, headers=AUTH), ctx)
    assert parsed.project_ids == ("alpha",)
    assert orjson.loads(parsed.reply.body) == {"accepted": 1, "event_ids": ["e-1"]}
    (sub,) = parsed.submissions
    assert (sub.source, sub.kind, sub.event_id, sub.order_id) == (
        Source.NATIVE,
        EventKind.TRACK,
        "e-1",
        "o-1",
    )
    assert sub.properties == {"total": "9.5", "items": '["a"]'}
    assert sub.client_time == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert sub.user_properties_unset == ("old",)


def test_server_key_works_and_ids_are_assigned(make_request, ctx):
    headers = {"Authorization": "Bearer beta-secret", "Idempotency-Key": "k"}
    parsed = native.parse_events(
        make_request(
            {"events": [{"name": "a"}, {"kind": "identify", "user_id": "u"}]}, headers=headers
        ),
        ctx,
    )
    assert parsed.project_ids == ("beta",)
    ids = orjson.loads(parsed.reply.body)["event_ids"]
    assert len(set(ids)) == 2
    assert [s.event_id for s in parsed.submissions] == ids
    assert parsed.submissions[1].name == "$identify"
    assert [s.idempotency_key for s in parsed.submissions] == ["k:0", "k:1"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic alpha-token"}]
)
def test_auth(make_request, ctx, headers):
    with pytest.raises(Rejection) as err:
        native.parse_events(make_request({"name": "a"}, headers=headers), ctx)
    assert err.value.status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "a", "kind": "nope"}, "kind"),
        ({"name": "a", "email": "x"}, "email"),
        ({"name": "a", "timestamp": True}, "timestamp"),
        ({"name": "a", "properties": "x"}, "properties"),
        ({"name": "a", "user_properties_unset": [1]}, "user_properties_unset"),
        ({"name": "n" * 256}, "name"),
        ({"events": []}, "events"),
        ({"events": [{"name": "a"}] * 11}, "events"),
        ({"events": [{"name": "a"}, {"kind": "track"}]}, "events[1].name"),
        ({"events": [{"name": "a"}, 3]}, "events[1]"),
    ],
)
def test_validation(make_request, ctx, body, field):
    with pytest.raises(Rejection) as err:
        native.parse_events(make_request(body, headers=AUTH), ctx)
    assert (err.value.status, err.value.field) == (400, field)
    assert orjson.loads(err.value.body)["error"]["field"] == field
