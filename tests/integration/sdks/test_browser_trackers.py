"""The official browser trackers, unchanged, in a page of a real site: what lands in ClickHouse.

Each tracker runs in Node with jsdom (tests/sdk_clients), on a page whose host is a
site of the test project, with its API host set to the endpoint: its requests
are real HTTP with the browser's CORS rules (Origin, preflights, credentials).
One visitor's session per tracker (several pages within seconds, a hash route,
an engagement, a custom event with number and boolean props, revenue where the
tracker has it) is read back from ``events FINAL`` field by field.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

# A hung broker, server or driver fails the test instead of stalling the suite.
pytestmark = pytest.mark.timeout(300)

# The user agent the page sends (tests/sdk_clients/browser.mjs, CHROME_UA).
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def pick(rows: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    """The named fields of each row, as tuples (readable diffs on failure)."""
    return [tuple(row[name] for name in names) for row in rows]


def one_visitor(rows: list[dict[str, Any]]) -> str:
    """The visitor id all rows share; fails when they do not share one."""
    ids = {row["visitor_id"] for row in rows}
    assert len(ids) == 1, f"one browser, several visitor ids: {ids}"
    (visitor,) = ids
    assert len(visitor) == 32, visitor
    return visitor


def sent(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON bodies the tracker posted (beacons, whose body is a Blob, excluded)."""
    return [json.loads(r["body"]) for r in report["requests"] if r.get("body")]


# --------------------------------------------------------------------------- @vemetric/web

SHOP = "https://www.shop.example.com"
SHOP_USER = "vm-user-1"
PRODUCT = f"{SHOP}/products/42?color=red#reviews"


@pytest.fixture(scope="module")
def vemetric_web(sdk_pipeline: Any) -> dict[str, Any]:
    """@vemetric/web 0.6.1 on www.shop.example.com, its hub over HTTPS: the driver's report
    and the rows that landed."""
    mark = len(sdk_pipeline.requests.entries)
    report = sdk_pipeline.run_node(
        "vemetric-web.mjs",
        {"host": sdk_pipeline.tls_url, "token": sdk_pipeline.public_token, "site": SHOP,
         "user": SHOP_USER},
    )  # fmt: skip
    rows = sdk_pipeline.wait_for(
        10, "source = 'vemetric' AND url LIKE %(site)s OR user_id = %(user)s",
        {"site": f"{SHOP}%", "user": SHOP_USER}, timeout=30, check=False,
    )  # fmt: skip
    return {"report": report, "rows": rows, "requests": sdk_pipeline.requests.since(mark)}


def test_vemetric_web_session_lands_once_each(vemetric_web):
    rows = vemetric_web["rows"]
    assert [r["status"] for r in vemetric_web["report"]["requests"]] == [200] * 11
    fields = ("decision", "drop_reason", "name", "kind", "user_id", "display_name", "url")
    assert pick(rows, *fields) == [
        ("accepted", "", "$pageview", "track", "", "", f"{SHOP}/"),
        ("accepted", "", "$pageview", "track", "", "", f"{SHOP}/products"),
        ("accepted", "", "$pageview", "track", "", "", f"{SHOP}/products/42?color=red"),
        ("accepted", "", "$pageview", "track", "", "", PRODUCT),  # the hash route
        ("accepted", "", "Add To Cart", "track", "", "", PRODUCT),
        ("accepted", "", "$identify", "identify", SHOP_USER, "Vera Visitor", ""),
        ("accepted", "", "$update_user", "update_user", SHOP_USER, "", ""),
        ("accepted", "", "Checkout Started", "track", SHOP_USER, "Vera Visitor", PRODUCT),
        ("accepted", "", "$outbound_link", "track", SHOP_USER, "Vera Visitor", PRODUCT),
        ("accepted", "", "$pageleave", "track", SHOP_USER, "Vera Visitor", PRODUCT),
    ]  # fmt: skip
    assert pick(rows, "properties", "user_properties") == [
        ({}, {}),
        ({}, {}),
        ({}, {}),
        ({}, {}),
        # customData values are stored as text: numbers and booleans as their JSON.
        ({"size": "3", "beta": "true", "color": "red"}, {}),
        ({}, {"plan": "free"}),
        ({}, {"plan": "pro", "avatarUrl": "https://img.example.org/v.png"}),
        ({"items": "2"}, {}),
        ({"href": "https://partner.example.net/offer"}, {}),
        ({}, {}),
    ]
    for row in rows:
        assert (row["source"], row["user_agent"], row["email"], row["order_id"]) == (
            "vemetric",
            CHROME_UA,
            "",
            "",
        )
        assert (row["revenue_amount"], row["revenue_currency"]) == (None, "")
    # The referrer travels as the v-referrer header of XHR requests (not in beacons).
    assert [r["referrer"] for r in rows[:5]] == ["https://news.example.org/article"] * 5
    assert [r["context_id"] != "" for r in rows] == [True] * 5 + [False] * 2 + [True] * 3


