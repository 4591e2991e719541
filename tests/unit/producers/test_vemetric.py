from __future__ import annotations

import pytest

from producers.apis import vemetric
from producers.errors import Rejection
from producers.model import OUTBOUND_LINK, PAGEVIEW
from schemas.reasons import EventKind, Source

TOKEN = {"Token": "alpha-token"}


def test_python_sdk_track_event_maps_every_field(make_request, ctx):
    # What vemetric 0.2 (PyPI) posts to /e.
    body = {
        "name": "signup",
        "userIdentifier": "user-1",
        "customData": {"plan": "pro", "seats": 3, "nested": {"a": [1, 2]}, "gone": None},
        "displayName": "Ann",
        "userData": {"set": {"tier": "gold"}, "setOnce": {"first": "2026"}, "unset": ["old"]},
    }
    parsed = vemetric.parse_track(make_request(body, headers=TOKEN), ctx)
    assert parsed.project_ids == ("alpha",)
    assert parsed.reply.status == 200
    assert parsed.reply.body == b""
    (sub,) = parsed.submissions
    assert sub.source is Source.VEMETRIC
    assert sub.kind is EventKind.TRACK
    assert sub.name == "signup"
    assert sub.user_id == "user-1"
    assert sub.display_name == "Ann"
    assert sub.properties == {"plan": "pro", "seats": "3", "nested": '{"a":[1,2]}'}
    assert sub.user_properties == {"tier": "gold"}
    assert sub.user_properties_once == {"first": "2026"}
    assert sub.user_properties_unset == ("old",)


@pytest.mark.parametrize("name", ["$$pageView", "$pageview"])
def test_pageview_spellings_are_one_name_and_need_url(make_request, ctx, name):
    parsed = vemetric.parse_track(
        make_request({"name": name, "url": "https://a.example/x"}, headers=TOKEN), ctx
    )
    assert parsed.submissions[0].name == PAGEVIEW
    with pytest.raises(Rejection) as err:
        vemetric.parse_track(make_request({"name": name}, headers=TOKEN), ctx)
    assert (err.value.status, err.value.body, err.value.field) == (400, b"Invalid!", "url")


@pytest.mark.parametrize("name", ["$$outboundLink", "$outbound_link"])
def test_outbound_link_needs_url_and_href(make_request, ctx, name):
    ok = {"name": name, "url": "https://a.example/", "customData": {"href": "https://b.example"}}
    assert vemetric.parse_track(make_request(ok, headers=TOKEN), ctx).submissions[0].name == (
        OUTBOUND_LINK
    )
    with pytest.raises(Rejection) as err:
        vemetric.parse_track(
            make_request({"name": name, "url": "https://a.example/"}, headers=TOKEN), ctx
        )
    assert err.value.field == "customData.href"
    assert err.value.body == b"Invalid!"


def test_token_from_body_beacon_and_docs(make_request, ctx):
    # The web SDK's sendBeacon merges its headers into the body; the docs show projectToken.
    beacon = {"name": "x", "Token": "beta-token", "Allow-Cookies": "false", "V-SDK": "script"}
    assert vemetric.parse_track(make_request(beacon), ctx).project_ids == ("beta",)
    docs = {"name": "x", "projectToken": "alpha-token"}
    assert vemetric.parse_track(make_request(docs), ctx).project_ids == ("alpha",)


@pytest.mark.parametrize("headers", [{}, {"Token": "nope"}])
def test_missing_or_unknown_token_is_401(make_request, ctx, headers):
    with pytest.raises(Rejection) as err:
        vemetric.parse_track(make_request({"name": "x"}, headers=headers), ctx)
    assert err.value.status == 401


def test_web_sdk_headers_and_identifier(make_request, ctx):
    # V-Host names the hub the script talks to, not the site: the page URL does.
    headers = {**TOKEN, "V-Host": "hub.example.net", "v-referrer": "https://ref.example/"}
    body = {"name": "click", "url": "https://Shop.Example/p", "identifier": "u9", "contextId": "c1"}
    (sub,) = vemetric.parse_track(make_request(body, headers=headers), ctx).submissions
    assert (sub.user_id, sub.domain, sub.referrer, sub.context_id) == (
        "u9",
        "shop.example",
        "https://ref.example/",
        "c1",
    )


@pytest.mark.parametrize(
    "body", [b"not json", b"[1,2]", {"url": "https://a.example"}, {"name": 5}, {"name": ""}]
)
def test_invalid_bodies_answer_invalid(make_request, ctx, body):
    with pytest.raises(Rejection) as err:
        vemetric.parse_track(make_request(body, headers=TOKEN), ctx)
    assert (err.value.status, err.value.body) == (400, b"Invalid!")


