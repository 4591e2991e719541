"""VibeFollow API v1: ``POST /api/v1/events``, ``/events/batch`` (≤ 500), ``/users``.

Auth is ``Authorization: Bearer <server key>``: a missing or malformed header
or an unknown key is 401; a project's *public* ingest token is a valid key
without the right to this server API, so it gets 403. Bodies fail with 422
``{"errors": [{"code", "message", "field"}]}``; one invalid event rejects a
whole batch. Success is 202 ``{"data": {"accepted": true}}``. The
``Idempotency-Key`` replay is done around these parsers (producers/idempotency.py).
"""

from __future__ import annotations

from typing import Any

from producers.apis.base import ApiErrors, ParseContext, Route, retry_after_header
from producers.apis.common import string_map
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
)
from schemas.reasons import EventKind, Source

MAX_BATCH = 500
# Not documented by VibeFollow; generous bounds so ids and names stay index-friendly.
MAX_ID_CHARS = 255
MAX_NAME_CHARS = 255
ACCEPTED = Reply(202, json_bytes({"data": {"accepted": True}}))


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    """``{"errors": [{"code", "message", "field"}]}``."""
    return json_bytes({"errors": [{"code": code, "message": message, "field": field}]})


class VibeFollowErrors(ApiErrors):
    """VibeFollow's error list bodies."""

    def invalid(self, field: str, message: str) -> Rejection:
        return Rejection(
            422,
            error_body("validation_error", f"{field} {message}", field),
            field=field,
            reason=message,
        )

    def unauthorized(self, message: str = "invalid credentials") -> Rejection:
        return Rejection(401, error_body("unauthorized", message), reason="unauthorized")

    def forbidden(self, message: str) -> Rejection:
        """A valid key that may not use this resource."""
        return Rejection(403, error_body("forbidden", message), reason="forbidden")

    def idempotency_conflict(self) -> Rejection:
        """The Idempotency-Key was used before with another body."""
        return Rejection(
            422,
            error_body(
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
                "Idempotency-Key",
            ),
            field="Idempotency-Key",
            reason="idempotency_key_reused",
        )

    def rate_limited(self, retry_after: int) -> Rejection:
        return Rejection(
            429,
            error_body("rate_limited", f"too many requests; retry after {retry_after} s"),
            headers=retry_after_header(retry_after),
            reason="rate_limited",
        )

    def unavailable(self, retry_after: int) -> Rejection:
        return Rejection(
            503,
            error_body("unavailable", f"temporarily unavailable; retry after {retry_after} s"),
            headers=retry_after_header(retry_after),
            reason="unavailable",
        )


ERRORS = VibeFollowErrors()


def _project(request: HttpRequest, ctx: ParseContext) -> str:
    header = request.header("authorization")
    key = bearer(header)
    if key is None:
        raise ERRORS.unauthorized("Missing or malformed Authorization header")
    project = ctx.directory.by_server_key(key)
    if project is not None:
        return project
    if ctx.directory.by_token(key) is not None:
        raise ERRORS.forbidden("a public ingest token cannot use the server API; use a server key")
    raise ERRORS.unauthorized("invalid API key")


def _body(request: HttpRequest) -> JsonObject:
    try:
        return decode_object(request.body)
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None


def _event(data: Any, prefix: str, idempotency_key: str | None) -> Submission:
    if not isinstance(data, dict):
        raise Invalid(prefix.rstrip(".") or "body", "must be an object")
    return Submission(
        source=Source.VIBEFOLLOW,
        kind=EventKind.TRACK,
        name=_required(data, "name", prefix, MAX_NAME_CHARS),
        user_id=_required(data, "external_user_id", prefix, MAX_ID_CHARS),
        properties=string_map(data.get("properties"), f"{prefix}properties"),
        idempotency_key=idempotency_key,
    )


def _required(data: JsonObject, key: str, prefix: str, max_chars: int) -> str:
    value = optional_str(data, key, field=f"{prefix}{key}", max_chars=max_chars)
    if value is None:
        raise Invalid(f"{prefix}{key}", "is required")
    return value


def parse_event(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/v1/events``: one event."""
    project = _project(request, ctx)
    body = _body(request)
    try:
        submission = _event(body, "", request.header("idempotency-key"))
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), (submission,), ACCEPTED, from_server=True, trusted=True)


def parse_batch(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/v1/events/batch``: ``{"events": [...]}``, all or nothing."""
    project = _project(request, ctx)
    body = _body(request)
    key = request.header("idempotency-key")
    try:
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise Invalid("events", "must be a non-empty array")
        if len(events) > MAX_BATCH:
            raise Invalid("events", f"must have at most {MAX_BATCH} events")
        submissions = tuple(
            _event(event, f"events[{i}].", f"{key}:{i}" if key else None)
            for i, event in enumerate(events)
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), submissions, ACCEPTED, from_server=True, trusted=True)


def parse_user(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/v1/users``: upsert a user (``external_user_id``, ``email``, traits)."""
    project = _project(request, ctx)
    body = _body(request)
    try:
        user_id = _required(body, "external_user_id", "", MAX_ID_CHARS)
        address = email(optional_str(body, "email", max_chars=MAX_ID_CHARS))
        traits_key = "traits" if "traits" in body else "properties"
        submission = Submission(
            source=Source.VIBEFOLLOW,
            kind=EventKind.IDENTIFY,
            name="$identify",
            user_id=user_id,
            email=address,
            display_name=optional_str(body, "name", max_chars=MAX_NAME_CHARS),
            user_properties=string_map(body.get(traits_key), traits_key),
            idempotency_key=request.header("idempotency-key"),
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), (submission,), ACCEPTED, from_server=True, trusted=True)


_BASE = "/api/v1"
ROUTES: tuple[Route, ...] = (
    Route("POST", f"{_BASE}/events", Source.VIBEFOLLOW, parse_event, ERRORS, idempotent=True),
    Route("POST", f"{_BASE}/events/batch", Source.VIBEFOLLOW, parse_batch, ERRORS, idempotent=True),
    Route("POST", f"{_BASE}/users", Source.VIBEFOLLOW, parse_user, ERRORS, idempotent=True),
)