def test_vemetric_web_domain_is_the_page_host_for_fetch_and_beacon(vemetric_web):
    # V-Host is the hub's host (here 127.0.0.1:port); the site is the page's host,
    # lower-cased, without www. Beacons (the last three) carry token and SDK in the body.
    rows = vemetric_web["rows"]
    assert [r["domain"] for r in rows] == ["shop.example.com"] * 10
    assert [(r["sdk_name"], r["sdk_version"]) for r in rows] == [("web", "0.6.1")] * 10


def test_vemetric_web_one_browser_is_one_visitor(vemetric_web):
    rows = vemetric_web["rows"]
    visitor = one_visitor(rows)
    # Anonymous until identified: keyed by the visitor id, then by the user id.
    assert [r["user_key"] for r in rows] == [visitor] * 5 + [SHOP_USER] * 5


def test_vemetric_web_profile(vemetric_web, sdk_pipeline):
    assert sdk_pipeline.profiles([SHOP_USER]) == {
        SHOP_USER: {
            "display_name": "Vera Visitor",
            "email": "",
            "avatar": "https://img.example.org/v.png",
            "anonymous_id": "",
        }
    }
    assert sdk_pipeline.property_values([SHOP_USER]) == {
        SHOP_USER: {
            "plan": "pro",
            "firstSeenOn": "shop",
            "avatarUrl": "https://img.example.org/v.png",
        }
    }


def test_vemetric_web_cors(vemetric_web):
    # Every request is cross-origin with credentials and non-safelisted headers (or
    # a JSON beacon): each POST follows a preflight, and every answer allows the page.
    requests = vemetric_web["requests"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        pair
        for path in ["/e"] * 5 + ["/i", "/u", "/e", "/e", "/l", "/r"]
        for pair in (("OPTIONS", path, 200), ("POST", path, 200))
    ]
    for r in requests:
        assert (r["scheme"], r["origin"]) == ("https", SHOP)
        assert r["response_headers"]["access-control-allow-origin"] == SHOP
        assert r["response_headers"]["access-control-allow-credentials"] == "true"
    asked = {h.strip().lower() for r in requests[:1] for h in r["request_headers"].split(",")}
    assert asked == {"token", "allow-cookies", "v-host", "v-sdk", "v-sdk-version", "v-referrer"}
    allowed = requests[0]["response_headers"]["access-control-allow-headers"].lower()
    assert all(h in allowed for h in asked), allowed


def test_vemetric_identify_answers_200(vemetric_web):
    (identify,) = [r for r in vemetric_web["report"]["requests"] if r["url"].endswith("/i")]
    assert (identify["status"], identify["response"]) == (200, "")


# --------------------------------------------------------------------------- plausible-tracker

DOCS = "https://docs.example.com"
OPTIONS_PAGE = f"{DOCS}/docs/configure#/options"


@pytest.fixture(scope="module")
def plausible_tracker(sdk_pipeline: Any) -> dict[str, Any]:
    """plausible-tracker 0.3.9 (hash mode) on docs.example.com."""
    report = sdk_pipeline.run_node(
        "plausible-tracker.mjs", {"apiHost": sdk_pipeline.url, "site": DOCS}
    )
    rows = sdk_pipeline.wait_for(6, "domain = 'docs.example.com'", timeout=30, check=False)
    return {"report": report, "rows": rows}


