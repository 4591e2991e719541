"""Vero API v2: ``POST /api/v2/events/track`` and the user endpoints the official SDK calls.

The ``vero`` package (PyPI, 2.0) sends every call as JSON with ``auth_token``
in the body; the docs put it in the query string: both are accepted. Track
takes ``identity{id,email}``, ``event_name``, ``data`` and
``extras{source,created_at}``; id, email and event_name must be shorter than
255 characters and the email valid. User calls (``/users/track``, ``/edit``,
``/tags/edit``, ``/reidentify``, ``/unsubscribe``, ``/resubscribe``,
``/delete``) are accepted as user updates. Success is
``{"status":200,"message":"Success."}``.
"""

from __future__ import annotations

from producers.apis.base import ApiErrors, ParseContext, Route, retry_after_header
from producers.apis.common import string_map
from producers.errors import Rejection
from producers.model import HttpRequest, Parsed, Reply, Submission
from producers.parsing import (
    Invalid,
    JsonObject,
    decode_object,
    email,
    json_bytes,
    optional_object,
    optional_str,
    required_str,
    stringify,
    timestamp,
)
from schemas.reasons import EventKind, Source

# "Must be less than 255 characters."
_MAX_CHARS = 254
SUCCESS = Reply(200, json_bytes({"status": 200, "message": "Success."}))


class VeroErrors(ApiErrors):
    """Vero's ``{"status": N, "message": ...}`` bodies."""

    @staticmethod
    def _body(status: int, message: str) -> bytes:
        return json_bytes({"status": status, "message": message})

    def invalid(self, field: str, message: str) -> Rejection:
        return Rejection(400, self._body(400, f"{field} {message}"), field=field, reason=message)

    def unauthorized(self, message: str = "invalid credentials") -> Rejection:
        return Rejection(
            401,
            self._body(401, "Unauthorized. Please provide a valid auth_token."),
            reason="unauthorized",
        )

    def rate_limited(self, retry_after: int) -> Rejection:
        return Rejection(
            429,
            self._body(429, "Too many requests."),
            headers=retry_after_header(retry_after),
            reason="rate_limited",
        )

    def unavailable(self, retry_after: int) -> Rejection:
        return Rejection(
            503,
            self._body(503, "Service unavailable."),
            headers=retry_after_header(retry_after),
            reason="unavailable",
        )


ERRORS = VeroErrors()


def _body(request: HttpRequest) -> JsonObject:
    try:
        return decode_object(request.body) if request.body.strip() else {}
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None


def _project(request: HttpRequest, body: JsonObject, ctx: ParseContext) -> str:
    token = request.query.get("auth_token") or body.get("auth_token")
    project = ctx.directory.by_vero_token(token if isinstance(token, str) else None)
    if project is None:
        raise ERRORS.unauthorized()
    return project


def _user(data: JsonObject, prefix: str = "") -> tuple[str | None, str | None]:
    user_id = optional_str(
        data, "id", field=f"{prefix}id", max_chars=_MAX_CHARS, coerce_numbers=True
    )
    address = email(
        optional_str(data, "email", field=f"{prefix}email", max_chars=_MAX_CHARS),
        f"{prefix}email",
    )
    if user_id is None and address is None:
        raise Invalid(f"{prefix}id", "or email is required")
    return user_id, address


def parse_track_event(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/v2/events/track``."""
    body = _body(request)
    project = _project(request, body, ctx)
    try:
        identity = optional_object(body, "identity")
        user_id, address = _user(identity, "identity.")
        extras = optional_object(body, "extras")
        submission = Submission(
            source=Source.VERO,
            kind=EventKind.TRACK,
            name=required_str(body, "event_name", max_chars=_MAX_CHARS),
            user_id=user_id,
            email=address,
            properties=string_map(body.get("data"), "data"),
            client_time=timestamp(extras.get("created_at"), "extras.created_at"),
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), (submission,), SUCCESS, from_server=True, trusted=True)


def _user_update(
    request: HttpRequest,
    ctx: ParseContext,
    *,
    name: str,
    kind: EventKind = EventKind.UPDATE_USER,
    properties_key: str | None = None,
    fixed: dict[str, str] | None = None,
) -> Parsed:
    body = _body(request)
    project = _project(request, body, ctx)
    try:
        user_id, address = _user(body)
        traits = string_map(body.get(properties_key), properties_key) if properties_key else {}
        traits.update(fixed or {})
        new_id = optional_str(body, "new_id", max_chars=_MAX_CHARS, coerce_numbers=True)
        if name == "$reidentify":
            if new_id is None:
                raise Invalid("new_id", "is required")
            traits["$previous_id"] = user_id or ""
            user_id = new_id
        for key in ("add", "remove"):
            if body.get(key) is not None:
                if not isinstance(body[key], list):
                    raise Invalid(key, "must be an array")
                traits[f"$tags_{key}"] = stringify(body[key], key)
        submission = Submission(
            source=Source.VERO,
            kind=kind,
            name=name,
            user_id=user_id,
            email=address,
            user_properties=traits,
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), (submission,), SUCCESS, from_server=True, trusted=True)


def parse_user_track(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/v2/users/track``: create/identify a user with ``data``."""
    return _user_update(
        request, ctx, name="$identify", kind=EventKind.IDENTIFY, properties_key="data"
    )


def parse_user_edit(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``PUT /api/v2/users/edit``: ``changes`` to a user's properties."""
    return _user_update(request, ctx, name="$update_user", properties_key="changes")


def parse_tags_edit(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``PUT /api/v2/users/tags/edit``: ``add``/``remove`` tag lists."""
    return _user_update(request, ctx, name="$tags")


def parse_reidentify(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``PUT /api/v2/users/reidentify``: ``id`` becomes ``new_id``."""
    return _user_update(request, ctx, name="$reidentify", kind=EventKind.IDENTIFY)


def parse_unsubscribe(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/v2/users/unsubscribe``."""
    return _user_update(request, ctx, name="$unsubscribe", fixed={"$unsubscribed": "true"})


def parse_resubscribe(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/v2/users/resubscribe``."""
    return _user_update(request, ctx, name="$resubscribe", fixed={"$unsubscribed": "false"})


def parse_delete(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``DELETE /api/v2/users/delete``: ``$delete_user``, which removes the user's profile."""
    return _user_update(request, ctx, name="$delete_user", kind=EventKind.DELETE_USER)


def parse_heartbeat(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``GET /api/v2/heartbeat``: is the endpoint up (no token needed)."""
    return Parsed((), (), SUCCESS)


_BASE = "/api/v2"
ROUTES: tuple[Route, ...] = (
    Route("POST", f"{_BASE}/events/track", Source.VERO, parse_track_event, ERRORS),
    Route("POST", f"{_BASE}/users/track", Source.VERO, parse_user_track, ERRORS),
    Route("PUT", f"{_BASE}/users/edit", Source.VERO, parse_user_edit, ERRORS),
    Route("PUT", f"{_BASE}/users/tags/edit", Source.VERO, parse_tags_edit, ERRORS),
    Route("PUT", f"{_BASE}/users/reidentify", Source.VERO, parse_reidentify, ERRORS),
    Route("POST", f"{_BASE}/users/unsubscribe", Source.VERO, parse_unsubscribe, ERRORS),
    Route("POST", f"{_BASE}/users/resubscribe", Source.VERO, parse_resubscribe, ERRORS),
    Route("DELETE", f"{_BASE}/users/delete", Source.VERO, parse_delete, ERRORS),
    Route("GET", f"{_BASE}/heartbeat", Source.VERO, parse_heartbeat, ERRORS),
)
