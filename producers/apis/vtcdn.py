"""vtcdn marketing API: ``POST /v1/event/`` with a ``user`` and an ``event`` object.

``user`` is ``{"email": ...}`` or ``{"_id": ...}``; ``event`` has one key, the
event type, in the JavaScript SDK's format: ``update`` and ``login`` carry
user attributes, ``generic`` an ``event_name`` (the docs nest it twice:
``{"generic": {"generic": {...}}}``), ``confirmation`` an ``orderId``, and
an email open its message/campaign ids. The API key travels in
``Authorization`` (bare, or as ``Bearer``). Answers are
``{"results": {...}}`` and ``{"errors": [{"message", "description"}]}``.
"""

from __future__ import annotations

from typing import TypedDict

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

# Email-open spellings of the JavaScript SDK's event types, all recorded as one name
# (streams.email_open_events compares names case- and "_"-insensitively).
EMAIL_OPEN = "email_open"
_EMAIL_OPEN_TYPES = {"emailopen", "email_open", "openemail", "open_email", "email open"}
_ORDER_ID_KEYS = ("orderId", "order_id", "orderid")


class VtcdnErrors(ApiErrors):
    """``{"errors": [{"message", "description"}]}`` bodies."""

    @staticmethod
    def _body(message: str, description: str) -> bytes:
        return json_bytes({"errors": [{"message": message, "description": description}]})

    def invalid(self, field: str, message: str) -> Rejection:
        return Rejection(
            400, self._body("Invalid request", f"{field} {message}"), field=field, reason=message
        )

    def missing(self, what: str, description: str) -> Rejection:
        """The documented "Missing ... information" answers."""
        return Rejection(
            400,
            self._body(f"Missing {what} information", description),
            field=what,
            reason="missing",
        )

    def unauthorized(self, message: str = "invalid credentials") -> Rejection:
        return Rejection(
            401,
            self._body("Unauthorized", "Please send a valid API key in the Authorization header"),
            reason="unauthorized",
        )

    def rate_limited(self, retry_after: int) -> Rejection:
        return Rejection(
            429,
            self._body("Too many requests", f"Please retry after {retry_after} seconds"),
            headers=retry_after_header(retry_after),
            reason="rate_limited",
        )

    def unavailable(self, retry_after: int) -> Rejection:
        return Rejection(
            503,
            self._body("Service unavailable", f"Please retry after {retry_after} seconds"),
            headers=retry_after_header(retry_after),
            reason="unavailable",
        )


ERRORS = VtcdnErrors()


def _api_key(request: HttpRequest) -> str | None:
    header = request.header("authorization")
    if not header:
        return None
    return bearer(header) or header.strip()


def _results(identifier_key: str) -> Reply:
    return Reply(
        200,
        json_bytes(
            {
                "results": {
                    "message": "Event created",
                    identifier_key: "Event was created for the specified user",
                }
            }
        ),
    )


def _event_type(event: JsonObject) -> tuple[str, JsonObject]:
    if len(event) != 1:
        raise Invalid("event", "must have exactly one event type key")
    ((event_type, payload),) = event.items()
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise Invalid(f"event.{event_type}", "must be an object")
    return event_type, payload


class _Common(TypedDict):
    """The fields every VTCDN event type sets the same way."""

    source: Source
    user_id: str | None
    email: str | None


def _submission(
    event_type: str, payload: JsonObject, user_id: str | None, address: str | None
) -> Submission:
    common: _Common = {"source": Source.VTCDN, "user_id": user_id, "email": address}
    lowered = event_type.lower()
    if lowered == "update":
        return Submission(
            kind=EventKind.UPDATE_USER,
            name="$update_user",
            user_properties=string_map(payload, "event.update"),
            **common,
        )
    if lowered == "login":
        # Login identifies the user, "adding email if anonymous": an address in
        # the payload becomes the user's email when the user was named by _id.
        # A user named by email keeps that address (it is their key).
        login_email = email(
            optional_str(payload, "email", field="event.login.email"), "event.login.email"
        )
        return Submission(
            kind=EventKind.IDENTIFY,
            name="login",
            user_properties=string_map(payload, "event.login"),
            **(common | {"email": address or login_email}),
        )
    if lowered == "generic":
        inner = payload.get("generic", payload)
        if not isinstance(inner, dict):
            raise Invalid("event.generic.generic", "must be an object")
        name = optional_str(inner, "event_name", field="event.generic.event_name")
        if name is None:
            raise Invalid("event.generic.event_name", "is required")
        properties = {k: v for k, v in inner.items() if k != "event_name"}
        return Submission(
            kind=EventKind.TRACK,
            name=name,
            properties=string_map(properties, "event.generic"),
            **common,
        )
    if lowered == "confirmation":
        order_id = next(
            (payload[k] for k in _ORDER_ID_KEYS if payload.get(k) not in (None, "")), None
        )
        if order_id is None:
            raise Invalid("event.confirmation.orderId", "is required")
        if not isinstance(order_id, str | int) or isinstance(order_id, bool):
            raise Invalid("event.confirmation.orderId", "must be a string or a number")
        return Submission(
            kind=EventKind.TRACK,
            name="confirmation",
            order_id=str(order_id),
            properties=string_map(payload, "event.confirmation"),
            **common,
        )
    name = EMAIL_OPEN if lowered in _EMAIL_OPEN_TYPES else event_type
    return Submission(
        kind=EventKind.TRACK,
        name=name,
        properties=string_map(payload, f"event.{event_type}"),
        **common,
    )


def parse_event(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /v1/event/``."""
    project = ctx.directory.by_vtcdn_key(_api_key(request))
    if project is None:
        raise ERRORS.unauthorized()
    try:
        body = decode_object(request.body)
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    user = body.get("user")
    if not isinstance(user, dict) or not user:
        raise ERRORS.missing("user", "Please send user information along with event")
    event = body.get("event")
    if not isinstance(event, dict) or not event:
        raise ERRORS.missing("event", "Please send event information along with user")
    try:
        address = email(optional_str(user, "email", field="user.email"), "user.email")
        user_id = optional_str(user, "_id", field="user._id", coerce_numbers=True)
        if address is None and user_id is None:
            raise Invalid("user", "needs an email or an _id")
        event_type, payload = _event_type(event)
        submission = _submission(event_type, payload, user_id, address)
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    reply = _results("email" if address else "_id")
    return Parsed((project,), (submission,), reply, from_server=True, trusted=True)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/event/", Source.VTCDN, parse_event, ERRORS, name="vtcdn:event"),
    Route("POST", "/v1/event", Source.VTCDN, parse_event, ERRORS, name="vtcdn:event"),
)
