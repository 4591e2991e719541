"""The ASGI application: routes of every API, health, metrics, OpenAPI.

Ingest routes are served by :class:`IngestDispatcher`, a small pure-ASGI
layer: one dict look-up per request, the body read with a size cap, the
route's pure parser, the project's rate limit, records, and an answer only
after Kafka acknowledged them. Everything else (``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``, CORS preflights) is a Starlette app behind it.

Why not Starlette routing for the ingest routes too: measured on the 2-core
dev box under the same load generator, a bare ASGI app answered ~7,100
requests/s and the same answer through Starlette's router, middleware stack
and Request/Response objects ~2,200/s. Ingest is the hot path; the dispatcher
keeps Starlette's semantics that matter (CORS with credentials, lifespan)
without its per-request layers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from confluent_kafka import KafkaError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from eventsieve.config import Settings
from eventsieve.logging import get_logger
from eventsieve.ratelog import RateLog
from eventsieve.services import kafka_bootstrap
from producers.apis import ALL_ROUTES
from producers.apis.base import ParseContext, Route
from producers.edge import IpNetwork, client_ip, edge_context, parse_networks
from producers.errors import PublishError, Rejection
from producers.idempotency import IdempotencyStore, fingerprint, scope_key
from producers.limits import EdgeLimits
from producers.metrics import Metrics
from producers.model import HttpRequest, Reply
from producers.openapi import openapi_document
from producers.projects import ProjectDirectory
from producers.publisher import Publisher, producer_config
from producers.ratelimit import FailedAuthLimiter, RateLimiter, retry_after_seconds
from producers.records import Record, RecordBuilder, SaltUnavailableError
from producers.salts import FixedSalts, KafkaDailySalts
from schemas.reasons import Credential
from schemas.topology import salts_topic

log = get_logger("eventsieve.producers")
access_log = get_logger("eventsieve.access")
# The endpoint's periodic rate line: events acknowledged by Kafka, requests refused.
RATES = {"accepted": "eventsieve_events_accepted", "rejected": "eventsieve_requests_rejected"}

Clock = Callable[[], datetime]
Answer = tuple[int, bytes, str, dict[str, str]]
"""status, body, media type, extra headers."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class _TimedOut(Exception):
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
    limits: EdgeLimits
    failed_auth: FailedAuthLimiter
    salts: KafkaDailySalts | FixedSalts
    clock: Clock = utc_now
    body_deadlines: BodyDeadlines | None = None

    def __post_init__(self) -> None:
        if self.body_deadlines is None:
            self.body_deadlines = BodyDeadlines(self.limits.body_timeout_s)

    @property
    def context(self) -> ParseContext:
        return ParseContext(self.directory, self.settings.server.max_batch_events)


class BodyDeadlines:
    """Cancels requests still reading their body ``timeout_s`` after they began.

    One timer for every request of a process, firing every ``period_s`` while
    any request is reading, instead of a timer armed and cancelled per request
    (``asyncio.timeout``): most bodies are complete when the handler starts,
    and the per-request timer cost more than reading them. A deadline is
    honoured within ``period_s`` (a quarter of the timeout, at most 1 s).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.period_s = min(1.0, max(0.05, timeout_s / 4))
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self, task: asyncio.Task[Any]) -> None:
        """``task`` starts reading a body now."""
        self._reading[task] = time.monotonic() + self.timeout_s
        if self._timer is None or self._loop is not task.get_loop():
            self._loop = task.get_loop()
            self._timer = self._loop.call_later(self.period_s, self._sweep)

    def end(self, task: asyncio.Task[Any]) -> None:
        """``task`` has its body (or gave up)."""
        self._reading.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (and clears that mark)."""
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for task, deadline in list(self._reading.items()):
            if deadline <= now:
                del self._reading[task]
                self._expired.add(task)
                task.cancel()
        if self._reading and self._loop is not None and not self._loop.is_closed():
            self._timer = self._loop.call_later(self.period_s, self._sweep)


