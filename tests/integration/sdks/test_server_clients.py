"""The official server-side clients, unchanged but for their base URL: what lands in ClickHouse.

@vemetric/node (over HTTPS: it only speaks Node's ``https``), the PyPI clients
``vemetric``, ``vero`` and ``plausible-events``, each against the real endpoint,
worker, sink and ClickHouse; rows read back from ``events FINAL`` and the
profile views field by field. A client calling the same thing twice within
3 minutes is a true retry: the second is dropped as ``duplicate``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
import vero
from plausible_events import PlausibleEvents
from vemetric import VemetricClient
from vero.client import Endpoint, VeroEndpoints

# A hung broker, server or driver fails the test instead of stalling the suite.
pytestmark = pytest.mark.timeout(300)

ACCEPTED = ("accepted", "")
DUPLICATE = ("dropped", "duplicate")


def pick(rows: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    """The named fields of each row, as tuples (readable diffs on failure)."""
    return [tuple(row[name] for name in names) for row in rows]


def backend_facts(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """What a server-to-server request must not store as the visitor's."""
    return {(r["user_agent"], r["visitor_id"], r["url"], r["domain"], r["referrer"]) for r in rows}


# --------------------------------------------------------------------------- @vemetric/node

NODE_USER = "node-user-1"


@pytest.fixture(scope="module")
def vemetric_node(sdk_pipeline: Any) -> dict[str, Any]:
    """@vemetric/node 0.2.0: a signup (sent twice) and a user update, over TLS."""
    mark = len(sdk_pipeline.requests.entries)
    report = sdk_pipeline.run_node(
        "vemetric-node.mjs",
        {"host": sdk_pipeline.tls_url, "token": sdk_pipeline.public_token, "user": NODE_USER},
    )
    rows = sdk_pipeline.wait_for(
        3, "user_id = %(user)s", {"user": NODE_USER}, timeout=30, check=False
    )
    return {"report": report, "rows": rows, "requests": sdk_pipeline.requests.since(mark)}


def test_vemetric_node_events(vemetric_node):
    requests_seen = vemetric_node["requests"]
    assert [(r["scheme"], r["method"], r["path"], r["status"]) for r in requests_seen] == [
        ("https", "POST", "/e", 200),
        ("https", "POST", "/e", 200),
        ("https", "POST", "/u", 200),
    ]  # fmt: skip
    rows = vemetric_node["rows"]
    assert pick(rows, "decision", "drop_reason", "name", "kind", "user_id", "display_name") == [
        (*ACCEPTED, "Signup Completed", "track", NODE_USER, "Nora Node"),
        (*DUPLICATE, "Signup Completed", "track", NODE_USER, "Nora Node"),
        (*ACCEPTED, "$update_user", "update_user", NODE_USER, "Nora N."),
    ]
    assert pick(rows, "properties", "user_properties") == [
        ({"plan": "pro", "seats": "3", "trial": "false"}, {"plan": "pro"}),
        ({"plan": "pro", "seats": "3", "trial": "false"}, {"plan": "pro"}),
        ({}, {"plan": "team", "avatarUrl": "https://img.example.org/n.png"}),
    ]
    assert {
        (r["source"], r["email"], r["revenue_amount"], r["revenue_currency"]) for r in rows
    } == {("vemetric", "", None, "")}


def test_vemetric_node_is_a_backend(vemetric_node):
    # No user agent at all (Node's https sends none), yet not a bot: a backend request.
    rows = vemetric_node["rows"]
    assert backend_facts(rows) == {("", "", "", "", "")}
    assert {(r["sdk_name"], r["sdk_version"]) for r in rows} == {("node", "0.2.0")}
    assert rows[0]["drop_reason"] != "bot"


def test_vemetric_node_profile(vemetric_node, sdk_pipeline):
    assert sdk_pipeline.profiles([NODE_USER]) == {
        NODE_USER: {
            "display_name": "Nora N.",
            "email": "",
            "avatar": "https://img.example.org/n.png",
            "anonymous_id": "",
        }
    }
    assert sdk_pipeline.property_values([NODE_USER]) == {
        NODE_USER: {
            "plan": "team",
            "signupAt": "2026-12-01",
            "avatarUrl": "https://img.example.org/n.png",
        }
    }


# --------------------------------------------------------------------------- vemetric (PyPI)

PY_USER = "py-user-1"


