"""JSON values validated against an Avro schema: for publishers that cannot write Avro.

A converter is compiled once per schema from its ``.avsc`` JSON (with logical
types): each field knows how to check and convert its JSON value, fill its
default, or name itself in a typed error. Rules, per Avro type:

- ``string``: a JSON string (numbers are *not* silently turned into text).
- ``int``/``long``: a JSON integer (not a boolean, not a float).
- ``timestamp-millis``: integer milliseconds since the epoch, or an ISO-8601
  string (``2026-11-28T10:00:00Z``; no offset means UTC).
- ``boolean``: ``true``/``false``.
- ``map`` of strings (properties): any JSON object; values become strings by
  ``schemas.canonical.property_value`` (nested values as JSON text, nulls
  left out).
- ``["null", T]``: ``null`` or absent gives the default.
- ``bytes``: base64 text.
Unknown keys are ignored, so a publisher already on a newer schema version
still decodes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Callable
from typing import Any

from schemas.canonical import property_value
from schemas.errors import InvalidValueError, MissingFieldError, WrongTypeError

Converter = Callable[[Any, str], Any]
"""``(json_value, field_path) -> record value``; raises a DecodeError subclass."""

RecordConverter = Callable[..., dict[str, Any]]
"""``(json_object, path="", fallbacks=None) -> record``."""


def compile_record(schema: dict[str, Any]) -> RecordConverter:
    """A function ``(json_object, path, fallbacks) -> record`` for a record schema.

    ``fallbacks`` supplies values for absent fields before schema defaults
    apply (e.g. an ``event_id`` derived from the record's offset).
    """
    plan = [
        (f["name"], _converter(f["type"]), "default" in f, f.get("default"))
        for f in schema["fields"]
    ]

    def convert(
        obj: dict[str, Any], path: str = "", fallbacks: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conv, has_default, default in plan:
            value = obj.get(name)
            if value is None and fallbacks:
                value = fallbacks.get(name)
            if value is None:
                if not has_default:
                    raise MissingFieldError(f"{path}.{name}" if path else name)
                out[name] = _copy(default)
            else:
                out[name] = conv(value, f"{path}.{name}" if path else name)
        return out

    return convert


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, dict | list) else value


def _converter(avro_type: Any) -> Converter:
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            raise NotImplementedError(
                f"JSON decoding supports ['null', T] unions only: {avro_type}"
            )
        return _converter(branches[0])
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        kind = avro_type["type"]
        if logical == "timestamp-millis":
            return _timestamp_millis
        if kind == "map":
            if avro_type["values"] != "string":
                raise NotImplementedError("JSON decoding supports maps of strings only")
            return _string_map
        if kind == "array":
            item = _converter(avro_type["items"])
            return _array(item)
        if kind == "record":
            return _nested_record(compile_record(avro_type))
        return _converter(kind)
    return _PRIMITIVES[avro_type]


def _string(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    raise WrongTypeError(path, "string", value)


def _integer(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise WrongTypeError(path, "integer", value)


def _int32(value: Any, path: str) -> int:
    number = _integer(value, path)
    if not -(2**31) <= number < 2**31:
        raise InvalidValueError(path, f"{number} does not fit in a 32-bit int")
    return number


def _long(value: Any, path: str) -> int:
    number = _integer(value, path)
    if not -(2**63) <= number < 2**63:
        raise InvalidValueError(path, f"{number} does not fit in a 64-bit long")
    return number


def _double(value: Any, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise WrongTypeError(path, "number", value)


def _boolean(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise WrongTypeError(path, "boolean", value)


def _bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise WrongTypeError(path, "base64 string", value)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise InvalidValueError(path, f"not base64: {exc}") from None


def _timestamp_millis(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _long(value, path)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidValueError(path, f"{value!r} is not an ISO-8601 date-time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        delta = moment - _EPOCH
        return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    raise WrongTypeError(path, "integer milliseconds or ISO-8601 string", value)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _string_map(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise WrongTypeError(path, "object", value)
    out: dict[str, str] = {}
    for key, item in value.items():
        text = property_value(item)
        if text is not None:
            out[key] = text
    return out


def _array(item: Converter) -> Converter:
    def convert(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise WrongTypeError(path, "array", value)
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return convert


def _nested_record(record: RecordConverter) -> Converter:
    def convert(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise WrongTypeError(path, "object", value)
        return record(value, path)

    return convert


_PRIMITIVES: dict[str, Converter] = {
    "string": _string,
    "int": _int32,
    "long": _long,
    "float": _double,
    "double": _double,
    "boolean": _boolean,
    "bytes": _bytes,
}