async def read_body(
    scope: Scope,
    receive: Receive,
    limit: int,
    timeout_s: float,
    deadlines: BodyDeadlines | None = None,
) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or streamed)
    or a body that takes longer than ``timeout_s`` to arrive (``deadlines``, when
    given, enforces it; else a timer of this request's own)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _TooLarge
    if deadlines is None:
        try:
            async with asyncio.timeout(timeout_s):
                return await _read_chunks(receive, limit)
        except TimeoutError:
            raise _TimedOut from None
    task = asyncio.current_task()
    assert task is not None
    deadlines.begin(task)
    try:
        return await _read_chunks(receive, limit)
    except asyncio.CancelledError:
        if deadlines.expired(task):
            task.uncancel()
            raise _TimedOut from None
        raise
    finally:
        deadlines.end(task)


async def _read_chunks(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_REASON_LABELS = frozenset(
    {
        "unauthorized",
        "forbidden",
        "rate_limited",
        "unavailable",
        "too_large",
        "headers_too_large",
        "timeout",
        "idempotency_key_reused",
        "missing",
    }
)

# librdkafka's local size check and the broker's answers for an oversized record.
_TOO_LARGE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})


def _too_large_for_kafka(exc: PublishError) -> bool:
    error = exc.kafka_error
    code = error.code() if isinstance(error, KafkaError) else None
    return code in _TOO_LARGE_CODES


def _answer(reply: Reply | Rejection, extra: dict[str, str] | None = None) -> Answer:
    headers = dict(reply.headers) if isinstance(reply, Rejection) else {}
    if extra:
        headers.update(extra)
    return reply.status, reply.body, reply.media_type, headers


