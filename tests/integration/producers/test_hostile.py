"""A hostile or careless client against the real endpoint and broker: nothing it sends
can exhaust the endpoint, slip an oversized record downstream or starve others.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from producers.limits import EdgeLimits

pytestmark = pytest.mark.timeout(120)

NATIVE_PUBLIC = {"Authorization": "Bearer demo-public-token"}
NATIVE_SERVER = {"Authorization": "Bearer demo-secret-key"}


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within ``seconds``, and what it sent."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_a_record_too_large_for_the_pipeline_is_413_and_nothing_is_published(
    make_settings, serve, read_raw
):
    ep = serve(make_settings(), limits=EdgeLimits(max_record_bytes=100_000))
    big = {
        "name": "big",
        "properties": {"blob": "x" * 150_000},
        "timestamp": "9999-12-31T00:00:00Z",
    }
    with httpx.Client(base_url=ep.url, timeout=30) as http:
        refused = http.post("/v1/events", headers=NATIVE_PUBLIC, json=big)
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == ("invalid", "event")
        ok = http.post("/v1/events", headers=NATIVE_PUBLIC, json={"name": "small"})
        assert ok.status_code == 202
    assert [event["name"] for _, event in read_raw(ep.topic)] == ["small"]


def test_headers_copied_into_every_event_cannot_amplify_a_request(make_settings, serve, read_raw):
    limits = EdgeLimits(max_request_record_bytes=200_000)
    ep = serve(make_settings(max_batch_events=1_000), limits=limits)
    batch = {"events": [{"name": f"e{i}"} for i in range(500)]}
    agent = {"User-Agent": "Mozilla/5.0 " + "A" * 8_000}
    with httpx.Client(base_url=ep.url, timeout=30) as http:
        refused = http.post("/v1/events", headers={**NATIVE_PUBLIC, **agent}, json=batch)
        assert refused.status_code == 413
        assert http.post("/v1/events", headers=NATIVE_PUBLIC, json=batch).status_code == 202
    assert len(read_raw(ep.topic)) == 500


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Big": "y" * 1_000_000},
        {f"X-H{i}": "v" for i in range(3_000)},
    ],
    ids=["one-megabyte-header", "three-thousand-headers"],
)
def test_oversized_or_too_many_headers_are_431(make_settings, serve, read_raw, headers):
    ep = serve(make_settings())
    with httpx.Client(base_url=ep.url, timeout=30) as http:
        refused = http.post("/v1/events", headers={**NATIVE_PUBLIC, **headers}, json={"name": "x"})
        assert refused.status_code == 431
        assert refused.json()["error"]["field"] == "headers"
        assert http.get("/healthz").status_code == 200
    assert read_raw(ep.topic) == []


def test_idempotency_keys_are_at_most_255_characters(make_settings, serve, read_raw):
    ep = serve(make_settings())
    event = {"name": "order"}
    with httpx.Client(base_url=ep.url, timeout=30) as http:
        long_key = {**NATIVE_SERVER, "Idempotency-Key": "k" * 256}
        refused = http.post("/v1/events", headers=long_key, json=event)
        assert refused.status_code == 400
        assert refused.json()["error"]["field"] == "Idempotency-Key"
        ok_key = {**NATIVE_SERVER, "Idempotency-Key": "k" * 255}
        assert http.post("/v1/events", headers=ok_key, json=event).status_code == 202
        vibe = {"Authorization": "Bearer demo-secret-key", "Idempotency-Key": "v" * 300}
        body = {"external_user_id": "u1", "name": "signup"}
        assert http.post("/api/v1/events", headers=vibe, json=body).status_code == 422
    assert len(read_raw(ep.topic)) == 1


def test_slow_and_idle_clients_are_closed(make_settings, serve):
    limits = EdgeLimits(header_timeout_s=2.0, body_timeout_s=2.0)
    ep = serve(make_settings(), limits=limits)
    address = _address(ep.url)
    idle = socket.create_connection(address)
    slow_headers = socket.create_connection(address)
    slow_headers.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
    slow_body = socket.create_connection(address)
    slow_body.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-public-token\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"name":'
    )
    stop = threading.Event()

    def trickle() -> None:  # one header byte a second keeps the connection busy, not done
        while not stop.wait(0.5):
            try:
                slow_headers.sendall(b"X")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    try:
        results = {
            name: _closed_within(sock, 8.0)
            for name, sock in (("idle", idle), ("headers", slow_headers), ("body", slow_body))
        }
    finally:
        stop.set()
        for sock in (idle, slow_headers, slow_body):
            sock.close()
    assert results["idle"][0], "an idle connection stayed open"
    assert results["headers"][0], "a slow-header connection stayed open"
    closed, answer = results["body"]
    assert closed, "a slow-body connection stayed open"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    with httpx.Client(base_url=ep.url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200


def test_requests_beyond_the_concurrency_bound_are_503_with_retry_after(make_settings, serve):
    limits = EdgeLimits(max_inflight_requests=2, body_timeout_s=10.0)
    ep = serve(make_settings(), limits=limits)
    address = _address(ep.url)
    held = []
    for _ in range(2):  # two requests in flight, waiting for their bodies
        sock = socket.create_connection(address)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-public-token\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        held.append(sock)
    try:
        time.sleep(0.5)
        with httpx.Client(base_url=ep.url, timeout=10) as http:
            busy = http.post("/v1/events", headers=NATIVE_PUBLIC, json={"name": "x"})
            assert busy.status_code == 503
            assert int(busy.headers["retry-after"]) >= 1
            assert busy.json()["error"]["code"] == "unavailable"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    with httpx.Client(base_url=ep.url, timeout=10) as http:
        assert http.post("/v1/events", headers=NATIVE_PUBLIC, json={"name": "x"}).status_code == 202


def test_a_drained_server_key_does_not_rate_limit_the_browsers(make_settings, serve, read_raw):
    settings = make_settings()
    projects = tuple(
        p.model_copy(update={"rate_limit_per_second": 5.0}) if p.id == "demo" else p
        for p in settings.projects
    )
    ep = serve(settings.model_copy(update={"projects": projects}))
    with httpx.Client(base_url=ep.url, timeout=10) as http:
        statuses = [
            http.post("/v1/events", headers=NATIVE_SERVER, json={"name": f"s{i}"}).status_code
            for i in range(12)
        ]
        assert 429 in statuses
        browser = http.post("/v1/events", headers=NATIVE_PUBLIC, json={"name": "browser"})
        assert browser.status_code == 202


def test_failed_authentication_is_rate_limited_per_client(make_settings, serve):
    ep = serve(make_settings(), limits=EdgeLimits(failed_auth_per_minute=10))
    with httpx.Client(base_url=ep.url, timeout=10) as http:
        wrong = {"Authorization": "Bearer guess"}
        statuses = [
            http.post("/v1/events", headers=wrong, json={"name": "x"}).status_code
            for _ in range(15)
        ]
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}
        limited = http.post("/v1/events", headers=wrong, json={"name": "x"})
        assert int(limited.headers["retry-after"]) >= 1


def test_the_error_shapes_of_the_new_answers_are_json(make_settings, serve):
    ep = serve(make_settings())
    with httpx.Client(base_url=ep.url, timeout=10) as http:
        refused = http.post(
            "/api/event", headers={"X-Big": "y" * 40_000}, content=orjson.dumps({"n": "x"})
        )
        assert refused.status_code == 431
        assert refused.json() == {"errors": {"headers": [refused.json()["errors"]["headers"][0]]}}


def test_behind_a_trusted_proxy_failed_authentication_is_counted_per_client(make_settings, serve):
    ep = serve(
        make_settings(trusted_proxies=("127.0.0.1",)), limits=EdgeLimits(failed_auth_per_minute=3)
    )
    wrong = {"Authorization": "Bearer guess"}
    with httpx.Client(base_url=ep.url, timeout=10) as http:
        guesser = {**wrong, "X-Forwarded-For": "203.0.113.1"}
        statuses = [
            http.post("/v1/events", headers=guesser, json={"name": "x"}).status_code
            for _ in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        neighbour = {"X-Forwarded-For": "203.0.113.2"}
        assert (
            http.post("/v1/events", headers={**wrong, **neighbour}, json={"name": "x"}).status_code
            == 401
        )
        mine = {**NATIVE_PUBLIC, **neighbour}
        assert http.post("/v1/events", headers=mine, json={"name": "x"}).status_code == 202
