"""One ingest route's handling: body, parse, rate limit, idempotency, records,
publish, and the answer, given only after Kafka acknowledged the records.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from confluent_kafka import KafkaError
from starlette.types import Receive, Scope

from eventsieve.logging import get_logger
from producers.apis.base import Route
from producers.body import BodyTimedOut, BodyTooLarge, read_body
from producers.edge import client_ip, edge_context
from producers.endpoint import Endpoint
from producers.errors import PublishError, Rejection
from producers.idempotency import fingerprint, scope_key
from producers.model import HttpRequest, Reply
from producers.ratelimit import retry_after_seconds
from producers.records import Record, RecordBuilder, SaltUnavailableError
from schemas.reasons import Credential

log = get_logger("eventsieve.producers")

Answer = tuple[int, bytes, str, dict[str, str]]
"""status, body, media type, extra headers."""

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
        except BodyTooLarge:
            return self.rejected(self.route.errors.too_large(self.max_body))
        except BodyTimedOut:
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
