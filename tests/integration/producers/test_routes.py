"""Every route against the real broker: what lands in the raw topic, and what never does."""

from __future__ import annotations

import httpx
import orjson
import pytest

# A hung broker or server fails the test instead of stalling the suite.
pytestmark = pytest.mark.timeout(120)

NATIVE = {"Authorization": "Bearer demo-public-token"}
VIBE = {"Authorization": "Bearer demo-secret-key"}


def by_name(records):
    return {event["name"]: (key, event) for key, event in records}


def test_native_single_and_batch(make_settings, serve, read_raw):
    ep = serve(make_settings())
    with httpx.Client(base_url=ep.url) as http:
        one = http.post(
            "/v1/events",
            headers=NATIVE,
            json={
                "name": "signup",
                "user_id": "u1",
                "properties": {"plan": "pro", "seats": 3},
                "timestamp": "2026-01-02T03:04:05Z",
                "event_id": "evt-1",
            },
        )
        assert one.status_code == 202
        assert one.json() == {"accepted": 1, "event_ids": ["evt-1"]}
        batch = http.post(
            "/v1/events",
            headers=NATIVE,
            json={
                "events": [
                    {"name": "a", "anonymous_id": "anon-1"},
                    {
                        "kind": "identify",
                        "user_id": "u2",
                        "email": "u2@example.com",
                        "user_properties": {"tier": "gold"},
                    },
                ]
            },
        )
        assert batch.status_code == 202
        batch_ids = batch.json()["event_ids"]
        bad = http.post("/v1/events", headers=NATIVE, json={"events": [{"name": "ok"}, {}]})
        assert bad.status_code == 400
        assert bad.json()["error"]["field"] == "events[1].name"
    records = read_raw(ep.topic)
    assert len(records) == 3
    events = by_name(records)
    key, signup = events["signup"]
    assert key == b"demo:u1"
    assert (signup["event_id"], signup["source"], signup["properties"]) == (
        "evt-1",
        "native",
        {"plan": "pro", "seats": "3"},
    )
    assert signup["timestamp"] == 1767323045000
    assert signup["ip"] == "127.0.0.1"
    assert events["a"][0] == b"demo:anon-1"
    key, identify = events["$identify"]
    assert (key, identify["kind"], identify["user_properties"]) == (
        b"demo:u2",
        "identify",
        {"tier": "gold"},
    )
    assert sorted([events["a"][1]["event_id"], identify["event_id"]]) == sorted(batch_ids)


def test_vemetric_browser_shapes_and_errors(make_settings, serve, read_raw):
    ep = serve(make_settings())
    web = {
        "Token": "demo-public-token",
        "Allow-Cookies": "false",
        "V-SDK": "script",
        "V-SDK-Version": "0.6.1",
        "V-Host": "hub.example.net",  # the hub the script talks to, not the site
        "v-referrer": "https://r.example/",
        "Origin": "https://example.com",
        "User-Agent": "Mozilla/5.0 Test",
    }
    with httpx.Client(base_url=ep.url) as http:
        page = http.post(
            "/e",
            headers=web,
            json={
                "name": "$$pageView",
                "url": "https://example.com/a",
                "contextId": "ctx1",
            },
        )
        assert (page.status_code, page.content) == (200, b"")
        assert page.headers["access-control-allow-origin"] == "https://example.com"
        assert page.headers["access-control-allow-credentials"] == "true"
        # sendBeacon: headers merged into the body.
        beacon = http.post(
            "/e",
            content=orjson.dumps(
                {
                    "name": "$$outboundLink",
                    "url": "https://example.com/a",
                    "Token": "demo-public-token",
                    "customData": {"href": "https://elsewhere.example/"},
                }
            ),
            headers={"Content-Type": "application/json"},
        )
        assert beacon.status_code == 200
        for body in (
            {"name": "$pageview"},
            {"name": "$outbound_link", "url": "https://x/"},
            {"url": "https://x/"},
        ):
            bad = http.post("/e", headers=web, json=body)
            assert (bad.status_code, bad.text) == (400, "Invalid!")
        assert http.post("/e", headers={"Token": "nope"}, json={"name": "x"}).status_code == 401
        assert (
            http.post(
                "/i", headers=web, json={"identifier": "u5", "displayName": "Five"}
            ).status_code
            == 200
        )
        assert http.post("/r", headers=web).status_code == 200
        assert (
            http.post("/l", headers=web, json={"url": "https://example.com/a"}).status_code == 200
        )
        assert http.get("/up").status_code == 200
    events = by_name(read_raw(ep.topic))
    assert set(events) == {"$pageview", "$outbound_link", "$identify", "$pageleave"}
    key, page_event = events["$pageview"]
    assert page_event["visitor_id"]
    assert key == f"demo:{page_event['visitor_id']}".encode()
    assert (page_event["domain"], page_event["referrer"], page_event["context_id"]) == (
        "example.com",
        "https://r.example/",
        "ctx1",
    )
    assert (page_event["sdk_name"], page_event["sdk_version"]) == ("script", "0.6.1")
    # Identify has no URL: the site is the browser's Origin, so the visitor id matches.
    assert events["$identify"][1]["domain"] == "example.com"
    assert page_event["user_agent"] == "Mozilla/5.0 Test"
    assert events["$outbound_link"][1]["properties"] == {"href": "https://elsewhere.example/"}
    assert events["$identify"][0] == b"demo:u5"


