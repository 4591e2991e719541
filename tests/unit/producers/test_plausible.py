from __future__ import annotations

import orjson
import pytest

from producers.apis import plausible
from producers.errors import Rejection
from producers.model import PAGEVIEW
from schemas.reasons import Source

URL = "https://alpha.example/blog?x=1#top"


def parse(make_request, ctx, body):
    return plausible.parse_event(make_request(body), ctx)


def rejected(make_request, ctx, body) -> tuple[int, dict]:
    with pytest.raises(Rejection) as err:
        parse(make_request, ctx, body)
    return err.value.status, orjson.loads(err.value.body)


@pytest.mark.parametrize(
    "body",
    [
        {"n": "pageview", "u": URL, "d": "alpha.example", "r": "https://ref.example/"},
        {
            "name": "pageview",
            "url": URL,
            "domain": "alpha.example",
            "referrer": "https://ref.example/",
        },
    ],
)
def test_short_and_long_field_names(make_request, ctx, body):
    parsed = parse(make_request, ctx, body)
    assert parsed.project_ids == ("alpha",)
    assert (parsed.reply.status, parsed.reply.body) == (202, b"ok")
    (sub,) = parsed.submissions
    assert (sub.source, sub.name, sub.url, sub.referrer, sub.domain) == (
        Source.PLAUSIBLE,
        PAGEVIEW,
        URL,
        "https://ref.example/",
        "alpha.example",
    )
    assert sub.interactive is True


def test_text_plain_body_and_domain_from_url_host(make_request, ctx):
    raw = orjson.dumps({"n": "Signup", "u": "https://www.alpha.example/x"})
    parsed = plausible.parse_event(make_request(raw, headers={"Content-Type": "text/plain"}), ctx)
    assert parsed.project_ids == ("alpha",)
    assert parsed.submissions[0].domain == "alpha.example"


def test_several_domains_write_into_each_site(make_request, ctx):
    parsed = parse(make_request, ctx, {"n": "x", "u": URL, "d": "alpha.example, beta.example"})
    assert parsed.project_ids == ("alpha", "beta")


def test_unknown_site_is_400(make_request, ctx):
    assert rejected(make_request, ctx, {"n": "x", "u": "https://other.example/"}) == (
        400,
        {"errors": {"domain": ["is not a site of this endpoint"]}},
    )


@pytest.mark.parametrize("key", ["p", "props", "m", "meta"])
def test_props_aliases_object_or_json_string(make_request, ctx, key):
    for value in ({"a": "1"}, '{"a": "1"}'):
        (sub,) = parse(make_request, ctx, {"n": "x", "u": URL, key: value}).submissions
        assert sub.properties == {"a": "1"}


def test_scalar_props_are_kept_as_text_and_the_rest_dropped(make_request, ctx):
    props = {"s": "ok", "n": 1, "f": 2.5, "b": True, "l": [1], "m": {"a": 1}, "z": None, "e": ""}
    (sub,) = parse(make_request, ctx, {"n": "x", "u": URL, "p": props}).submissions
    assert sub.properties == {"s": "ok", "n": "1", "f": "2.5", "b": "true"}
    # The tracker sends props as a JSON string.
    body = {"n": "x", "u": URL, "p": '{"method":"HTTP","size":3,"beta":true}'}
    (sub,) = parse(make_request, ctx, body).submissions
    assert sub.properties == {"method": "HTTP", "size": "3", "beta": "true"}


@pytest.mark.parametrize("key", ["$", "revenue"])
@pytest.mark.parametrize(
    ("revenue", "stored"),
    [
        ({"amount": "9.99", "currency": "usd"}, ("9.99", "USD")),
        ({"amount": 12, "currency": "EUR"}, ("12", "EUR")),
        ({"amount": 9.5, "currency": "EUR"}, ("9.5", "EUR")),
        ({"amount": "9.99"}, (None, None)),  # incomplete: ignored, as Plausible does
        ("9.99", (None, None)),
    ],
)
def test_revenue_is_carried(make_request, ctx, key, revenue, stored):
    body = {"n": "Purchase", "u": URL, key: revenue}
    (sub,) = parse(make_request, ctx, body).submissions
    assert (sub.revenue_amount, sub.revenue_currency) == stored


@pytest.mark.parametrize(
    "revenue",
    [
        {"amount": "nine", "currency": "USD"},
        {"amount": True, "currency": "USD"},
        {"amount": "1e20", "currency": "USD"},
        {"amount": "NaN", "currency": "USD"},
        {"amount": "1", "currency": "US"},
        {"amount": "1", "currency": "U$D"},
        {"amount": "1", "currency": 840},
    ],
)
def test_malformed_revenue_is_a_400_naming_revenue(make_request, ctx, revenue):
    with pytest.raises(Rejection) as caught:
        parse(make_request, ctx, {"n": "Purchase", "u": URL, "$": revenue})
    assert caught.value.status == 400
    assert orjson.loads(caught.value.body) == {"errors": {"revenue": [caught.value.reason]}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"u": URL}, "event_name"),
        ({"n": "", "u": URL}, "event_name"),
        ({"n": "x" * 121, "u": URL}, "event_name"),
        ({"n": "x"}, "url"),
        ({"n": "x", "u": 5}, "url"),
        ({"n": "x", "u": "https://alpha.example/" + "a" * 1990}, "url"),
        ({"n": "x", "u": "data:text/html,hi", "d": "alpha.example"}, "url"),
        ({"n": "x", "u": URL, "r": "https://r.example/" + "é" * 995}, "referrer"),
        ({"n": "x", "u": URL, "p": {f"k{i}": "v" for i in range(31)}}, "props"),
        ({"n": "x", "u": URL, "p": {"k" * 301: "v"}}, "props"),
        ({"n": "x", "u": URL, "p": {"k": "v" * 2001}}, "props"),
        ({"n": "x", "u": URL, "p": "[1]"}, "props"),
        ({"n": "x", "u": URL, "d": ""}, "domain"),
        ({"n": "engagement", "u": URL}, "event_name"),
        ({"n": "engagement", "u": URL, "sd": 50}, "event_name"),
        ({"n": "engagement", "u": URL, "sd": 50, "e": 2_592_000_000}, "e"),
        ({"n": "engagement", "u": URL, "sd": -1, "e": 10}, "sd"),
        ({"n": "engagement", "u": URL, "sd": "x", "e": 10}, "sd"),
    ],
)
def test_documented_limits(make_request, ctx, body, field):
    status, error = rejected(make_request, ctx, body)
    assert status == 400
    assert list(error["errors"]) == [field]


def test_limits_at_their_edges_pass(make_request, ctx):
    body = {
        "n": "x" * 120,
        "u": "https://alpha.example/" + "a" * (2000 - len("https://alpha.example/")),
        "p": {f"k{i}": "v" * 2000 for i in range(29)} | {"k" * 300: "v"},
    }
    parse(make_request, ctx, body)


def test_engagement_with_sd_and_e_and_clamping(make_request, ctx):
    body = {"n": "engagement", "u": URL, "sd": 140, "e": 2_591_999_999, "i": False, "h": 1, "v": 27}
    (sub,) = parse(make_request, ctx, body).submissions
    assert (sub.scroll_depth, sub.engagement_time_ms) == (100, 2_591_999_999)
    assert (sub.interactive, sub.hash_mode, sub.sdk_version) == (False, True, "27")


def test_malformed_json_answers_with_the_request_error(make_request, ctx):
    status, error = rejected(make_request, ctx, b"{nope")
    assert status == 400
    assert error == {"errors": {"request": ["Unable to parse request body as json"]}}