class RouteHandler:
    """One API route: request in, answer out (after Kafka acknowledged its records)."""

    def __init__(self, route: Route, endpoint: Endpoint) -> None:
        self.route = route
        self.endpoint = endpoint
        self.ctx = endpoint.context
        self.max_body = endpoint.settings.server.max_body_bytes
        self.records = RecordBuilder(endpoint.salts)
        self.source = route.source.value
        # Metric children resolved once: labels() costs a lock and a dict per call.
        self._accepted = endpoint.metrics.accepted.labels(self.source)
        self.latency = endpoint.metrics.request_seconds.labels(route.label)
        self._answered: dict[int, Any] = {}
        self.deadlines = endpoint.body_deadlines

    def answered(self, status: int) -> None:
        """Count one answer with ``status``."""
        child = self._answered.get(status)
        if child is None:
            child = self._answered[status] = self.endpoint.metrics.requests.labels(
                self.route.label, str(status)
            )
        child.inc()

    async def answer(self, scope: Scope, receive: Receive) -> Answer:
        """Read, validate, publish; every failure becomes the API's documented answer."""
        received = self.endpoint.clock()
        limits = self.endpoint.limits
        client = scope.get("client")
        peer = client[0] if client else None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        # Failed authentication is counted per client, which behind a trusted
        # proxy is the forwarded address, not the proxy's.
        client = client_ip(peer, headers.get("x-forwarded-for"), self.endpoint.trusted)
        address = client[0]
        wait = self.endpoint.failed_auth.wait(address)
        if wait > 0:
            return self.rejected(self.route.errors.rate_limited(retry_after_seconds(wait)))
        try:
            body = await read_body(
                scope, receive, self.max_body, limits.body_timeout_s, self.deadlines
            )
        except _TooLarge:
            return self.rejected(self.route.errors.too_large(self.max_body))
        except _TimedOut:
            return self.rejected(self.route.errors.request_timeout(limits.body_timeout_s))
        query = scope.get("query_string", b"")
        http = HttpRequest(
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            query=dict(parse_qsl(query.decode("latin-1"))) if query else {},
            body=body,
            received_at=received,
        )
        key = headers.get("idempotency-key")
        if key is not None and len(key) > limits.max_idempotency_key_chars:
            message = f"must be at most {limits.max_idempotency_key_chars} characters"
            return self.rejected(self.route.errors.invalid("Idempotency-Key", message))
        if not self.route.idempotent:
            key = None
        try:
            if not key:
                return _answer(await self.process(http, peer, client))
            return await self._idempotent(http, peer, key, client)
        except Rejection as rejection:
            if rejection.status in (401, 403):
                self.endpoint.failed_auth.failed(address)
            return self.rejected(rejection)

    def rejected(self, rejection: Rejection) -> Answer:
        # Validation messages vary; as a metric label they collapse to "invalid".
        reason = rejection.reason if rejection.reason in _REASON_LABELS else "invalid"
        self.endpoint.metrics.rejected.labels(self.source, reason).inc()
        return _answer(rejection)

    async def process(
        self, http: HttpRequest, peer: str | None, client: tuple[str | None, bool] | None = None
    ) -> Reply:
        """Parse, rate-limit, publish; the reply once Kafka acknowledged every record.

        ``client`` is ``client_ip`` of the request when the caller already has it.
        """
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
        credential = Credential.SERVER if parsed.trusted else Credential.PUBLIC
        for project_id in parsed.project_ids:
            wait = endpoint.limiter.acquire(project_id, count, credential.value)
            if wait > 0:
                raise route.errors.rate_limited(retry_after_seconds(wait))
        edge = edge_context(peer, http.headers, http.received_at, endpoint.trusted, client=client)
        if parsed.from_server:
            edge = edge.of_server()
        try:
            records = self.records.build(parsed.project_ids, parsed.submissions, edge, credential)
        except SaltUnavailableError as exc:
            log.warning("salt_unavailable", route=route.label, error=str(exc))
            raise route.errors.unavailable(endpoint.settings.server.retry_after_s) from None
        self._check_sizes(records)
        started = time.perf_counter()
        try:
            await endpoint.publisher.publish(records)
        except PublishError as exc:
            log.warning("publish_failed", route=route.label, error=str(exc))
            if _too_large_for_kafka(exc):
                # A record over the broker's size limit fails on every retry: a 503
                # would invite the client to retry forever, so it is the client's 413.
                raise route.errors.too_large(self.max_body) from None
            raise route.errors.unavailable(int(exc.retry_after)) from None
        endpoint.metrics.produce_seconds.observe(time.perf_counter() - started)
        self._accepted.inc(len(records))
        return parsed.reply

    def _check_sizes(self, records: list[Record]) -> None:
        """Refuse (413) what a later stage could not carry, before anything is published."""
        limits = self.endpoint.limits
        total = 0
        for record in records:
            size = len(record.key) + len(record.value)
            if size > limits.max_record_bytes:
                raise self.route.errors.record_too_large("event", size, limits.max_record_bytes)
            total += size
        if total > limits.max_request_record_bytes:
            raise self.route.errors.record_too_large(
                "events", total, limits.max_request_record_bytes
            )

    async def _idempotent(
        self, http: HttpRequest, peer: str | None, key: str, client: tuple[str | None, bool]
    ) -> Answer:
        store = self.endpoint.idempotency
        scope = scope_key(self.route.path, http.header("authorization"), key)
        begin = await store.begin(scope, fingerprint(http.body))
        if begin.state == "conflict":
            raise self.route.errors.idempotency_conflict()
        if begin.state == "replay" and begin.reply is not None:
            return _answer(begin.reply, {"idempotent-replayed": "true"})
        try:
            reply = await self.process(http, peer, client)
        except BaseException:
            store.abandon(scope)
            raise
        store.complete(scope, reply)
        return _answer(reply)


