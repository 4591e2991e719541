"""Small, pure helpers shared by the per-API parsers.

Each helper either returns a clean value or raises :class:`Invalid` naming
the field; the API modules turn ``Invalid`` into their own documented error
body. Nothing here knows about HTTP status codes.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

JsonObject = dict[str, Any]


class Invalid(Exception):
    """Input failed validation: ``field`` is the dotted path, ``message`` what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# Deliberately simple: one @, no spaces, a dot in the domain. Stricter checks
# refuse real addresses; looser ones accept obvious garbage like "a@b".
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@functools.lru_cache(maxsize=16_384)
def url_host(url: str) -> str | None:
    """The host of a URL (lower-case, as ``urlsplit`` gives it), or None when it has
    none or is malformed. Cached: pages repeat, and ``.hostname`` costs ~2.5 µs."""
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def decode_object(body: bytes, field: str = "body") -> JsonObject:
    """The body as a JSON object (not an array or scalar)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Invalid(field, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise Invalid(field, "must be a JSON object")
    return value


def optional_object(data: JsonObject, key: str, field: str | None = None) -> JsonObject:
    """``data[key]`` as an object; missing or null gives ``{}``."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(field or key, "must be an object")
    return value


def optional_str(
    data: JsonObject,
    key: str,
    *,
    field: str | None = None,
    max_chars: int | None = None,
    coerce_numbers: bool = False,
) -> str | None:
    """``data[key]`` as a non-empty string, or None when missing/null/empty.

    ``coerce_numbers`` accepts integers as ids (Vero documents ``"id": 1000``).
    """
    value = data.get(key)
    if value is None:
        return None
    if coerce_numbers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Invalid(field or key, "must be a string")
    value = value.strip()
    if not value:
        return None
    if max_chars is not None and len(value) > max_chars:
        raise Invalid(field or key, f"must be at most {max_chars} characters")
    return value


def required_str(
    data: JsonObject,
    key: str,
    *,
    field: str | None = None,
    max_chars: int | None = None,
    coerce_numbers: bool = False,
) -> str:
    """Like :func:`optional_str`, but missing or empty is an error."""
    value = optional_str(data, key, field=field, max_chars=max_chars, coerce_numbers=coerce_numbers)
    if value is None:
        raise Invalid(field or key, "is required")
    return value


def email(value: str | None, field: str = "email") -> str | None:
    """A plausible e-mail address, or None."""
    if value is None:
        return None
    if not _EMAIL.match(value):
        raise Invalid(field, "must be a valid email address")
    return value


def timestamp(value: Any, field: str = "timestamp") -> datetime | None:
    """A client time as aware UTC: ISO 8601 (``Z``/``+0000`` offsets) or epoch seconds/ms."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid(field, "must be an ISO 8601 time or a Unix timestamp")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10_000_000_000 else value  # ms since epoch
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise Invalid(field, "is out of range") from None
    if not isinstance(value, str):
        raise Invalid(field, "must be an ISO 8601 time or a Unix timestamp")
    text = value.strip()
    # Python < 3.12 refuses "+0000" (no colon), which Vero's own example uses.
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(field, "must be an ISO 8601 time or a Unix timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <key>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


def json_bytes(value: Any) -> bytes:
    """Compact JSON for response bodies."""
    return orjson.dumps(value)


def stringify(value: Any, field: str = "value") -> str:
    """A property value as a string: strings as they are, everything else as JSON.

    orjson refuses more than 254 levels of nesting (a JSON body may have up to
    1,024): such a value is the client's error, answered as one.
    """
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        raise Invalid(field, "is nested too deeply") from None
