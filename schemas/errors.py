"""Why a record could not be decoded: one typed error per cause.

The stream turns any ``DecodeError`` into a ``DlqRecord`` whose ``error_type``
is the error's ``code`` and whose ``error`` is ``str(error)``; so each class
carries the data needed to say exactly what was wrong (``field``,
``expected``, ``fingerprint``), never just "bad record".
"""

from __future__ import annotations

from eventsieve.errors import EventsieveError


class DecodeError(EventsieveError):
    """A record value is not a valid event of the expected schema."""

    code = "decode_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class UnknownFingerprintError(DecodeError):
    """Avro single-object encoding, but written with a schema we do not know."""

    code = "unknown_fingerprint"

    def __init__(self, fingerprint: bytes, schema: str) -> None:
        self.fingerprint = fingerprint
        self.schema = schema
        super().__init__(
            f"unknown writer schema fingerprint {fingerprint.hex()} for {schema} "
            "(not a released version: see schemas/history/)"
        )


class TruncatedError(DecodeError):
    """The bytes end before the record does (a cut or partial value)."""

    code = "truncated"


class MalformedAvroError(DecodeError):
    """The bytes carry the Avro header but the body is not a valid record."""

    code = "malformed_avro"


class NotJsonError(DecodeError):
    """Neither Avro single-object encoding nor a JSON object."""

    code = "not_json"


class MissingFieldError(DecodeError):
    """A required field is absent (or null) in a JSON value."""

    code = "missing_field"

    def __init__(self, field: str) -> None:
        super().__init__(f"missing required field {field!r}", field=field)


class WrongTypeError(DecodeError):
    """A field has a value of the wrong type (``expected`` names the right one)."""

    code = "wrong_type"

    def __init__(self, field: str, expected: str, got: object) -> None:
        self.expected = expected
        self.got = type(got).__name__
        super().__init__(
            f"wrong type for field {field!r}: expected {expected}, got {self.got} {_short(got)}",
            field=field,
        )


class InvalidValueError(DecodeError):
    """A field has the right type but an unusable value (e.g. an unparsable date)."""

    code = "invalid_value"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid value for field {field!r}: {problem}", field=field)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EncodeError(EventsieveError):
    """A record cannot be written with its schema (a bug in the caller, not bad input)."""

    code = "encode_error"


class IncompatibleSchemaError(DecodeError):
    """A known writer version cannot be resolved to the current reader schema.

    Should never happen: the evolution test guards every released version.
    """

    code = "incompatible_schema"
