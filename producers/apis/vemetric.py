"""Vemetric hub API: ``POST /e`` (track), ``/i`` (identify), ``/u`` (update user),
``/l`` (page leave), ``/r`` (reset), ``GET /up``.

What the official SDKs really send (vemetric 0.2 on PyPI, @vemetric/node 0.2,
@vemetric/web 0.6): the token in a ``Token`` header (the web SDK's
``sendBeacon`` puts ``Token`` and ``Allow-Cookies`` into the JSON body
instead), ``V-SDK``/``V-SDK-Version`` headers, ``name``, ``userIdentifier``
(server SDKs) or ``identifier`` (web SDK), ``displayName``, ``customData``,
``userData{set,setOnce,unset}``, ``contextId``, ``url``; the web SDK adds a
``V-Host`` header (the host of its ``host`` option: the hub, not the site) and
the referrer as ``v-referrer``. The docs also show ``projectToken`` in the
body. Answers: 200 with an empty body, 400 ``Invalid!``.

The site (``domain``) is the page URL's host, else the browser's ``Origin``;
never ``V-Host``. A request from a server SDK (``V-SDK`` naming one, or the
server SDKs' ``userIdentifier`` field) is a backend request: its address and
user agent are the backend's, not a visitor's (``EdgeContext.of_server``).
"""

from __future__ import annotations

from producers.apis.base import ApiErrors, ParseContext, Route, retry_after_header
from producers.apis.common import string_map, user_data
from producers.errors import Rejection
from producers.model import OUTBOUND_LINK, PAGEVIEW, HttpRequest, Parsed, Reply, Submission
from producers.parsing import (
    Invalid,
    JsonObject,
    decode_object,
    optional_str,
    required_str,
    url_host,
)
from producers.projects import sanitize_hostname
from schemas.reasons import EventKind, Source

_TEXT = "text/plain; charset=utf-8"
OK = Reply(200, b"", _TEXT)
# The V-SDK values of Vemetric's server-side SDKs (Node.js, Python, PHP, Ruby);
# the browser script sends "script".
SERVER_SDKS = frozenset({"node", "python", "php", "ruby"})

# Both spellings of the two special events: the SDKs' and the docs'.
_SPECIAL_NAMES = {
    "$$pageview": PAGEVIEW,
    "$pageview": PAGEVIEW,
    "$$outboundlink": OUTBOUND_LINK,
    "$outbound_link": OUTBOUND_LINK,
    "$outboundlink": OUTBOUND_LINK,
}
PAGE_LEAVE = "$pageleave"


class VemetricErrors(ApiErrors):
    """Plain-text answers, as the hub gives them."""

    def invalid(self, field: str, message: str) -> Rejection:
        return Rejection(400, b"Invalid!", media_type=_TEXT, field=field, reason=message)

    def unauthorized(self, message: str = "invalid credentials") -> Rejection:
        return Rejection(401, b"Unauthorized", media_type=_TEXT, reason="unauthorized")

    def rate_limited(self, retry_after: int) -> Rejection:
        return Rejection(
            429,
            b"Too many requests",
            media_type=_TEXT,
            headers=retry_after_header(retry_after),
            reason="rate_limited",
        )

    def unavailable(self, retry_after: int) -> Rejection:
        return Rejection(
            503,
            b"Service unavailable",
            media_type=_TEXT,
            headers=retry_after_header(retry_after),
            reason="unavailable",
        )


ERRORS = VemetricErrors()


def _body(request: HttpRequest, *, allow_empty: bool = False) -> JsonObject:
    if allow_empty and not request.body.strip():
        return {}
    try:
        return decode_object(request.body)
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None


def _project(request: HttpRequest, body: JsonObject, ctx: ParseContext) -> str:
    token = request.header("token")
    if not token:
        for key in ("Token", "token", "projectToken"):
            value = body.get(key)
            if isinstance(value, str) and value:
                token = value
                break
    project = ctx.directory.by_token(token)
    if project is None:
        raise ERRORS.unauthorized()
    return project


def _identifier(body: JsonObject) -> str | None:
    # Server SDKs send userIdentifier, the web SDK (and the docs) identifier.
    return optional_str(body, "userIdentifier") or optional_str(body, "identifier")


def _domain(request: HttpRequest, url: str | None) -> str | None:
    """The site: the page URL's host, else the browser's ``Origin`` (``V-Host`` is the hub's)."""
    for candidate in (url, request.header("origin")):
        if candidate:
            host = url_host(candidate)
            if host:
                return sanitize_hostname(host)
    return None


def _sdk(request: HttpRequest, body: JsonObject) -> tuple[str | None, str | None]:
    """``V-SDK``/``V-SDK-Version`` from the body: beacons carry them there, not as headers."""
    if request.header("v-sdk"):
        return None, None  # the edge reads the headers
    name, version = body.get("V-SDK"), body.get("V-SDK-Version")
    return (
        name if isinstance(name, str) and name else None,
        version if isinstance(version, str) and version else None,
    )


