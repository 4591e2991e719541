from __future__ import annotations

import orjson
import pytest

from producers.apis import vtcdn
from producers.errors import Rejection
from schemas.reasons import EventKind

KEY = {"Authorization": "alpha-vtcdn"}


def test_generic_event_documented_double_nesting(make_request, ctx):
    body = {
        "user": {"email": "a@b.co"},
        "event": {"generic": {"generic": {"event_name": "my_event", "firstname": "al"}}},
    }
    parsed = vtcdn.parse_event(make_request(body, headers=KEY), ctx)
    assert orjson.loads(parsed.reply.body) == {
        "results": {"message": "Event created", "email": "Event was created for the specified user"}
    }
    (sub,) = parsed.submissions
    assert (sub.kind, sub.name, sub.email, sub.properties) == (
        EventKind.TRACK,
        "my_event",
        "a@b.co",
        {"firstname": "al"},
    )


def test_update_login_confirmation_and_email_open(make_request, ctx):
    def one(event, user=None):
        body = {"user": user or {"_id": "42"}, "event": event}
        return vtcdn.parse_event(make_request(body, headers=KEY), ctx).submissions[0]

    update = one({"update": {"firstname": "alexandru"}})
    assert (update.kind, update.user_properties, update.user_id) == (
        EventKind.UPDATE_USER,
        {"firstname": "alexandru"},
        "42",
    )
    login = one({"login": {"email": "x@y.co"}})
    assert (login.kind, login.user_id, login.email) == (EventKind.IDENTIFY, "42", "x@y.co")
    # A user named by email keeps that address: it is the user's key.
    login = one({"login": {"email": "x@y.co"}}, user={"email": "a@b.co"})
    assert (login.user_id, login.email) == (None, "a@b.co")
    order = one({"confirmation": {"orderId": 991, "total": 10.5}})
    assert (order.name, order.order_id, order.properties["total"]) == (
        "confirmation",
        "991",
        "10.5",
    )
    opened = one({"emailOpen": {"campaignId": "c1"}})
    assert (opened.name, opened.properties) == (vtcdn.EMAIL_OPEN, {"campaignId": "c1"})


def test_bearer_form_of_the_key_and_project_isolation(make_request, ctx):
    body = {"user": {"_id": "1"}, "event": {"update": {}}}
    parsed = vtcdn.parse_event(
        make_request(body, headers={"Authorization": "Bearer beta-vtcdn"}), ctx
    )
    assert parsed.project_ids == ("beta",)
    assert orjson.loads(parsed.reply.body)["results"]["_id"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "nope"}, {"Authorization": "alpha-vero"}]
)
def test_bad_key_is_401(make_request, ctx, headers):
    with pytest.raises(Rejection) as err:
        vtcdn.parse_event(
            make_request({"user": {"_id": "1"}, "event": {"update": {}}}, headers=headers), ctx
        )
    assert err.value.status == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user": {"email": "a@b.co"}}, "Missing event information"),
        ({"user": {"email": "a@b.co"}, "event": {}}, "Missing event information"),
        ({"event": {"update": {}}}, "Missing user information"),
    ],
)
def test_documented_missing_information_errors(make_request, ctx, body, message):
    with pytest.raises(Rejection) as err:
        vtcdn.parse_event(make_request(body, headers=KEY), ctx)
    assert err.value.status == 400
    assert orjson.loads(err.value.body)["errors"][0]["message"] == message


@pytest.mark.parametrize(
    "body",
    [
        {"user": {"name": "x"}, "event": {"update": {}}},
        {"user": {"email": "bad"}, "event": {"update": {}}},
        {"user": {"_id": "1"}, "event": {"confirmation": {"total": 1}}},
        {"user": {"_id": "1"}, "event": {"generic": {"generic": {"x": 1}}}},
        {"user": {"_id": "1"}, "event": {"update": {}, "login": {}}},
        {"user": {"_id": "1"}, "event": {"update": [1]}},
    ],
)
def test_invalid_events_are_400_with_errors_list(make_request, ctx, body):
    with pytest.raises(Rejection) as err:
        vtcdn.parse_event(make_request(body, headers=KEY), ctx)
    assert err.value.status == 400
    assert "errors" in orjson.loads(err.value.body)
