"""Canonical helpers every stage shares: names, property values, fingerprints, keys.

All are pure functions of their arguments, so the endpoint, the stream and a
replay agree byte for byte:

- ``normalise_event_name``: Vero's rule, case-insensitive, space and
  underscore equal, trimmed.
- ``property_value`` / ``stringify_properties``: how a JSON value becomes a
  property string (strings as they are, nested values as compact JSON text).
- ``event_fingerprint``: the identity of an event for deduplication, stable
  under key order and number/boolean spelling.
- ``user_key``, ``topic_key``: the Kafka key ``project:user_key``.
- ``visitor_domain``, ``visitor_id_with``: a Plausible-style keyed hash under
  a day's random salt (the salts live in ``producers.salts``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson


def normalise_event_name(name: str) -> str:
    """Vero's event-name identity: case-folded, spaces and underscores alike, trimmed.

    ``"Order Placed"``, ``" order_placed "`` and ``"ORDER  PLACED"`` are all
    ``"order_placed"``: runs of whitespace/underscores become one ``_``, and
    since an underscore counts as a space, leading/trailing ones are trimmed
    too. A leading ``$`` (Vemetric system events) is kept.
    """
    return "_".join(name.replace("_", " ").split()).casefold()


def property_value(value: Any) -> str | None:
    """A JSON value as a property string; ``None`` (JSON null) means "no property".

    Strings stay as they are; booleans are ``true``/``false``; numbers and
    nested lists/objects become compact JSON text.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(value)


