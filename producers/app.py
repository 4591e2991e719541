"""The ASGI application: routes of every API, health, metrics, OpenAPI.

Handlers are thin: read the body (bounded), hand it to the route's pure
parser, check the project's rate limit, turn submissions into records, and
answer only after Kafka acknowledged them. Cross-cutting concerns (CORS,
access log, request metrics) are ASGI middleware around the router.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventsieve.config import Settings
from eventsieve.logging import get_logger
from eventsieve.services import kafka_bootstrap
from producers.apis import ALL_ROUTES
from producers.apis.base import ParseContext, Route
from producers.edge import IpNetwork, edge_context, parse_networks
from producers.errors import PublishError, Rejection
from producers.idempotency import IdempotencyStore, fingerprint, scope_key
from producers.metrics import Metrics
from producers.model import HttpRequest, Reply
from producers.openapi import openapi_document
from producers.projects import ProjectDirectory
from producers.publisher import Publisher, producer_config
from producers.ratelimit import RateLimiter, retry_after_seconds
from producers.records import record

log = get_logger("eventsieve.producers")
access_log = get_logger("eventsieve.access")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _TooLarge(Exception):
    pass


@dataclass
class Endpoint:
    """Everything a handler needs, built once per process."""

    settings: Settings
    directory: ProjectDirectory
    publisher: Publisher
    limiter: RateLimiter
    idempotency: IdempotencyStore
    metrics: Metrics
    trusted: tuple[IpNetwork, ...]
    clock: Clock = utc_now

    @property
    def context(self) -> ParseContext:
        return ParseContext(self.directory, self.settings.server.max_batch_events)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _response(reply: Reply | Rejection, extra: dict[str, str] | None = None) -> Response:
    headers = dict(reply.headers) if isinstance(reply, Rejection) else {}
    headers.update(extra or {})
    return Response(reply.body, reply.status, headers=headers, media_type=reply.media_type)


class RouteHandler:
    """The Starlette endpoint of one API route."""

    def __init__(self, route: Route, endpoint: Endpoint) -> None:
        self.route = route
        self.endpoint = endpoint
        self.ctx = endpoint.context
        self.max_body = endpoint.settings.server.max_body_bytes
        self.salt = endpoint.settings.privacy.salt_secret.get_secret_value()
        self.source = route.source.value

    async def handle(self, request: Request) -> Response:
        """Answer one request (Starlette request/response endpoint)."""
        received = self.endpoint.clock()
        try:
            body = await _read_body(request, self.max_body)
        except _TooLarge:
            return self._rejected(self.route.errors.too_large(self.max_body))
        except ClientDisconnect:
            return Response(b"", 400)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
        http = HttpRequest(
            method=request.method,
            path=request.url.path,
            headers=headers,
            query=dict(request.query_params),
            body=body,
            received_at=received,
        )
        peer = request.client.host if request.client else None
        key = headers.get("idempotency-key") if self.route.idempotent else None
        try:
            if not key:
                return _response(await self.process(http, peer))
            return await self._idempotent(http, peer, key)
        except Rejection as rejection:
            return self._rejected(rejection)

    def _rejected(self, rejection: Rejection) -> Response:
        self.endpoint.metrics.rejected.labels(self.source, rejection.reason).inc()
        return _response(rejection)

    async def process(self, http: HttpRequest, peer: str | None) -> Reply:
        """Parse, rate-limit, publish; the reply once Kafka acknowledged every record."""
        route, endpoint = self.route, self.endpoint
        try:
            parsed = route.parse(http, self.ctx)
        except Rejection:
            raise
        except Exception:
            # A parser bug must not turn a bad request into a 5xx; log it loudly.
            log.exception("parser_failed", route=route.label)
            raise route.errors.invalid("body", "could not be processed") from None
        count = len(parsed.submissions)
        if count == 0:
            return parsed.reply
        for project_id in parsed.project_ids:
            wait = endpoint.limiter.acquire(project_id, count)
            if wait > 0:
                raise route.errors.rate_limited(retry_after_seconds(wait))
        edge = edge_context(peer, http.headers, http.received_at, endpoint.trusted)
        records = [
            record(sub, project_id, edge, self.salt)
            for project_id in parsed.project_ids
            for sub in parsed.submissions
        ]
        started = time.perf_counter()
        try:
            await endpoint.publisher.publish(records)
        except PublishError as exc:
            log.warning("publish_failed", route=route.label, error=str(exc))
            raise route.errors.unavailable(int(exc.retry_after)) from None
        endpoint.metrics.produce_seconds.observe(time.perf_counter() - started)
        endpoint.metrics.accepted.labels(self.source).inc(len(records))
        return parsed.reply

    async def _idempotent(self, http: HttpRequest, peer: str | None, key: str) -> Response:
        store = self.endpoint.idempotency
        scope = scope_key(self.route.path, http.header("authorization"), key)
        begin = await store.begin(scope, fingerprint(http.body))
        if begin.state == "conflict":
            raise self.route.errors.idempotency_conflict()
        if begin.state == "replay" and begin.reply is not None:
            return _response(begin.reply, {"idempotent-replayed": "true"})
        try:
            reply = await self.process(http, peer)
        except BaseException:
            store.abandon(scope)
            raise
        store.complete(scope, reply)
        return _response(reply)


class AccessLog:
    """ASGI middleware: count every answer by route and status; log one line per request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        labels: dict[tuple[str, str], str],
        enabled: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.labels = labels
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - started
            method, path = scope["method"], scope["path"]
            label = self.labels.get((method, path), "other")
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(elapsed)
            if self.enabled:
                client = scope.get("client")
                access_log.info(
                    "request",
                    method=method,
                    path=path,
                    status=status,
                    bytes=size,
                    ms=round(elapsed * 1000, 2),
                    client=client[0] if client else None,
                )