def test_plausible_tracker_session(plausible_tracker):
    rows = plausible_tracker["rows"]
    assert [(r["status"], r["response"]) for r in plausible_tracker["report"]["requests"]] == [
        (202, "ok")
    ] * 6
    # On a hash change a browser fires popstate and hashchange; in hash mode the
    # tracker counts both, sending the same pageview twice at once: a true
    # duplicate (either of the two may be the one kept).
    assert sorted(pick(rows, "decision", "drop_reason", "name", "url", "interactive")) == sorted(
        [
            ("accepted", "", "$pageview", f"{DOCS}/docs/intro", 1),
            ("accepted", "", "$pageview", f"{DOCS}/docs/install", 1),
            ("accepted", "", "$pageview", f"{DOCS}/docs/configure", 1),
            ("accepted", "", "$pageview", OPTIONS_PAGE, 1),
            ("dropped", "duplicate", "$pageview", OPTIONS_PAGE, 1),
            ("accepted", "", "Signup", OPTIONS_PAGE, None),
        ]
    )
    visitor = one_visitor(rows)
    for row in rows:
        assert (
            row["source"], row["kind"], row["domain"], row["hash_mode"], row["user_key"],
            row["user_id"], row["email"], row["referrer"], row["user_agent"],
        ) == (
            "plausible", "track", "docs.example.com", 1, visitor,
            "", "", "https://search.example.org/?q=eventsieve", CHROME_UA,
        )  # fmt: skip
        # 0.3.9 sends no tracker version (`v`): no SDK is recorded.
        assert (row["sdk_name"], row["sdk_version"]) == ("", "")


def test_plausible_tracker_keeps_number_and_boolean_props(plausible_tracker):
    # The tracker sends "p": "{\"method\":\"HTTP\",\"size\":3,\"beta\":true}".
    (signup,) = [r for r in plausible_tracker["rows"] if r["name"] == "Signup"]
    assert signup["properties"] == {"method": "HTTP", "size": "3", "beta": "true"}
    for row in plausible_tracker["rows"]:
        assert row["name"] == "Signup" or row["properties"] == {}


# ------------------------------------------------------------- @plausible-analytics/tracker

STORE = "https://store.example.com"
SPA = "https://spa.example.com"


@pytest.fixture(scope="module")
def plausible_script(sdk_pipeline: Any) -> dict[str, Any]:
    """@plausible-analytics/tracker 0.4.6: a history-routed session on store.example.com
    (endpoint over HTTPS) and a hash-routed one on spa.example.com (over HTTP)."""
    history = sdk_pipeline.run_node(
        "plausible-analytics-tracker.mjs",
        {"endpoint": f"{sdk_pipeline.tls_url}/api/event", "site": STORE, "mode": "history"},
    )
    hashed = sdk_pipeline.run_node(
        "plausible-analytics-tracker.mjs",
        {"endpoint": f"{sdk_pipeline.url}/api/event", "site": SPA, "mode": "hash"},
    )
    store = sdk_pipeline.wait_for(10, "domain = 'store.example.com'", timeout=30, check=False)
    spa = sdk_pipeline.wait_for(6, "domain = 'spa.example.com'", timeout=30, check=False)
    return {"history": history, "hash": hashed, "store": store, "spa": spa}