def test_vemetric_python_client(sdk_pipeline, caplog):
    client = VemetricClient(token=sdk_pipeline.public_token, host=sdk_pipeline.url, timeout=10)
    purchase = {
        "user_identifier": PY_USER,
        "user_display_name": "Ann Example",
        "event_data": {"amount": 49.5, "currency": "EUR", "items": ["a", "b"], "gift": False},
        "user_data": {"set": {"plan": "pro"}, "setOnce": {"signup": "2026-01-01"}, "unset": ["x"]},
    }
    client.track_event("Purchase Completed", **purchase)
    client.track_event("Purchase Completed", **purchase)  # the same call again: a retry
    client.update_user(
        PY_USER,
        user_display_name="Ann E.",
        user_avatar_url="https://img.example.org/a.png",
        user_data={"set": {"plan": "team"}, "unset": ["signup"]},
    )
    # The client only logs HTTP errors; none may have happened.
    assert [r.getMessage() for r in caplog.records if r.name == "Vemetric"] == []
    rows = sdk_pipeline.wait_for(3, "user_id = %(user)s", {"user": PY_USER})
    assert pick(rows, "decision", "drop_reason", "name", "kind", "display_name") == [
        (*ACCEPTED, "Purchase Completed", "track", "Ann Example"),
        (*DUPLICATE, "Purchase Completed", "track", "Ann Example"),
        (*ACCEPTED, "$update_user", "update_user", "Ann E."),
    ]
    props = {"amount": "49.5", "currency": "EUR", "items": '["a","b"]', "gift": "false"}
    assert pick(rows, "properties", "user_properties") == [
        (props, {"plan": "pro"}),
        (props, {"plan": "pro"}),
        ({}, {"plan": "team", "avatarUrl": "https://img.example.org/a.png"}),
    ]
    # A backend: the server's user agent and address are not the visitor's.
    assert backend_facts(rows) == {("", "", "", "", "")}
    assert {(r["source"], r["sdk_name"], r["sdk_version"]) for r in rows} == {
        ("vemetric", "python", "0.2.0")
    }
    assert sdk_pipeline.profiles([PY_USER]) == {
        PY_USER: {
            "display_name": "Ann E.",
            "email": "",
            "avatar": "https://img.example.org/a.png",
            "anonymous_id": "",
        }
    }
    # set, then unset: "signup" (set once) is gone; "x" was never set.
    assert sdk_pipeline.property_values([PY_USER]) == {
        PY_USER: {"plan": "team", "avatarUrl": "https://img.example.org/a.png"}
    }


def test_vemetric_python_dedup_identity(sdk_pipeline):
    # Identical but for one user-property edit is not identical; only the true
    # retry (the first call again) is a duplicate.
    client = VemetricClient(token=sdk_pipeline.public_token, host=sdk_pipeline.url, timeout=10)
    user = "py-user-2"
    edits = [
        {"set": {"plan": "pro"}},
        {"set": {"plan": "team"}},
        {"set": {"plan": "team"}, "setOnce": {"source": "ads"}},
        {"set": {"plan": "team"}, "unset": ["trial"]},
        {"set": {"plan": "pro"}},
    ]
    for edit in edits:
        client.track_event("Plan Chosen", user_identifier=user, event_data={"n": 1}, user_data=edit)
    rows = sdk_pipeline.wait_for(5, "user_id = %(user)s", {"user": user})
    assert pick(rows, "decision", "drop_reason", "user_properties") == [
        (*ACCEPTED, {"plan": "pro"}),
        (*ACCEPTED, {"plan": "team"}),
        (*ACCEPTED, {"plan": "team"}),
        (*ACCEPTED, {"plan": "team"}),
        (*DUPLICATE, {"plan": "pro"}),
    ]
    assert sdk_pipeline.property_values([user]) == {user: {"plan": "team", "source": "ads"}}


# --------------------------------------------------------------------------- vero (PyPI)


@pytest.fixture
def vero_at(monkeypatch: pytest.MonkeyPatch):
    """Point the vero package's endpoint table (it has no host option) at a base URL."""

    def point(base_url: str) -> None:
        for name, endpoint in vars(VeroEndpoints).items():
            if isinstance(endpoint, Endpoint):
                path = endpoint.url.removeprefix("https://api.getvero.com")
                monkeypatch.setattr(VeroEndpoints, name, Endpoint(endpoint.method, base_url + path))

    return point


