"""Plausible-style ``POST /api/event``: no auth, the site found by domain or URL host.

Field names long and short (``n|name``, ``u|url``, ``d|domain``,
``r|referrer``, ``p|props|m|meta``, ``h|hashMode``, ``i|interactive``, plus
``sd``, ``e``, ``v``); the body is JSON whatever the ``Content-Type`` (the
tracker sends ``text/plain`` to avoid a CORS preflight). Every documented
limit is enforced here; failures answer 400 ``{"errors": {field: [msg]}}``
like Plausible's changeset errors, success 202 ``ok``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import orjson

from producers.apis.base import ApiErrors, ParseContext, Route, retry_after_header
from producers.errors import Rejection
from producers.model import PAGEVIEW, HttpRequest, Parsed, Reply, Submission
from producers.parsing import Invalid, JsonObject, decode_object, json_bytes
from producers.projects import sanitize_hostname
from schemas.reasons import EventKind, Source

MAX_NAME_CHARS = 120
MAX_URL_BYTES = 2000
MAX_PROPS = 30
MAX_PROP_KEY_BYTES = 300
MAX_PROP_VALUE_BYTES = 2000
MAX_SCROLL_DEPTH = 100
# "Must be less than 30 days (2,592,000,000 ms)."
MAX_ENGAGEMENT_MS = 30 * 24 * 3600 * 1000
# What ClickHouse's revenue column holds: Decimal(18, 3), 15 digits before the point.
MAX_REVENUE = Decimal("1e15")
ENGAGEMENT = "engagement"
ACCEPTED = Reply(202, b"ok", "text/plain; charset=utf-8")


class PlausibleErrors(ApiErrors):
    """``{"errors": {field: [message]}}``, the shape of Plausible's changeset errors."""

    def invalid(self, field: str, message: str) -> Rejection:
        return Rejection(
            400, json_bytes({"errors": {field: [message]}}), field=field, reason=message
        )

    def unauthorized(self, message: str = "invalid credentials") -> Rejection:
        return self.invalid("domain", message)

    def rate_limited(self, retry_after: int) -> Rejection:
        return Rejection(
            429,
            json_bytes({"errors": {"request": ["too many requests"]}}),
            headers=retry_after_header(retry_after),
            reason="rate_limited",
        )

    def unavailable(self, retry_after: int) -> Rejection:
        return Rejection(
            503,
            json_bytes({"errors": {"request": ["service unavailable"]}}),
            headers=retry_after_header(retry_after),
            reason="unavailable",
        )


ERRORS = PlausibleErrors()


def _first(body: JsonObject, *keys: str) -> Any:
    """The first key present with a non-null value (short names win, as in Plausible)."""
    for key in keys:
        value = body.get(key)
        if value is not None:
            return value
    return None


def _url(body: JsonObject) -> tuple[str, str | None]:
    url = _first(body, "u", "url")
    if url is None:
        raise Invalid("url", "is required")
    if not isinstance(url, str):
        raise Invalid("url", "must be a string")
    if len(url.encode()) > MAX_URL_BYTES:
        raise Invalid("url", f"should be at most {MAX_URL_BYTES} byte(s)")
    parts = urlsplit(url)
    if parts.scheme.lower() == "data":
        raise Invalid("url", "scheme is not allowed")
    return url, parts.hostname


def _name(body: JsonObject, has_engagement_fields: bool) -> str:
    name = _first(body, "n", "name")
    if name is None or (isinstance(name, str) and not name.strip()):
        raise Invalid("event_name", "can't be blank")
    if not isinstance(name, str):
        raise Invalid("event_name", "must be a string")
    if len(name) > MAX_NAME_CHARS:
        raise Invalid("event_name", f"should be at most {MAX_NAME_CHARS} character(s)")
    if name == ENGAGEMENT and not has_engagement_fields:
        raise Invalid("event_name", "engagement is reserved: it needs sd and e")
    return PAGEVIEW if name == "pageview" else name


def _referrer(body: JsonObject) -> str | None:
    referrer = _first(body, "r", "referrer")
    if referrer is None or referrer == "":
        return None
    if not isinstance(referrer, str):
        raise Invalid("referrer", "must be a string")
    if len(referrer.encode()) > MAX_URL_BYTES:
        raise Invalid("referrer", f"should be at most {MAX_URL_BYTES} byte(s)")
    return referrer