def stringify_properties(values: Mapping[str, Any]) -> dict[str, str]:
    """A JSON object of properties as a map of strings (null values left out)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        text = property_value(value)
        if text is not None:
            out[str(key)] = text
    return out


_NUMBER = re.compile(r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")


def canonical_value(text: str) -> str:
    """One spelling per value, so equal values in different spellings fingerprint alike.

    Numbers (``"10"``, ``"10.0"``, ``"1e1"``) become their shortest decimal
    form; ``"True"``/``"TRUE"`` become ``true`` (and likewise false); JSON
    objects/arrays are re-serialised with sorted keys and canonical leaves.
    Anything else is returned unchanged (including its case and spaces).
    """
    stripped = text.strip()
    if not stripped:
        return text
    first = stripped[0]
    if first in "-.0123456789" and _NUMBER.match(stripped):
        return _canonical_number(stripped)
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered
    if first in "[{":
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return text
        return orjson.dumps(_canonical_json(parsed), option=orjson.OPT_SORT_KEYS).decode()
    return text


def _canonical_number(text: str) -> str:
    """The shortest plain spelling of a number; see ``_canonical_number_exact``.

    Plain decimals of up to 40 characters (nearly every property value) are
    rewritten by string operations, ~10x faster than Decimal; within that
    length the result is the same as the exact path's (a unit test checks).
    """
    if len(text) > 40 or "e" in text or "E" in text:
        return _canonical_number_exact(text)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    whole, _, fraction = text.partition(".")
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    if whole == "0" and not fraction:
        return "0"
    return f"{sign}{whole}.{fraction}" if fraction else sign + whole


def _canonical_number_exact(text: str) -> str:
    number = Decimal(text)  # exact: construction does not round to the context precision
    if not number:
        return "0"  # 0, 0.0, -0 and 0e5 are one value
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite: the regex admits no inf/nan
    kept = list(digits)
    while len(kept) > 1 and kept[-1] == 0:
        kept.pop()
        exponent += 1
    normal = Decimal((sign, tuple(kept), exponent))
    # Plain digits for everyday magnitudes; scientific beyond, so "1e-400" stays short.
    return format(normal, "f") if -50 <= exponent <= 50 else str(normal)


def _canonical_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_json(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _canonical_number(repr(value))
    if isinstance(value, str):
        return canonical_value(value)
    return value  # pragma: no cover - orjson yields only the types above


# What else the client said, beside project, user, name and properties: each
# field that carries meaning (DESIGN.md, "Deduplication"; docs/publishing.md,
# "What counts as a duplicate"). Ids, timestamps and transport details (IP,
# user agent, SDK) are left out.
_TEXT_FIELDS = ("kind", "domain", "referrer", "display_name", "email", "order_id")
_NUMBER_FIELDS = ("scroll_depth", "engagement_time_ms")


def event_fingerprint(
    event: Mapping[str, Any], *, user: str | None = None, name: str | None = None
) -> str:
    """The identity of an event for deduplication, as 32 hex digits.

    Two events are identical when everything the client sent that carries
    meaning is equal: project, user (``user_key``), normalised name,
    properties, kind, page URL (its fragment only counts unless the client
    said it is not in hash mode), domain, referrer, display name, email, user
    property edits (set, set once, unset), order id, revenue, and the
    engagement figures. Ids, timestamps and transport details (IP, user agent,
    SDK) are left out, so a client's retry of the same action matches.
    Property order does not matter; ``10``/``"10"``/``10.0`` and
    ``true``/``"true"`` are the same value.

    Fields that are empty (or a plain ``track`` kind) add nothing, so an
    event carrying only a name and properties keeps the fingerprint it had
    before these fields counted: dedup state written by an older release
    still matches it.

    ``user`` and ``name``: the event's ``user_key`` and normalised name, when
    the caller has them already (the stream's enrichment).
    """
    props = event.get("properties")
    parts: list[Any] = [
        event["project"],
        user_key(event) if user is None else user,
        normalise_event_name(event["name"]) if name is None else name,
        sorted([(k, _canonical_property(v)) for k, v in props.items()]) if props else [],
    ]
    extras = _meaningful_extras(event)
    if extras:
        parts.append(extras)
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()


# Property values repeat from event to event (plans, pages, amounts): each
# distinct one is made canonical once. Bounded; a pure function of the text.
_canonical_property = functools.lru_cache(maxsize=16_384)(canonical_value)


def _meaningful_extras(event: Mapping[str, Any]) -> list[Any]:
    """The non-empty meaningful fields beyond name and properties, as ``[field, value]`` pairs."""
    extras: list[Any] = []
    for field in _TEXT_FIELDS:
        value = event.get(field)
        if value and not (field == "kind" and value == "track"):
            extras.append([field, value.strip().lower() if field == "email" else value])
    url = event.get("url")
    if url:
        if event.get("hash_mode") is False:
            url = url.partition("#")[0]
        extras.append(["url", url])
    for field in ("user_properties", "user_properties_once"):
        values = event.get(field)
        if values:
            extras.append([field, sorted((k, canonical_value(v)) for k, v in values.items())])
    unset = event.get("user_properties_unset")
    if unset:
        extras.append(["user_properties_unset", sorted(unset)])
    amount = event.get("revenue_amount")
    if amount:
        extras.append(["revenue", canonical_value(amount), event.get("revenue_currency") or ""])
    for field in _NUMBER_FIELDS:
        value = event.get(field)
        if value is not None:
            extras.append([field, value])
    if event.get("interactive") is False:
        extras.append(["interactive", False])
    return extras


def user_key(event: Mapping[str, Any]) -> str:
    """Who an event is about: user id, else email (lower-cased), else anonymous id, else visitor id.

    Empty when none is known; the stream fills ``visitor_id`` before it keys
    state by user, and the endpoint sets it before producing.
    """
    user_id: str | None = event.get("user_id")
    if user_id:
        return user_id
    email: str | None = event.get("email")
    if email:
        return email.strip().lower()
    return event.get("anonymous_id") or event.get("visitor_id") or ""


def topic_key(project: str, user_key: str) -> str:
    """The Kafka record key of an event: ``project:user_key`` (DESIGN.md, "Topics")."""
    return f"{project}:{user_key}"


def visitor_domain(domain: str | None, url: str | None, project: str) -> str:
    """The site a visitor id is scoped to: the event's domain, else its URL's host,
    else the project (the endpoint and ``eventsieve publish`` agree on it)."""
    if domain:
        return domain
    if url:
        host = urlsplit(url).hostname
        if host:
            return host
    return project


def visitor_id_with(salt: bytes, ip: str, user_agent: str, domain: str) -> str:
    """A visitor's anonymous id under a given salt, as 32 hex digits.

    ``HMAC-SHA256(salt, domain \0 ip \0 user_agent)``. The endpoint's salts
    are random per day and deleted after 48 hours (``producers.salts``), so
    once a day's salt is gone its visitor ids reverse to nothing.
    """
    message = f"{domain}\0{ip}\0{user_agent}".encode()
    # hmac.digest: the same HMAC in one C call, without an HMAC object per event.
    return hmac.digest(salt, message, "sha256")[:16].hex()