def test_vero_client_events(sdk_pipeline, vero_at):
    vero_at(sdk_pipeline.url)
    logger = vero.VeroEventLogger(sdk_pipeline.vero_token)
    assert logger.heartbeat()
    data = {"product_name": "Red T-shirt", "price": 10, "in_stock": True}
    calls = [
        logger.add_event("Viewed Product", data, user_id=1000, user_email="Ann@Example.com"),
        # The same event again, its name spelled differently: Vero deems it the same.
        logger.add_event("viewed_product", data, user_id=1000, user_email="Ann@Example.com"),
        logger.add_event("Viewed Product", {**data, "price": 12}, user_id=1000),
    ]
    assert [(r.status_code, r.json()) for r in calls] == [
        (200, {"status": 200, "message": "Success."})
    ] * 3
    assert vero.VeroEventLogger("wrong-token").add_event("x", {}, user_id="u").status_code == 401
    rows = sdk_pipeline.wait_for(3, "user_id = '1000'")
    assert pick(rows, "decision", "drop_reason", "name", "normalised_name", "email") == [
        (*ACCEPTED, "Viewed Product", "viewed_product", "Ann@Example.com"),
        (*DUPLICATE, "viewed_product", "viewed_product", "Ann@Example.com"),
        (*ACCEPTED, "Viewed Product", "viewed_product", ""),
    ]
    props = {"product_name": "Red T-shirt", "price": "10", "in_stock": "true"}
    assert [r["properties"] for r in rows] == [props, props, {**props, "price": "12"}]
    assert {(r["source"], r["kind"], r["sdk_name"].split("/")[0]) for r in rows} == {
        ("vero", "track", "python-requests")
    }
    assert backend_facts(rows) == {("", "", "", "", "")}


def test_vero_client_profiles(sdk_pipeline, vero_at):
    vero_at(sdk_pipeline.url)
    logger = vero.VeroEventLogger(sdk_pipeline.vero_token)
    calls = [
        logger.add_user("vero-u2", {"first_name": "Bo"}, user_email="bo@example.com"),
        logger.edit_user("vero-u2", {"plan": "pro"}),
        logger.edit_user("vero-u2", {"plan": "team"}),  # other data: not a duplicate
        logger.add_tags("vero-u2", ["vip"]),
        logger.remove_tags("vero-u2", ["vip"]),  # the same tag removed: not a duplicate
        logger.unsubscribe_user("vero-u2"),
        logger.resubscribe_user("vero-u2"),
        # Known only by e-mail: an event and a profile.
        logger.add_event("Signed Up", {"source": "ads"}, None, "Only.Email@Example.com"),
        logger.add_user(None, {"first_name": "Eve"}, user_email="Only.Email@Example.com"),
        # Deleted: the profile and its properties go.
        logger.add_user("vero-u3", {"first_name": "Del"}, user_email="del@example.com"),
        logger.delete_user("vero-u3"),
    ]
    assert [r.status_code for r in calls] == [200] * len(calls)
    where = "user_id IN ('vero-u2', 'vero-u3') OR email = 'Only.Email@Example.com'"
    rows = sdk_pipeline.wait_for(11, where)
    assert pick(rows, "decision", "drop_reason", "name", "kind", "user_key", "email") == [
        (*ACCEPTED, "$identify", "identify", "vero-u2", "bo@example.com"),
        (*ACCEPTED, "$update_user", "update_user", "vero-u2", ""),
        (*ACCEPTED, "$update_user", "update_user", "vero-u2", ""),
        (*ACCEPTED, "$tags", "update_user", "vero-u2", ""),
        (*ACCEPTED, "$tags", "update_user", "vero-u2", ""),
        (*ACCEPTED, "$unsubscribe", "update_user", "vero-u2", ""),
        (*ACCEPTED, "$resubscribe", "update_user", "vero-u2", ""),
        (*ACCEPTED, "Signed Up", "track", "only.email@example.com", "Only.Email@Example.com"),
        (*ACCEPTED, "$identify", "identify", "only.email@example.com", "Only.Email@Example.com"),
        (*ACCEPTED, "$identify", "identify", "vero-u3", "del@example.com"),
        (*ACCEPTED, "$delete_user", "delete_user", "vero-u3", ""),
    ]
    assert [r["user_properties"] for r in rows] == [
        {"first_name": "Bo"},
        {"plan": "pro"},
        {"plan": "team"},
        {"$tags_add": '["vip"]'},
        {"$tags_remove": '["vip"]'},
        {"$unsubscribed": "true"},
        {"$unsubscribed": "false"},
        {},
        {"first_name": "Eve"},
        {"first_name": "Del"},
        {},
    ]
    users = ["vero-u2", "vero-u3", "only.email@example.com"]
    assert sdk_pipeline.profiles(users) == {
        "vero-u2": {
            "display_name": "",
            "email": "bo@example.com",
            "avatar": "",
            "anonymous_id": "",
        },
        "only.email@example.com": {
            "display_name": "",
            "email": "Only.Email@Example.com",
            "avatar": "",
            "anonymous_id": "",
        },
    }
    assert sdk_pipeline.property_values(users) == {
        "vero-u2": {
            "first_name": "Bo",
            "plan": "team",
            "$tags_add": '["vip"]',
            "$tags_remove": '["vip"]',
            "$unsubscribed": "false",
        },
        "only.email@example.com": {"first_name": "Eve"},
    }