def test_vero_limits_and_project_isolation(make_settings, serve, read_raw):
    ep = serve(make_settings())
    body = {
        "identity": {"id": 1000, "email": "test@example.com"},
        "event_name": "Viewed product",
        "data": {"product_name": "Red T-shirt"},
        "extras": {"source": "Segment.com", "created_at": "2023-05-30T04:46:31+0000"},
    }
    with httpx.Client(base_url=ep.url) as http:
        ok = http.post("/api/v2/events/track", params={"auth_token": "other-vero-token"}, json=body)
        assert ok.json() == {"status": 200, "message": "Success."}
        for change in (
            {"event_name": "x" * 255},
            {"identity": {"id": "1", "email": "nope"}},
            {"identity": {"id": "i" * 255}},
        ):
            bad = http.post(
                "/api/v2/events/track",
                params={"auth_token": "demo-vero-token"},
                json={**body, **change},
            )
            assert bad.status_code == 400
        assert (
            http.post("/api/v2/events/track", params={"auth_token": "x"}, json=body).status_code
            == 401
        )
    ((key, event),) = read_raw(ep.topic)
    assert key == b"other:1000"
    assert (event["project"], event["email"], event["timestamp"]) == (
        "other",
        "test@example.com",
        1685421991000,
    )


def test_vtcdn_events_and_documented_errors(make_settings, serve, read_raw):
    ep = serve(make_settings())
    key = {"Authorization": "demo-vtcdn-key"}
    with httpx.Client(base_url=ep.url) as http:
        ok = http.post(
            "/v1/event/",
            headers=key,
            json={
                "user": {"email": "buyer@example.com"},
                "event": {"confirmation": {"orderId": "A-1", "total": "10"}},
            },
        )
        assert ok.json()["results"]["message"] == "Event created"
        opened = http.post(
            "/v1/event/",
            headers=key,
            json={"user": {"_id": "42"}, "event": {"emailOpen": {"campaignId": "c1"}}},
        )
        assert opened.status_code == 200
        missing = http.post("/v1/event/", headers=key, json={"user": {"_id": "42"}})
        assert missing.status_code == 400
        assert missing.json()["errors"][0]["message"] == "Missing event information"
        assert (
            http.post(
                "/v1/event/",
                headers={"Authorization": "nope"},
                json={"user": {"_id": "42"}, "event": {"update": {}}},
            ).status_code
            == 401
        )
    events = by_name(read_raw(ep.topic))
    assert set(events) == {"confirmation", "email_open"}
    assert events["confirmation"][0] == b"demo:buyer@example.com"
    assert events["confirmation"][1]["order_id"] == "A-1"
    assert events["email_open"][1]["properties"] == {"campaignId": "c1"}