def by_page(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in a stable order: an engagement and the next pageview are sent at once."""
    return sorted(rows, key=lambda r: (r["timestamp_ms"], r["name"] == "engagement"))


def test_plausible_script_history_session(plausible_script):
    report, rows = plausible_script["history"], by_page(plausible_script["store"])
    assert [(r["url"].split(":")[0], r["status"]) for r in report["requests"]] == [
        ("https", 202)
    ] * 10
    engagement = {b["u"]: (b["sd"], b["e"]) for b in sent(report) if b["n"] == "engagement"}
    assert set(engagement) == {f"{STORE}/", f"{STORE}/products", f"{STORE}/products/42"}
    assert sorted(
        pick(rows, "decision", "name", "url", "interactive", "scroll_depth", "engagement_time_ms")
    ) == sorted(
        [
            ("accepted", "$pageview", f"{STORE}/", 1, None, None),
            ("accepted", "$pageview", f"{STORE}/products", 1, None, None),
            ("accepted", "$pageview", f"{STORE}/products/42", 1, None, None),
            ("accepted", "Add to Cart", f"{STORE}/products/42", None, None, None),
            ("accepted", "Purchase", f"{STORE}/products/42", None, None, None),
            ("accepted", "Purchase", f"{STORE}/products/42", None, None, None),
            ("accepted", "Outbound Link: Click", f"{STORE}/products/42", None, None, None),
            *(
                ("accepted", "engagement", url, None, *figures)
                for url, figures in engagement.items()
            ),
        ]
    )
    visitor = one_visitor(rows)
    for row in rows:
        assert (
            row["drop_reason"], row["source"], row["kind"], row["domain"], row["hash_mode"],
            row["user_key"], row["user_id"], row["email"], row["user_agent"],
            row["sdk_name"], row["sdk_version"],
        ) == (
            "", "plausible", "track", "store.example.com", None,
            visitor, "", "", CHROME_UA, "plausible-tracker", "36",
        )  # fmt: skip
        # Engagements carry no referrer; every other event the page's.
        expected_referrer = (
            "" if row["name"] == "engagement" else "https://social.example.org/post/1"
        )
        assert row["referrer"] == expected_referrer


def test_plausible_script_number_and_boolean_props(plausible_script):
    props = {r["name"]: r["properties"] for r in plausible_script["store"]}
    assert props["Add to Cart"] == {"size": "3", "beta": "true", "color": "red"}
    assert props["Purchase"] == {"items": "2"}
    assert props["Outbound Link: Click"] == {"url": "https://partner.example.net/offer?ref=store"}
    assert props["$pageview"] == props["engagement"] == {}


def test_plausible_script_revenue(plausible_script):
    rows = plausible_script["store"]
    # Two purchases that differ only in their revenue are two purchases.
    assert sorted(
        (r["revenue_amount"], r["revenue_currency"], r["decision"])
        for r in rows
        if r["name"] == "Purchase"
    ) == [(Decimal("9.99"), "USD", "accepted"), (Decimal("19.99"), "EUR", "accepted")]
    assert {
        (r["revenue_amount"], r["revenue_currency"]) for r in rows if r["name"] != "Purchase"
    } == {(None, "")}


def test_plausible_script_hash_routes(plausible_script):
    report, rows = plausible_script["hash"], by_page(plausible_script["spa"])
    assert [r["status"] for r in report["requests"]] == [202] * 6
    engagement = {b["u"]: (b["sd"], b["e"]) for b in sent(report) if b["n"] == "engagement"}
    pages = [f"{SPA}/#/", f"{SPA}/#/settings", f"{SPA}/#/settings/profile"]
    assert sorted(engagement) == sorted(pages)
    assert sorted(
        pick(rows, "decision", "name", "url", "hash_mode", "scroll_depth", "engagement_time_ms")
    ) == sorted(
        [("accepted", "$pageview", page, 1, None, None) for page in pages]
        + [("accepted", "engagement", page, 1, *engagement[page]) for page in pages]
    )
    visitor = one_visitor(rows)
    assert {(r["domain"], r["user_key"], r["drop_reason"]) for r in rows} == {
        ("spa.example.com", visitor, "")
    }
    assert visitor != one_visitor(plausible_script["store"])  # another site, another visitor


def test_every_session_counted_once(
    sdk_pipeline, vemetric_web, plausible_tracker, plausible_script
):
    # What `eventsieve stats` reads (latest decision per event id) agrees with FINAL.
    accepted, dropped = sdk_pipeline.decisions()
    assert sdk_pipeline.latest_decisions() == (accepted, dropped)
    assert dropped == Counter({"duplicate": 1})  # plausible-tracker's double hash pageview
    assert accepted == Counter(
        {
            "$pageview": 4 + 4 + 3 + 3,
            "engagement": 3 + 3,
            "Add To Cart": 1,
            "$identify": 1,
            "$update_user": 1,
            "Checkout Started": 1,
            "$outbound_link": 1,
            "$pageleave": 1,
            "Signup": 1,
            "Add to Cart": 1,
            "Purchase": 2,
            "Outbound Link: Click": 1,
        }
    )