def _props(body: JsonObject) -> dict[str, str]:
    raw = _first(body, "p", "props", "m", "meta")
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Invalid("props", "is not valid JSON") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Invalid("props", "must be an object")
    # Plausible keeps scalars (string, number, boolean); lists, maps, null and ""
    # are filtered out. Numbers and booleans become their JSON text ("3", "true").
    props = {
        k: v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in raw.items()
        if (isinstance(v, str) and v != "") or isinstance(v, int | float)
    }
    if len(props) > MAX_PROPS:
        raise Invalid("props", f"should have at most {MAX_PROPS} properties")
    for key, value in props.items():
        if len(key.encode()) > MAX_PROP_KEY_BYTES:
            raise Invalid("props", f"keys should be at most {MAX_PROP_KEY_BYTES} byte(s)")
        if len(value.encode()) > MAX_PROP_VALUE_BYTES:
            raise Invalid("props", f"values should be at most {MAX_PROP_VALUE_BYTES} byte(s)")
    return props


def _revenue(body: JsonObject) -> tuple[str | None, str | None]:
    """``$`` or ``revenue``: ``{"amount": "9.99" | 9.99, "currency": "USD"}``, or nothing.

    Like Plausible, a value without both keys is ignored; an amount that is
    not a number or a currency that is not three letters is an error, so
    revenue is never stored wrong.
    """
    raw = _first(body, "$", "revenue")
    if not isinstance(raw, dict) or "amount" not in raw or "currency" not in raw:
        return None, None
    amount, currency = raw["amount"], raw["currency"]
    if isinstance(amount, bool) or not isinstance(amount, str | int | float):
        raise Invalid("revenue", "amount must be a number")
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise Invalid("revenue", "amount must be a number") from None
    if not value.is_finite() or abs(value) >= MAX_REVENUE:
        raise Invalid("revenue", "amount is out of range")
    valid_code = isinstance(currency, str) and len(currency) == 3 and currency.isascii()
    if not (valid_code and currency.isalpha()):
        raise Invalid("revenue", "currency must be a 3-letter ISO 4217 code")
    return str(amount).strip(), currency.upper()


def _integer(body: JsonObject, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise Invalid(key, "must be an integer")
    return int(value)


def _scroll_depth(body: JsonObject) -> int | None:
    sd = _integer(body, "sd")
    if sd is None:
        return None
    if sd < 0:
        raise Invalid("sd", "must be greater than or equal to 0")
    return min(sd, MAX_SCROLL_DEPTH)


def _engagement_time(body: JsonObject) -> int | None:
    e = _integer(body, "e")
    if e is None:
        return None
    if e < 0:
        raise Invalid("e", "must be greater than or equal to 0")
    if e >= MAX_ENGAGEMENT_MS:
        raise Invalid("e", f"must be less than {MAX_ENGAGEMENT_MS}")
    return e


def _flag(body: JsonObject, *keys: str) -> bool | None:
    value = _first(body, *keys)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1", "true", "false"):
        return value in (1, "1", "true")
    raise Invalid(keys[-1], "must be a boolean")


def _domains(body: JsonObject, url_host: str | None) -> list[str]:
    raw = _first(body, "d", "domain")
    if raw is None:
        if not url_host:
            raise Invalid("domain", "can't be blank")
        return [sanitize_hostname(url_host)]
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid("domain", "can't be blank")
    return [sanitize_hostname(d) for d in raw.split(",") if d.strip()]


def parse_event(request: HttpRequest, ctx: ParseContext) -> Parsed:
    """``POST /api/event``: one event, into every configured site its domains name."""
    try:
        body = decode_object(request.body)
    except Invalid:
        raise ERRORS.invalid("request", "Unable to parse request body as json") from None
    try:
        url, url_host = _url(body)
        scroll_depth = _scroll_depth(body)
        engagement_ms = _engagement_time(body)
        name = _name(body, scroll_depth is not None and engagement_ms is not None)
        domains = _domains(body, url_host)
        version = body.get("v")
        revenue_amount, revenue_currency = _revenue(body)
        submission = Submission(
            source=Source.PLAUSIBLE,
            kind=EventKind.TRACK,
            name=name,
            url=url,
            referrer=_referrer(body),
            domain=domains[0],
            properties=_props(body),
            revenue_amount=revenue_amount,
            revenue_currency=revenue_currency,
            # Pageviews always count as interactive; others only unless i=false.
            interactive=True if name == PAGEVIEW else _flag(body, "i", "interactive"),
            scroll_depth=scroll_depth,
            engagement_time_ms=engagement_ms,
            hash_mode=_flag(body, "h", "hashMode"),
            sdk_name=None if version is None else "plausible-tracker",
            sdk_version=None if version is None else str(version),
        )
    except Invalid as exc:
        raise ERRORS.invalid(exc.field, exc.message) from None
    projects = tuple(
        dict.fromkeys(p for d in domains if (p := ctx.directory.by_domain(d)) is not None)
    )
    if not projects:
        raise ERRORS.invalid("domain", "is not a site of this endpoint")
    return Parsed(projects, (submission,), ACCEPTED)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/event", Source.PLAUSIBLE, parse_event, ERRORS, name="plausible"),
)
