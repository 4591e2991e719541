"""The ASGI layer with an in-memory producer: limits, errors, replay, ops routes.

Kafka itself is exercised in tests/integration/producers; here the producer
is a stand-in that acknowledges (or fails) records on the next poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import KafkaError

from eventsieve.config import Settings, load_settings
from producers.app import create_app
from producers.endpoint import Endpoint, build_endpoint
from producers.publisher import Publisher
from producers.salts import FixedSalts
from schemas.codecs import decode_raw

EXAMPLE = Path(__file__).resolve().parents[3] / "eventsieve.toml"
VIBE = {"Authorization": "Bearer demo-secret-key"}
EVENT = {"external_user_id": "u1", "name": "signed_up"}


class Clock:
    """A monotonic clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryProducer:
    """A transactional producer in memory: records land at commit; ``fail`` fails deliveries."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.pending: list[tuple[Any, bytes, bytes]] = []
        self.open: list[tuple[bytes, bytes]] = []
        self.records: list[tuple[bytes, bytes]] = []
        self.fail = False

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        self.open = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.pending.append((on_delivery, key, value))

    def poll(self, timeout: float) -> int:
        batch, self.pending = self.pending, []
        for callback, key, value in batch:
            if self.fail:
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            else:
                self.open.append((key, value))
                callback(None, None)
        return len(batch)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def commit_transaction(self, timeout: float) -> None:
        self.records.extend(self.open)
        self.open = []

    def abort_transaction(self, timeout: float) -> None:
        self.open = []

    def list_topics(self, topic: str, timeout: float) -> Any:
        raise RuntimeError("not used")


def settings(**server: Any) -> Settings:
    base = load_settings(EXAMPLE)
    return base.model_copy(update={"server": base.server.model_copy(update=server)})


@asynccontextmanager
async def client(
    cfg: Settings, clock: Clock | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, MemoryProducer, Endpoint]]:
    clock = clock or Clock()
    made: list[MemoryProducer] = []

    def factory(config: dict[str, Any]) -> MemoryProducer:
        made.append(MemoryProducer(config))
        return made[-1]

    publisher = Publisher(
        {},
        cfg.topics.raw,
        delivery_timeout_s=1.0,
        retry_after_s=7,
        producer_factory=factory,  # type: ignore[arg-type]
        clock=clock,
    )
    # A frozen monotonic clock: rate-limit buckets never refill during a test.
    endpoint = build_endpoint(
        cfg, publisher=publisher, monotonic=lambda: 1000.0, salts=FixedSalts()
    )
    app = create_app(endpoint)
    async with app.fallback.router.lifespan_context(app.fallback):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://es") as http:
            yield http, made[0], endpoint


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_accepted_event_is_produced_with_edge_context():
    browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"

    async def scenario() -> None:
        async with client(settings(access_log=False)) as (http, producer, _):
            response = await http.post(
                "/e",
                json={"name": "signup", "identifier": "u7", "url": "https://www.shop.example/a"},
                headers={
                    "Token": "demo-public-token",
                    "User-Agent": browser,
                    "V-Host": "hub.example.net",
                    "V-SDK": "script",
                    "V-SDK-Version": "0.6.1",
                },
            )
            assert (response.status_code, response.content) == (200, b"")
            ((key, value),) = producer.records
            event = decode_raw(value)
            assert key == b"demo:u7"
            assert (event["ip"], event["user_agent"], event["sdk_name"], event["domain"]) == (
                "203.0.113.9",
                browser,
                "script",
                "shop.example",
            )
            assert event["visitor_id"]

    run(scenario())


def test_a_server_sdk_request_is_not_the_visitor():
    """The Vemetric server SDKs call from a backend: its address and agent are not a visitor's."""

    async def scenario() -> None:
        async with client(settings(access_log=False)) as (http, producer, _):
            response = await http.post(
                "/e",
                json={"name": "signup", "userIdentifier": "u7"},
                headers={
                    "Token": "demo-public-token",
                    "User-Agent": "vemetric-python/0.2.0",
                    "V-SDK": "python",
                    "V-SDK-Version": "0.2.0",
                },
            )
            assert (response.status_code, response.content) == (200, b"")
            ((_, value),) = producer.records
            event = decode_raw(value)
            assert (event["ip"], event["user_agent"], event["visitor_id"]) == (None, None, None)
            assert (event["sdk_name"], event["sdk_version"]) == ("python", "0.2.0")

    run(scenario())


def test_body_limit_is_413_in_the_api_shape_and_publishes_nothing():
    async def scenario() -> None:
        async with client(settings(max_body_bytes=2048, access_log=False)) as (http, producer, _):
            big = {"name": "x", "customData": {"a": "b" * 4096}}
            response = await http.post("/e", json=big, headers={"Token": "demo-public-token"})
            assert response.status_code == 413
            response = await http.post(
                "/api/v1/events", json={**EVENT, "p": "x" * 4096}, headers=VIBE
            )
            assert response.status_code == 413
            assert orjson.loads(response.content)["errors"][0]["field"] == "body"
            assert producer.records == []

    run(scenario())