# ------------------------------------------------------------------ plausible-events (PyPI)

APP_UA = "ExampleApp/3.1 (Linux; server-side tracking)"


def test_plausible_events_client(sdk_pipeline, monkeypatch):
    # Its constructor asks api.ipify.org for the caller's public address (sent as
    # X-Forwarded-For); that service is out of reach here, so only that look-up
    # is answered locally. The endpoint ignores X-Forwarded-For from an untrusted peer.
    looked_up = threading.Event()

    def public_ip(self: PlausibleEvents) -> str:
        looked_up.set()
        return "203.0.113.7"

    monkeypatch.setattr(PlausibleEvents, "_get_ip", public_ip)
    # Server-side tracking passes the visitor's user agent (the default, python-requests,
    # is a bot's).
    client = PlausibleEvents(
        domain="app.example.com",
        api=f"{sdk_pipeline.url}/api/event",
        headers={"User-Agent": APP_UA},
        timeout=1.0,
    )
    # The client's worker thread never ends by itself; as a daemon it ends with the tests.
    client.worker.daemon = True
    client.pageview("/home")
    client.pageview("/settings", utm={"source": "newsletter"})
    client.event("Export", {"rows": 3, "beta": True}, path="/settings")
    client.event("Export", {"rows": 3, "beta": True}, path="/settings")  # a retry
    rows = sdk_pipeline.wait_for(4, "domain = 'app.example.com'")
    assert looked_up.is_set()
    assert client.queue == []  # every request answered 2xx (failures are re-queued)
    assert pick(rows, "decision", "drop_reason", "name", "url", "properties") == [
        (*ACCEPTED, "$pageview", "app://localhost/home", {}),
        (*ACCEPTED, "$pageview", "app://localhost/settings?utm_source=newsletter", {}),
        # The client sends every prop value as str(value): Python's "True".
        (*ACCEPTED, "Export", "app://localhost/settings", {"rows": "3", "beta": "True"}),
        (*DUPLICATE, "Export", "app://localhost/settings", {"rows": "3", "beta": "True"}),
    ]
    visitors = {r["visitor_id"] for r in rows}
    assert len(visitors) == 1
    assert {
        (r["source"], r["kind"], r["user_key"], r["user_id"], r["user_agent"], r["referrer"])
        for r in rows
    } == {("plausible", "track", *visitors, "", APP_UA, "")}


# ------------------------------------------------------------------------ vtcdn (HTTP API)


def test_vtcdn_email_only_user_and_login_email(sdk_pipeline):
    # vtcdn has no official package: its documented request bodies, as its SDK sends them.
    auth = {"Authorization": f"Bearer {sdk_pipeline.vtcdn_key}"}
    bodies = [
        {"user": {"email": "Mail.Only@Example.com"}, "event": {"update": {"plan": "pro"}}},
        {"user": {"_id": "vt-1"}, "event": {"login": {"email": "vt1@example.com", "name": "V"}}},
    ]
    answers = [requests.post(f"{sdk_pipeline.url}/v1/event/", json=b, headers=auth) for b in bodies]
    assert [a.status_code for a in answers] == [200, 200]
    rows = sdk_pipeline.wait_for(2, "source = 'vtcdn'")
    mail = "Mail.Only@Example.com"
    assert pick(rows, "decision", "name", "kind", "user_key", "user_id", "email") == [
        ("accepted", "$update_user", "update_user", mail.lower(), "", mail),
        ("accepted", "login", "identify", "vt-1", "vt-1", "vt1@example.com"),
    ]
    users = ["mail.only@example.com", "vt-1"]
    assert {u: p["email"] for u, p in sdk_pipeline.profiles(users).items()} == {
        "mail.only@example.com": "Mail.Only@Example.com",
        "vt-1": "vt1@example.com",
    }
    assert sdk_pipeline.property_values(users) == {
        "mail.only@example.com": {"plan": "pro"},
        "vt-1": {"email": "vt1@example.com", "name": "V"},
    }


def test_stats_queries_agree_with_final(sdk_pipeline):
    # Whatever has landed so far: the latest decision per event id, as `eventsieve
    # stats` reads it, is the row FINAL keeps.
    assert sdk_pipeline.latest_decisions() == sdk_pipeline.decisions()