class IngestDispatcher:
    """Pure ASGI: API routes by exact (method, path); anything else goes to ``fallback``.

    Adds the CORS headers browser SDKs need on actual requests (the origin
    echoed, credentials allowed); preflight ``OPTIONS`` requests go to the
    fallback's Starlette CORSMiddleware. Counts every answer by route and
    status, and writes one access-log line per request when enabled.
    """

    def __init__(
        self,
        handlers: dict[tuple[str, str], RouteHandler],
        fallback: ASGIApp,
        metrics: Metrics,
        cors_origins: tuple[str, ...],
        access_log: bool,
        limits: EdgeLimits,
        retry_after_s: int,
    ) -> None:
        self.handlers = handlers
        self.fallback = fallback
        self.metrics = metrics
        self.any_origin = "*" in cors_origins
        self.origins = frozenset(cors_origins)
        self.access_log = access_log
        self.limits = limits
        self.retry_after_s = retry_after_s
        self.inflight = 0

    def _header_problem(self, scope: Scope) -> str | None:
        """Why the request's headers are refused (431), or None."""
        headers = scope.get("headers") or ()
        if len(headers) > self.limits.max_headers:
            return f"at most {self.limits.max_headers} headers"
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.limits.max_header_bytes:
            return f"at most {self.limits.max_header_bytes} bytes of headers"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        handler = self.handlers.get((scope["method"], scope["path"]))
        problem = self._header_problem(scope)
        if handler is None:
            if problem is None:
                await self.fallback(scope, receive, send)
            else:
                await self._send(scope, send, 431, problem.encode(), "text/plain", {})
            return
        started = time.perf_counter()
        errors = handler.route.errors
        if problem is not None:
            answer = handler.rejected(errors.headers_too_large(problem))
        elif self.inflight >= self.limits.max_inflight_requests:
            answer = handler.rejected(errors.unavailable(self.retry_after_s))
        else:
            self.inflight += 1
            try:
                answer = await handler.answer(scope, receive)
            except _Disconnected:
                return  # the client left before sending its body: nobody to answer
            finally:
                self.inflight -= 1
        status, body, media_type, extra = answer
        await self._send(scope, send, status, body, media_type, extra)
        elapsed = time.perf_counter() - started
        handler.answered(status)
        handler.latency.observe(elapsed)
        if self.access_log:
            client = scope.get("client")
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                bytes=len(body),
                ms=round(elapsed * 1000, 2),
                client=client[0] if client else None,
            )

    async def _send(
        self,
        scope: Scope,
        send: Send,
        status: int,
        body: bytes,
        media_type: str,
        extra: dict[str, str],
    ) -> None:
        """Write one answer, with the CORS headers browser SDKs need to read it."""
        headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        headers.extend((k.encode(), v.encode()) for k, v in extra.items())
        if status in (408, 431):
            headers.append((b"connection", b"close"))
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if origin is not None and (self.any_origin or origin.decode("latin-1") in self.origins):
            headers.append((b"access-control-allow-origin", origin))
            headers.append((b"access-control-allow-credentials", b"true"))
            headers.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def build_endpoint(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    clock: Clock = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    limits: EdgeLimits | None = None,
    salts: KafkaDailySalts | FixedSalts | None = None,
) -> Endpoint:
    """The process-wide state of the endpoint (the producer and salts created, not started)."""
    limits = limits or EdgeLimits()
    if salts is None:
        salts = KafkaDailySalts(
            kafka_bootstrap(settings),
            salts_topic(settings.topics.raw),
            settings.privacy.salt_secret.get_secret_value(),
        )
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
        limits=limits,
        failed_auth=FailedAuthLimiter(limits.failed_auth_per_minute, clock=monotonic),
        salts=salts,
        clock=clock,
    )


def _ops_app(endpoint: Endpoint) -> Starlette:
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

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await endpoint.publisher.start()
        endpoint.salts.start()
        # Serve even without: requests get 503 until Kafka and today's salt are there.
        if not await asyncio.to_thread(endpoint.salts.wait_ready, server.delivery_timeout_s):
            log.warning("salts_unavailable_at_start")
        log.info("endpoint_started", topic=endpoint.publisher.topic)
        rate_log = RateLog(endpoint.metrics.registry, RATES).start()
        try:
            yield
        finally:
            rate_log.stop()
            left = await endpoint.publisher.close(server.delivery_timeout_s)
            endpoint.salts.close()
            log.info("endpoint_stopped", undelivered=left)

    return Starlette(
        routes=[
            StarletteRoute("/healthz", healthz, methods=["GET"]),
            StarletteRoute("/readyz", readyz, methods=["GET"]),
            StarletteRoute("/metrics", metrics, methods=["GET"]),
            StarletteRoute("/openapi.json", openapi_json, methods=["GET"]),
        ],
        middleware=[
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


def create_app(endpoint: Endpoint) -> IngestDispatcher:
    """The ASGI app of an endpoint; its lifespan starts and closes the publisher."""
    server = endpoint.settings.server
    handlers = {(r.method, r.path): RouteHandler(r, endpoint) for r in ALL_ROUTES}
    return IngestDispatcher(
        handlers,
        _ops_app(endpoint),
        endpoint.metrics,
        server.cors_origins,
        server.access_log,
        endpoint.limits,
        server.retry_after_s,
    )