def test_plausible_routing_limits_and_headers(make_settings, serve, read_raw):
    ep = serve(make_settings())
    headers = {
        "Content-Type": "text/plain",
        "User-Agent": "Mozilla/5.0 P",
        "X-Plausible-IP-Type": "dc_ip",
    }
    with httpx.Client(base_url=ep.url) as http:
        ok = http.post(
            "/api/event",
            headers=headers,
            content=orjson.dumps(
                {
                    "n": "pageview",
                    "u": "https://www.example.com/x#h",
                    "r": "https://ref.example/",
                    "p": '{"author": "ann", "n": 3}',
                    "h": 1,
                    "v": 27,
                }
            ),
        )
        assert (ok.status_code, ok.text) == (202, "ok")
        eng = http.post(
            "/api/event",
            headers=headers,
            content=orjson.dumps(
                {"n": "engagement", "u": "https://other.example/x", "sd": 250, "e": 1200}
            ),
        )
        assert eng.status_code == 202
        for body in (
            {"n": "engagement", "u": "https://example.com/"},
            {"n": "x" * 121, "u": "https://example.com/"},
            {"n": "x", "u": "https://unknown.example/"},
            {"n": "x", "u": "https://example.com/", "p": {str(i): "v" for i in range(31)}},
        ):
            assert http.post("/api/event", json=body).status_code == 400
    events = by_name(read_raw(ep.topic))
    key, page = events["$pageview"]
    assert (page["project"], page["domain"], page["properties"]) == (
        "demo",
        "example.com",
        {"author": "ann", "n": "3"},
    )
    assert (page["ip_classification"], page["hash_mode"], page["sdk_version"]) == (
        "dc_ip",
        True,
        "27",
    )
    assert key == f"demo:{page['visitor_id']}".encode()
    engagement = events["engagement"][1]
    assert (
        engagement["project"],
        engagement["scroll_depth"],
        engagement["engagement_time_ms"],
    ) == (
        "other",
        100,
        1200,
    )


def test_vibefollow_idempotency_batch_and_auth(make_settings, serve, read_raw):
    ep = serve(make_settings())
    event = {
        "external_user_id": "usr_42",
        "name": "user_signed_up",
        "properties": {"plan": "trial"},
    }
    with httpx.Client(base_url=ep.url) as http:
        headers = {**VIBE, "Idempotency-Key": "7b6c7e9e"}
        first = http.post("/api/v1/events", headers=headers, json=event)
        again = http.post("/api/v1/events", headers=headers, json=event)
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json() == {"data": {"accepted": True}}
        assert again.headers["idempotent-replayed"] == "true"
        other_body = http.post("/api/v1/events", headers=headers, json={**event, "name": "x"})
        assert other_body.status_code == 422
        bad_batch = http.post(
            "/api/v1/events/batch", headers=VIBE, json={"events": [event, {"name": "no user"}]}
        )
        assert bad_batch.status_code == 422
        assert bad_batch.json()["errors"][0]["field"] == "events[1].external_user_id"
        batch = http.post(
            "/api/v1/events/batch",
            headers=VIBE,
            json={"events": [{**event, "name": f"e{i}"} for i in range(3)]},
        )
        assert batch.status_code == 202
        user = http.post(
            "/api/v1/users",
            headers=VIBE,
            json={"external_user_id": "usr_42", "email": "u@example.com"},
        )
        assert user.status_code == 202
        assert http.post("/api/v1/events", json=event).status_code == 401
        assert (
            http.post(
                "/api/v1/events", headers={"Authorization": "Bearer nope"}, json=event
            ).status_code
            == 401
        )
        assert http.post("/api/v1/events", headers=NATIVE, json=event).status_code == 403
    records = read_raw(ep.topic)
    names = sorted(e["name"] for _, e in records)
    assert names == ["$identify", "e0", "e1", "e2", "user_signed_up"]
    signed_up = by_name(records)["user_signed_up"][1]
    assert signed_up["idempotency_key"] == "7b6c7e9e"
    assert all(key == b"demo:usr_42" for key, _ in records)