def build_endpoint(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    clock: Clock = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
) -> Endpoint:
    """The process-wide state of the endpoint (the producer is created, not started)."""
    server = settings.server
    if publisher is None:
        publisher = Publisher(
            producer_config(
                kafka_bootstrap(settings),
                linger_ms=server.linger_ms,
                compression=server.compression,
                delivery_timeout_s=server.delivery_timeout_s,
            ),
            settings.topics.raw,
            delivery_timeout_s=server.delivery_timeout_s,
            retry_after_s=server.retry_after_s,
        )
    return Endpoint(
        settings=settings,
        directory=ProjectDirectory.from_projects(settings.projects),
        publisher=publisher,
        limiter=RateLimiter(
            {p.id: p.rate_limit_per_second for p in settings.projects}, clock=monotonic
        ),
        idempotency=IdempotencyStore(
            server.idempotency_ttl_s, server.idempotency_max_keys, clock=monotonic
        ),
        metrics=Metrics(),
        trusted=parse_networks(server.trusted_proxies),
        clock=clock,
    )


def create_app(endpoint: Endpoint) -> Starlette:
    """The Starlette app of an endpoint; starts and closes its publisher with the app."""
    server = endpoint.settings.server
    openapi = orjson.dumps(openapi_document(server.max_batch_events))

    async def healthz(request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def readyz(request: Request) -> Response:
        if await endpoint.publisher.ready():
            return Response(b"ready", media_type="text/plain")
        return Response(
            b"kafka unavailable",
            503,
            media_type="text/plain",
            headers={"retry-after": str(server.retry_after_s)},
        )

    async def metrics(request: Request) -> Response:
        return Response(
            endpoint.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    routes = [
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/readyz", readyz, methods=["GET"]),
        StarletteRoute("/metrics", metrics, methods=["GET"]),
        StarletteRoute("/openapi.json", openapi_json, methods=["GET"]),
    ]
    by_path: dict[str, list[Route]] = {}
    for api_route in ALL_ROUTES:
        by_path.setdefault(api_route.path, []).append(api_route)
    for path, api_routes in by_path.items():
        for api_route in api_routes:
            routes.append(
                StarletteRoute(
                    path,
                    RouteHandler(api_route, endpoint).handle,
                    methods=[api_route.method],
                    name=api_route.label,
                )
            )
    labels = {(r.method, r.path): r.label for r in ALL_ROUTES}
    labels.update({("GET", p): p for p in ("/healthz", "/readyz", "/metrics", "/openapi.json")})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await endpoint.publisher.start()
        log.info("endpoint_started", topic=endpoint.publisher.topic)
        try:
            yield
        finally:
            left = await endpoint.publisher.close(server.delivery_timeout_s)
            log.info("endpoint_stopped", undelivered=left)

    return Starlette(
        routes=routes,
        middleware=[
            Middleware(
                AccessLog, metrics=endpoint.metrics, labels=labels, enabled=server.access_log
            ),
            Middleware(
                CORSMiddleware,
                allow_origins=list(server.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                max_age=86_400,
            ),
        ],
        lifespan=lifespan,
    )
