from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from producers.apis import vero
from producers.errors import Rejection
from schemas.reasons import EventKind, Source

DOC_BODY = {
    "identity": {"id": 1000, "email": "test@example.com"},
    "event_name": "Viewed product",
    "data": {"product_name": "Red T-shirt", "product_url": "http://www.yourdomain.com/p"},
    "extras": {"source": "Segment.com", "created_at": "2023-05-30T04:46:31+0000"},
}


def test_documented_example_maps_to_one_event(make_request, ctx):
    request = make_request(DOC_BODY, query={"auth_token": "alpha-vero"})
    parsed = vero.parse_track_event(request, ctx)
    assert parsed.project_ids == ("alpha",)
    assert orjson.loads(parsed.reply.body) == {"status": 200, "message": "Success."}
    (sub,) = parsed.submissions
    assert (sub.source, sub.kind, sub.name) == (Source.VERO, EventKind.TRACK, "Viewed product")
    assert (sub.user_id, sub.email) == ("1000", "test@example.com")
    assert sub.properties == DOC_BODY["data"]
    assert sub.client_time == datetime(2023, 5, 30, 4, 46, 31, tzinfo=UTC)


def test_sdk_puts_token_in_body_and_may_send_null_email(make_request, ctx):
    body = {
        "auth_token": "beta-vero",
        "event_name": "x",
        "identity": {"id": "u", "email": None},
        "data": {},
    }
    parsed = vero.parse_track_event(make_request(body), ctx)
    assert parsed.project_ids == ("beta",)
    assert parsed.submissions[0].email is None


@pytest.mark.parametrize("query", [{}, {"auth_token": "wrong"}, {"auth_token": "alpha-token"}])
def test_bad_token_is_401(make_request, ctx, query):
    with pytest.raises(Rejection) as err:
        vero.parse_track_event(make_request(DOC_BODY, query=query), ctx)
    assert err.value.status == 401
    assert orjson.loads(err.value.body)["status"] == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_name": "x" * 255}, "event_name"),
        ({"event_name": None}, "event_name"),
        ({"identity": {"id": "i" * 255}}, "identity.id"),
        ({"identity": {"id": "u", "email": "e" * 250 + "@x.com"}}, "identity.email"),
        ({"identity": {"id": "u", "email": "not-an-email"}}, "identity.email"),
        ({"identity": {}}, "identity.id"),
        ({"data": [1]}, "data"),
        ({"extras": {"created_at": "yesterday"}}, "extras.created_at"),
    ],
)
def test_documented_limits(make_request, ctx, change, field):
    with pytest.raises(Rejection) as err:
        vero.parse_track_event(
            make_request({**DOC_BODY, **change}, query={"auth_token": "alpha-vero"}), ctx
        )
    assert (err.value.status, err.value.field) == (400, field)
    assert orjson.loads(err.value.body)["status"] == 400


def test_254_characters_is_still_fine(make_request, ctx):
    body = {**DOC_BODY, "event_name": "x" * 254, "identity": {"id": "i" * 254}}
    vero.parse_track_event(make_request(body, query={"auth_token": "alpha-vero"}), ctx)


def test_user_endpoints_are_user_updates(make_request, ctx):
    auth = {"auth_token": "alpha-vero"}
    track = vero.parse_user_track(
        make_request({**auth, "id": 7, "email": "a@b.co", "data": {"plan": "pro"}}), ctx
    )
    assert track.submissions[0].kind is EventKind.IDENTIFY
    assert track.submissions[0].user_properties == {"plan": "pro"}
    edit = vero.parse_user_edit(make_request({**auth, "id": 7, "changes": {"a": 1}}), ctx)
    assert (edit.submissions[0].kind, edit.submissions[0].user_properties) == (
        EventKind.UPDATE_USER,
        {"a": "1"},
    )
    tags = vero.parse_tags_edit(make_request({**auth, "id": 7, "add": ["x"], "remove": []}), ctx)
    assert tags.submissions[0].user_properties == {"$tags_add": '["x"]', "$tags_remove": "[]"}
    re_id = vero.parse_reidentify(make_request({**auth, "id": 7, "new_id": 8}), ctx)
    assert re_id.submissions[0].user_id == "8"
    assert re_id.submissions[0].user_properties == {"$previous_id": "7"}
    unsub = vero.parse_unsubscribe(make_request({**auth, "id": 7}), ctx)
    assert unsub.submissions[0].user_properties == {"$unsubscribed": "true"}
    with pytest.raises(Rejection):
        vero.parse_user_edit(make_request({**auth, "changes": {}}), ctx)