def test_kafka_failure_is_503_with_retry_after_and_idempotency_key_released():
    async def scenario() -> None:
        clock = Clock()
        async with client(settings(access_log=False), clock) as (http, producer, _):
            producer.fail = True
            headers = {**VIBE, "Idempotency-Key": "k1"}
            response = await http.post("/api/v1/events", json=EVENT, headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "7"
            producer.fail = False
            # Within retry_after of the outage, requests fail fast without producing.
            response = await http.post("/api/v1/events", json=EVENT, headers=headers)
            assert response.status_code == 503
            assert producer.pending == producer.records == []
            clock.now += 7
            response = await http.post("/api/v1/events", json=EVENT, headers=headers)
            assert response.status_code == 202
            assert "idempotent-replayed" not in response.headers
            again = await http.post("/api/v1/events", json=EVENT, headers=headers)
            assert again.headers["idempotent-replayed"] == "true"
            assert len(producer.records) == 1

    run(scenario())


def test_rate_limit_429_per_project():
    async def scenario() -> None:
        cfg = settings(access_log=False)
        demo = cfg.projects[0].model_copy(update={"rate_limit_per_second": 2})
        cfg = cfg.model_copy(update={"projects": (demo,)})
        async with client(cfg) as (http, producer, _):
            statuses = []
            for _ in range(3):
                r = await http.post("/api/v1/events", json=EVENT, headers=VIBE)
                statuses.append(r.status_code)
            assert statuses == [202, 202, 429]
            assert int(r.headers["retry-after"]) >= 1
            assert orjson.loads(r.content)["errors"][0]["code"] == "rate_limited"
            assert len(producer.records) == 2

    run(scenario())


def test_cors_preflight_echoes_origin_with_credentials():
    async def scenario() -> None:
        async with client(settings(access_log=False)) as (http, _, _):
            response = await http.options(
                "/e",
                headers={
                    "Origin": "https://shop.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "token,allow-cookies,v-sdk",
                },
            )
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "https://shop.example"
            assert response.headers["access-control-allow-credentials"] == "true"

    run(scenario())


def test_ops_routes_and_metrics():
    async def scenario() -> None:
        async with client(settings(access_log=False)) as (http, _, _):
            assert (await http.get("/healthz")).status_code == 200
            doc = orjson.loads((await http.get("/openapi.json")).content)
            assert "/v1/events" in doc["paths"]
            await http.post(
                "/v1/events",
                json={"name": "a"},
                headers={"Authorization": "Bearer demo-public-token"},
            )
            await http.post("/v1/events", json={}, headers={"Authorization": "Bearer x"})
            text = (await http.get("/metrics")).text
            assert (
                'eventsieve_http_requests_total{route="native:POST /v1/events",status="202"} 1.0'
                in text
            )
            assert 'eventsieve_events_accepted_total{source="native"} 1.0' in text
            assert (
                'eventsieve_requests_rejected_total{reason="unauthorized",source="native"} 1.0'
                in text
            )

    run(scenario())


@pytest.mark.parametrize("path", ["/up", "/api/v2/heartbeat"])
def test_pings_need_no_credentials(path):
    async def scenario() -> None:
        async with client(settings(access_log=False)) as (http, producer, _):
            assert (await http.get(path)).status_code == 200
            assert producer.records == []

    run(scenario())


def test_a_record_too_large_for_kafka_is_the_clients_413_not_a_503():
    async def scenario() -> None:
        async with client(settings(access_log=False)) as (http, producer, _):

            def refuse(*args: Any, **kwargs: Any) -> None:
                from confluent_kafka import KafkaException

                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))

            producer.produce = refuse  # type: ignore[method-assign]
            response = await http.post("/api/v1/events", json=EVENT, headers=VIBE)
            assert response.status_code == 413
            assert orjson.loads(response.content)["errors"][0]["field"] == "body"

    run(scenario())


def test_rejection_metrics_have_a_closed_set_of_reasons():
    async def scenario() -> None:
        async with client(settings(access_log=False)) as (http, _, _):
            for name in ("x" * 300, 5, ""):
                await http.post(
                    "/api/v2/events/track",
                    params={"auth_token": "demo-vero-token"},
                    json={"identity": {"id": "u"}, "event_name": name},
                )
            text = (await http.get("/metrics")).text
            lines = [line for line in text.splitlines() if "requests_rejected_total{" in line]
            expected = 'eventsieve_requests_rejected_total{reason="invalid",source="vero"} 3.0'
            assert lines == [expected]

    run(scenario())
