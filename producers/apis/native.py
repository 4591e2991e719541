"""eventsieve's own API: ``POST /v1/events``, one event or ``{"events": [...]}``.

Field names are RawEvent's (schemas/avro/raw_event.avsc), so what a client
sends is what lands in ``events.raw``. Auth: ``Authorization: Bearer <key>``
with a project's public ingest token or a secret server key. A batch is all
or nothing: one invalid event rejects it with the event's index in
``field``. Success: 202 ``{"accepted": n, "event_ids": [...]}``.
"""

from __future__ import annotations

from typing import Any

from producers.apis.base import ApiErrors, ParseContext, Route, retry_after_header
from producers.apis.common import string_list, string_map
from producers.errors import Rejection
from producers.model import HttpRequest, Parsed, Reply, Submission
from producers.parsing import (
    Invalid,
    JsonObject,
    bearer,
    decode_object,
    email,
    json_bytes,
    optional_str,
    timestamp,
)
from producers.records import new_event_id
from schemas.reasons import EventKind, Source

MAX_ID_CHARS = 255
MAX_NAME_CHARS = 255
MAX_URL_CHARS = 8_192
# Generous, but a bound: every property is a column-ish value downstream.
MAX_PROPERTIES = 500
_KINDS = {k.value: k for k in EventKind}
_DEFAULT_NAMES = {EventKind.IDENTIFY: "$identify", EventKind.UPDATE_USER: "$update_user"}


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    """``{"error": {"code", "message", "field"}}``."""
    return json_bytes({"error": {"code": code, "message": message, "field": field}})


class NativeErrors(ApiErrors):
    """``{"error": {...}}`` bodies with conventional status codes."""

    def invalid(self, field: str, message: str) -> Rejection:
        return Rejection(
            400, error_body("invalid", f"{field} {message}", field), field=field, reason=message
        )

    def unauthorized(self, message: str = "invalid credentials") -> Rejection:
        return Rejection(401, error_body("unauthorized", message), reason="unauthorized")

    def rate_limited(self, retry_after: int) -> Rejection:
        return Rejection(
            429,
            error_body("rate_limited", f"rate limit exceeded; retry after {retry_after} s"),
            headers=retry_after_header(retry_after),
            reason="rate_limited",
        )

    def unavailable(self, retry_after: int) -> Rejection:
        return Rejection(
            503,
            error_body("unavailable", f"Kafka is unavailable; retry after {retry_after} s"),
            headers=retry_after_header(retry_after),
            reason="unavailable",
        )


ERRORS = NativeErrors()


def _project(request: HttpRequest, ctx: ParseContext) -> tuple[str, bool]:
    """The project, and whether a (secret) server key rather than a public token named it."""
    key = bearer(request.header("authorization"))
    if key is None:
        raise ERRORS.unauthorized("send 'Authorization: Bearer <token or server key>'")
    if project := ctx.directory.by_token(key):
        return project, False
    if project := ctx.directory.by_server_key(key):
        return project, True
    raise ERRORS.unauthorized("unknown token or key")


def _str(data: JsonObject, key: str, prefix: str, max_chars: int = MAX_ID_CHARS) -> str | None:
    """``optional_str`` of the field ``prefix + key``, its name built only for an error."""
    value = data.get(key)
    if value is None:
        return None
    if type(value) is str:
        value = value.strip()
        if len(value) <= max_chars:
            return value or None
    return optional_str(data, key, field=f"{prefix}{key}", max_chars=max_chars)


def event_from_json(data: Any, prefix: str = "", idempotency_key: str | None = None) -> Submission:
    """One native event; ``prefix`` locates it in a batch (``events[3].``)."""
    if not isinstance(data, dict):
        raise Invalid(prefix.rstrip(".") or "body", "must be an object")
    kind_text = data.get("kind", "track")
    kind = _KINDS.get(kind_text) if isinstance(kind_text, str) else None
    if kind is None:
        raise Invalid(f"{prefix}kind", f"must be one of {', '.join(_KINDS)}")
    name = _str(data, "name", prefix, MAX_NAME_CHARS) or _DEFAULT_NAMES.get(kind)
    if name is None:
        raise Invalid(f"{prefix}name", "is required")
    properties = string_map(data.get("properties"), f"{prefix}properties")
    client_id = _str(data, "event_id", prefix, 128)
    if len(properties) > MAX_PROPERTIES:
        raise Invalid(f"{prefix}properties", f"must have at most {MAX_PROPERTIES} keys")
    return Submission(
        source=Source.NATIVE,
        kind=kind,
        name=name,
        user_id=_str(data, "user_id", prefix),
        anonymous_id=_str(data, "anonymous_id", prefix),
        email=email(_str(data, "email", prefix), f"{prefix}email"),
        display_name=_str(data, "display_name", prefix),
        url=_str(data, "url", prefix, MAX_URL_CHARS),
        referrer=_str(data, "referrer", prefix, MAX_URL_CHARS),
        domain=_str(data, "domain", prefix),
        properties=properties,
        user_properties=string_map(data.get("user_properties"), f"{prefix}user_properties"),
        user_properties_once=string_map(
            data.get("user_properties_once"), f"{prefix}user_properties_once"
        ),
        user_properties_unset=string_list(
            data.get("user_properties_unset"), f"{prefix}user_properties_unset"
        ),
        client_time=timestamp(data.get("timestamp"), f"{prefix}timestamp"),
        # Ids are assigned here, not at encoding, so the answer can name them.
        event_id=client_id or new_event_id(),
        context_id=_str(data, "context_id", prefix),
        order_id=_str(data, "order_id", prefix),
        # A client's own event id is its idempotency key too (DESIGN: dedup on
        # that key over 24 h): the same id sent again is a copy, not an event.
        idempotency_key=_str(data, "idempotency_key", prefix) or idempotency_key or client_id,
    )


def parse_events(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /v1/events``: a single event object, or ``{"events": [...]}``."""
    project, from_server = _project(request, ctx)
    try:
        body = decode_object(request.body)
        key = request.header("idempotency-key")
        if "events" in body:
            events = body["events"]
            if not isinstance(events, list) or not events:
                raise Invalid("events", "must be a non-empty array")
            if len(events) > ctx.max_batch_events:
                raise Invalid("events", f"must have at most {ctx.max_batch_events} events")
            submissions = tuple(
                event_from_json(e, f"events[{i}].", f"{key}:{i}" if key else None)
                for i, e in enumerate(events)
            )
        else:
            submissions = (event_from_json(body, "", key),)
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    reply = Reply(
        202,
        json_bytes({"accepted": len(submissions), "event_ids": [s.event_id for s in submissions]}),
    )
    return Parsed((project,), submissions, reply, from_server=from_server, trusted=from_server)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/events", Source.NATIVE, parse_events, ERRORS, idempotent=True),
)