def test_custom_data_must_be_an_object(make_request, ctx):
    with pytest.raises(Rejection) as err:
        vemetric.parse_track(make_request({"name": "x", "customData": [1]}, headers=TOKEN), ctx)
    assert err.value.field == "customData"


def test_identify_is_200_and_needs_identifier(make_request, ctx):
    body = {
        "identifier": "u1",
        "displayName": "U",
        "avatarUrl": "https://i/x.png",
        "data": {"set": {"a": 1}},
    }
    parsed = vemetric.parse_identify(make_request(body, headers=TOKEN), ctx)
    (sub,) = parsed.submissions
    assert parsed.reply.status == 200
    assert sub.kind is EventKind.IDENTIFY
    assert sub.user_properties == {"a": "1", "avatarUrl": "https://i/x.png"}
    with pytest.raises(Rejection):
        vemetric.parse_identify(make_request({"displayName": "U"}, headers=TOKEN), ctx)


@pytest.mark.parametrize("id_key", ["userIdentifier", "identifier"])
def test_update_user_from_server_and_web_sdks(make_request, ctx, id_key):
    body = {id_key: "u1", "data": {"set": {"plan": "pro"}, "unset": ["x"]}, "displayName": "D"}
    (sub,) = vemetric.parse_update_user(make_request(body, headers=TOKEN), ctx).submissions
    assert (sub.kind, sub.user_id, sub.display_name) == (EventKind.UPDATE_USER, "u1", "D")
    assert sub.user_properties == {"plan": "pro"}
    assert sub.user_properties_unset == ("x",)


def test_reset_records_nothing_but_checks_the_token(make_request, ctx):
    parsed = vemetric.parse_reset(make_request(b"", headers=TOKEN), ctx)
    assert parsed.submissions == ()
    with pytest.raises(Rejection):
        vemetric.parse_reset(make_request(b""), ctx)


def test_page_leave_beacon(make_request, ctx):
    body = {"url": "https://a.example/x", "contextId": "c", "Token": "alpha-token"}
    (sub,) = vemetric.parse_page_leave(make_request(body), ctx).submissions
    assert (sub.name, sub.url, sub.context_id) == (vemetric.PAGE_LEAVE, "https://a.example/x", "c")


def test_a_beacon_carries_the_site_and_the_sdk_in_its_body(make_request, ctx):
    """sendBeacon cannot set headers: the web SDK puts them into the JSON body."""
    body = {
        "name": "click",
        "url": "https://www.shop.example/p",
        "Token": "alpha-token",
        "Allow-Cookies": "false",
        "V-Host": "hub.example.net",
        "V-SDK": "script",
        "V-SDK-Version": "0.6.1",
    }
    parsed = vemetric.parse_track(make_request(body), ctx)
    (sub,) = parsed.submissions
    assert (sub.domain, sub.sdk_name, sub.sdk_version) == ("shop.example", "script", "0.6.1")
    assert not parsed.from_server
    (leave,) = vemetric.parse_page_leave(make_request(body), ctx).submissions
    assert (leave.domain, leave.sdk_name) == ("shop.example", "script")


def test_without_a_url_the_site_is_the_browsers_origin(make_request, ctx):
    headers = {**TOKEN, "Origin": "https://www.shop.example"}
    body = {"identifier": "u1", "displayName": "Ann"}
    (sub,) = vemetric.parse_identify(make_request(body, headers=headers), ctx).submissions
    assert sub.domain == "shop.example"


@pytest.mark.parametrize(
    ("headers", "body", "from_server"),
    [
        ({"V-SDK": "node"}, {"name": "x", "userIdentifier": "u"}, True),
        ({"V-SDK": "python"}, {"name": "x"}, True),
        ({}, {"name": "x", "userIdentifier": "u"}, True),
        ({"V-SDK": "script"}, {"name": "x", "identifier": "u"}, False),
        ({}, {"name": "x", "identifier": "u"}, False),
    ],
)
def test_server_sdk_requests_are_backend_requests(make_request, ctx, headers, body, from_server):
    request = make_request(body, headers={**TOKEN, **headers})
    assert vemetric.parse_track(request, ctx).from_server is from_server
    update = {"userIdentifier": "u"} if "userIdentifier" in body else {"identifier": "u"}
    request = make_request(update, headers={**TOKEN, **headers})
    assert vemetric.parse_update_user(request, ctx).from_server is from_server