def _from_server(request: HttpRequest, body: JsonObject) -> bool:
    """Whether a server SDK sent the request (so the peer is a backend, not the visitor)."""
    sdk = request.header("v-sdk") or body.get("V-SDK")
    return "userIdentifier" in body or (isinstance(sdk, str) and sdk.lower() in SERVER_SDKS)


def _referrer(request: HttpRequest, body: JsonObject) -> str | None:
    return request.header("v-referrer") or optional_str(body, "referrer")


def parse_track(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /e``: one event; pageviews and outbound links need ``url``."""
    body = _body(request)
    project = _project(request, body, ctx)
    try:
        raw_name = required_str(body, "name")
        name = _SPECIAL_NAMES.get(raw_name.lower(), raw_name)
        url = optional_str(body, "url")
        properties = string_map(body.get("customData"), "customData")
        if name in (PAGEVIEW, OUTBOUND_LINK) and url is None:
            raise Invalid("url", "is required for pageview and outbound link events")
        if name == OUTBOUND_LINK and not properties.get("href"):
            raise Invalid("customData.href", "is required for outbound link events")
        props_set, props_once, props_unset = user_data(body.get("userData"), "userData")
        sdk_name, sdk_version = _sdk(request, body)
        submission = Submission(
            source=Source.VEMETRIC,
            kind=EventKind.TRACK,
            name=name,
            user_id=_identifier(body),
            display_name=optional_str(body, "displayName"),
            url=url,
            referrer=_referrer(request, body),
            domain=_domain(request, url),
            sdk_name=sdk_name,
            sdk_version=sdk_version,
            properties=properties,
            user_properties=props_set,
            user_properties_once=props_once,
            user_properties_unset=props_unset,
            context_id=optional_str(body, "contextId"),
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), (submission,), OK, from_server=_from_server(request, body))


def _user_update(
    request: HttpRequest, ctx: ParseContext, kind: EventKind, name: str, required: str
) -> Parsed:
    """The parsed ``/i`` or ``/u``: who, display name, data, avatar.

    ``required`` is the field named when the user is missing: the hub's own
    error names ``identifier`` for ``/i`` and ``userIdentifier`` for ``/u``.
    """
    body = _body(request)
    project = _project(request, body, ctx)
    try:
        identifier = _identifier(body)
        if identifier is None:
            raise Invalid(required, "is required")
        props_set, props_once, props_unset = user_data(body.get("data"), "data")
        avatar = optional_str(body, "avatarUrl")
        if avatar:
            props_set = {**props_set, "avatarUrl": avatar}
        submission = Submission(
            source=Source.VEMETRIC,
            kind=kind,
            name=name,
            user_id=identifier,
            display_name=optional_str(body, "displayName"),
            url=optional_str(body, "url"),
            domain=_domain(request, optional_str(body, "url")),
            user_properties=props_set,
            user_properties_once=props_once,
            user_properties_unset=props_unset,
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), (submission,), OK, from_server=_from_server(request, body))


def parse_identify(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /i``: who the user is (``identifier``), with optional display name and data."""
    # The hub's docs list 202 ("identification in progress"), but the hub answers
    # 200, and the SDKs only check for a 2xx.
    return _user_update(request, ctx, EventKind.IDENTIFY, "$identify", required="identifier")


def parse_update_user(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /u``: user properties (``data{set,setOnce,unset}``), display name, avatar."""
    return _user_update(
        request, ctx, EventKind.UPDATE_USER, "$update_user", required="userIdentifier"
    )


def parse_page_leave(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /l``: the web SDK's page-leave beacon (token and flags in the body)."""
    body = _body(request)
    project = _project(request, body, ctx)
    try:
        url = optional_str(body, "url")
        if url is None:
            raise Invalid("url", "is required")
        sdk_name, sdk_version = _sdk(request, body)
        submission = Submission(
            source=Source.VEMETRIC,
            kind=EventKind.TRACK,
            name=PAGE_LEAVE,
            user_id=_identifier(body),
            display_name=optional_str(body, "displayName"),
            url=url,
            domain=_domain(request, url),
            context_id=optional_str(body, "contextId"),
            sdk_name=sdk_name,
            sdk_version=sdk_version,
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    return Parsed((project,), (submission,), OK)


def parse_reset(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /r``: the web SDK forgets its user; only the (cookie) identity changes.

    Nothing is recorded: the reset is client-side state, not an event.
    """
    body = _body(request, allow_empty=True)
    project = _project(request, body, ctx)
    return Parsed((project,), (), OK)


def parse_up(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``GET /up``: a liveness ping; no token needed."""
    return Parsed((), (), OK)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/e", Source.VEMETRIC, parse_track, ERRORS, name="vemetric:e"),
    Route("POST", "/i", Source.VEMETRIC, parse_identify, ERRORS, name="vemetric:i"),
    Route("POST", "/u", Source.VEMETRIC, parse_update_user, ERRORS, name="vemetric:u"),
    Route("POST", "/l", Source.VEMETRIC, parse_page_leave, ERRORS, name="vemetric:l"),
    Route("POST", "/r", Source.VEMETRIC, parse_reset, ERRORS, name="vemetric:r"),
    Route("GET", "/up", Source.VEMETRIC, parse_up, ERRORS, name="vemetric:up"),
)
