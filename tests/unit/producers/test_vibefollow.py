from __future__ import annotations

import orjson
import pytest

from producers.apis import vibefollow
from producers.errors import Rejection
from schemas.reasons import EventKind, Source

AUTH = {"Authorization": "Bearer alpha-secret"}
EVENT = {
    "external_user_id": "usr_42",
    "name": "user_signed_up",
    "properties": {"plan": "trial", "source": "organic"},
}


def test_documented_event(make_request, ctx):
    headers = {**AUTH, "Idempotency-Key": "7b6c"}
    parsed = vibefollow.parse_event(make_request(EVENT, headers=headers), ctx)
    assert parsed.project_ids == ("alpha",)
    assert parsed.reply.status == 202
    assert orjson.loads(parsed.reply.body) == {"data": {"accepted": True}}
    (sub,) = parsed.submissions
    assert (sub.source, sub.kind, sub.name, sub.user_id) == (
        Source.VIBEFOLLOW,
        EventKind.TRACK,
        "user_signed_up",
        "usr_42",
    )
    assert sub.properties == {"plan": "trial", "source": "organic"}
    assert sub.idempotency_key == "7b6c"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "alpha-secret"}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Bearer alpha-token"}, 403),
    ],
)
def test_auth_failures(make_request, ctx, headers, status):
    with pytest.raises(Rejection) as err:
        vibefollow.parse_event(make_request(EVENT, headers=headers), ctx)
    assert err.value.status == status
    assert orjson.loads(err.value.body)["errors"][0]["code"] in {"unauthorized", "forbidden"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "external_user_id"),
        ({"external_user_id": "u"}, "name"),
        ({"external_user_id": 5, "name": "x"}, "external_user_id"),
        ({"external_user_id": "u", "name": "x", "properties": []}, "properties"),
    ],
)
def test_validation_is_422_with_field(make_request, ctx, body, field):
    with pytest.raises(Rejection) as err:
        vibefollow.parse_event(make_request(body, headers=AUTH), ctx)
    assert err.value.status == 422
    (error,) = orjson.loads(err.value.body)["errors"]
    assert (error["code"], error["field"]) == ("validation_error", field)
    assert error["message"].startswith(field)


def test_batch_is_all_or_nothing_and_capped(make_request, ctx):
    good = {"events": [EVENT, {**EVENT, "name": "second"}]}
    headers = {**AUTH, "Idempotency-Key": "k"}
    parsed = vibefollow.parse_batch(make_request(good, headers=headers), ctx)
    assert [s.name for s in parsed.submissions] == ["user_signed_up", "second"]
    assert [s.idempotency_key for s in parsed.submissions] == ["k:0", "k:1"]
    with pytest.raises(Rejection) as err:
        vibefollow.parse_batch(make_request({"events": [EVENT, {"name": "x"}]}, headers=AUTH), ctx)
    assert (err.value.status, err.value.field) == (422, "events[1].external_user_id")
    vibefollow.parse_batch(make_request({"events": [EVENT] * 500}, headers=AUTH), ctx)
    with pytest.raises(Rejection) as err:
        vibefollow.parse_batch(make_request({"events": [EVENT] * 501}, headers=AUTH), ctx)
    assert err.value.field == "events"


def test_user_upsert(make_request, ctx):
    body = {
        "external_user_id": "u1",
        "email": "u1@example.com",
        "name": "U One",
        "traits": {"plan": "pro"},
    }
    (sub,) = vibefollow.parse_user(make_request(body, headers=AUTH), ctx).submissions
    assert (sub.kind, sub.user_id, sub.email, sub.display_name, sub.user_properties) == (
        EventKind.IDENTIFY,
        "u1",
        "u1@example.com",
        "U One",
        {"plan": "pro"},
    )