def test_rate_limit_answers_429_with_retry_after(make_settings, serve, read_raw):
    settings = make_settings()
    # 0.1 events/s: after a batch of 2 the bucket owes 1 event, a 20 s wait, far longer
    # than this test runs, so the 429 does not depend on timing.
    slow = settings.projects[0].model_copy(update={"rate_limit_per_second": 0.1})
    ep = serve(settings.model_copy(update={"projects": (slow, *settings.projects[1:])}))
    with httpx.Client(base_url=ep.url) as http:
        first = http.post("/v1/events", headers=NATIVE, json={"events": [{"name": "a"}] * 2})
        limited = http.post("/v1/events", headers=NATIVE, json={"name": "b"})
        vemetric = http.post("/e", headers={"Token": "demo-public-token"}, json={"name": "c"})
        other = http.post(
            "/v1/events", headers={"Authorization": "Bearer other-public-token"}, json={"name": "d"}
        )
    assert first.status_code == 202
    assert limited.status_code == 429
    assert 19 <= int(limited.headers["retry-after"]) <= 20
    assert limited.json()["error"]["code"] == "rate_limited"
    assert (vemetric.status_code, vemetric.text) == (429, "Too many requests")
    assert other.status_code == 202  # another project's budget is its own
    assert sorted(e["name"] for _, e in read_raw(ep.topic)) == ["a", "a", "d"]


def test_health_ready_metrics(make_settings, serve):
    ep = serve(make_settings())
    with httpx.Client(base_url=ep.url) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        http.post("/v1/events", headers=NATIVE, json={"name": "a"})
        metrics = http.get("/metrics").text
    assert 'eventsieve_events_accepted_total{source="native"} 1.0' in metrics
    assert "eventsieve_produce_seconds_count 1.0" in metrics


@pytest.mark.timeout(60)
def test_kafka_down_is_503_never_2xx(make_settings, serve):
    # Nothing listens on this port: every delivery fails after the delivery timeout.
    ep = serve(make_settings(bootstrap="127.0.0.1:9", delivery_timeout_s=1.0, retry_after_s=3))
    with httpx.Client(base_url=ep.url, timeout=10) as http:
        # A browser's event needs today's visitor-id salt, which lives in Kafka
        # too: without Kafka it is 503 at once. A server's event needs none and
        # waits for the delivery timeout.
        browser = http.post("/v1/events", headers=NATIVE, json={"name": "a"})
        native = http.post("/v1/events", headers=VIBE, json={"name": "a"})
        # The outage is known now: the next requests fail fast instead of waiting 1 s each.
        vemetric = http.post("/e", headers={"Token": "demo-public-token"}, json={"name": "a"})
        vibe = http.post(
            "/api/v1/events",
            headers={**VIBE, "Idempotency-Key": "k"},
            json={"external_user_id": "u", "name": "a"},
        )
        ready = http.get("/readyz")
    for response in (browser, native, vemetric, vibe, ready):
        assert response.status_code == 503
        assert response.headers["retry-after"]
    assert native.headers["retry-after"] == "3"
    assert native.json()["error"]["code"] == "unavailable"
    assert browser.json()["error"]["code"] == "unavailable"
    assert native.elapsed.total_seconds() >= 0.9  # waited for the delivery timeout
    assert vemetric.elapsed.total_seconds() < 0.9
    assert (vemetric.text, vibe.json()["errors"][0]["code"]) == (
        "Service unavailable",
        "unavailable",
    )


def test_forwarded_for_only_from_trusted_proxies_and_body_cap(make_settings, serve, read_raw):
    proxied = serve(make_settings(trusted_proxies=("127.0.0.1/32",), max_body_bytes=2048))
    direct = serve(make_settings())
    xff = {**NATIVE, "X-Forwarded-For": "6.6.6.6, 198.51.100.23", "CF-IPCountry": "NL"}
    with httpx.Client(base_url=proxied.url) as http:
        assert http.post("/v1/events", headers=xff, json={"name": "via_proxy"}).status_code == 202
        big = http.post("/v1/events", headers=NATIVE, json={"name": "x", "url": "u" * 4096})
        assert big.status_code == 413
        assert big.json()["error"]["field"] == "body"
    with httpx.Client(base_url=direct.url) as http:
        assert http.post("/v1/events", headers=xff, json={"name": "direct"}).status_code == 202
    ((_, via_proxy),) = read_raw(proxied.topic)
    assert (via_proxy["ip"], via_proxy["country"]) == ("198.51.100.23", "NL")
    ((_, from_client),) = read_raw(direct.topic)
    assert (from_client["ip"], from_client["country"]) == ("127.0.0.1", None)
