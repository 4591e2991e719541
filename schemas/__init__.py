"""The data contract: Avro schemas, the event model and codecs for everything on a topic.

Public API (import from ``schemas``):

Event model (plain dicts; timestamps are ``int`` ms since the epoch, UTC)
    ``RawEvent``, ``CleanEvent``, ``DroppedEvent``, ``DlqRecord``, ``DlqHeader``
    (TypedDicts, field for field schemas/avro/*.avsc);
    ``new_raw_event(project=, name=, **fields)``, ``clean_event(raw, ...)``,
    ``dropped_event(raw, reason=, stage=, ...)``, ``new_event_id()``,
    ``derived_event_id(topic, partition, offset)``, ``now_ms()``.
Codecs (Avro single-object encoding; decoders also accept JSON)
    ``encode_raw``/``decode_raw``, ``encode_clean``/``decode_clean``,
    ``encode_dropped``/``decode_dropped``, ``encode_dlq``/``decode_dlq``,
    ``decode_any`` (Avro of any schema, by fingerprint), ``to_json_bytes``,
    ``codec(name)`` for the underlying ``Codec`` objects.
Errors
    ``DecodeError`` and its subclasses ``UnknownFingerprintError``,
    ``TruncatedError``, ``MalformedAvroError``, ``NotJsonError``,
    ``MissingFieldError``, ``WrongTypeError``, ``InvalidValueError``,
    ``IncompatibleSchemaError`` (each with a ``code`` for DlqRecord.error_type);
    ``EncodeError``.
Canonical helpers
    ``normalise_event_name(name)``, ``event_fingerprint(event)``,
    ``user_key(event)``, ``topic_key(project, user_key)``,
    ``visitor_domain(domain, url, project)``, ``visitor_id_with(salt, ip, user_agent, domain)``,
    ``property_value(v)``, ``stringify_properties(mapping)``,
    ``canonical_value(text)``.
Vocabularies (``StrEnum``; Avro strings on the wire)
    ``DropReason``, ``Stage``, ``Source``, ``EventKind``.
Schema files
    ``schemas.registry``: ``RAW_EVENT``, ``CLEAN_EVENT``, ``DROPPED_EVENT``,
    ``DLQ_RECORD``, ``current(name)``, ``history(name)``.
"""

from schemas.canonical import (
    canonical_value,
    event_fingerprint,
    normalise_event_name,
    property_value,
    stringify_properties,
    topic_key,
    user_key,
    visitor_domain,
    visitor_id_with,
)
from schemas.codecs import (
    Codec,
    codec,
    decode_any,
    decode_clean,
    decode_dlq,
    decode_dropped,
    decode_raw,
    encode_clean,
    encode_dlq,
    encode_dropped,
    encode_raw,
    to_json_bytes,
)
from schemas.errors import (
    DecodeError,
    EncodeError,
    IncompatibleSchemaError,
    InvalidValueError,
    MalformedAvroError,
    MissingFieldError,
    NotJsonError,
    TruncatedError,
    UnknownFingerprintError,
    WrongTypeError,
)
from schemas.events import (
    CleanEvent,
    DlqHeader,
    DlqRecord,
    DroppedEvent,
    RawEvent,
    clean_event,
    derived_event_id,
    dropped_event,
    new_event_id,
    new_raw_event,
    now_ms,
)
from schemas.reasons import DropReason, EventKind, Source, Stage

__all__ = [
    "CleanEvent",
    "Codec",
    "DecodeError",
    "DlqHeader",
    "DlqRecord",
    "DropReason",
    "DroppedEvent",
    "EncodeError",
    "EventKind",
    "IncompatibleSchemaError",
    "InvalidValueError",
    "MalformedAvroError",
    "MissingFieldError",
    "NotJsonError",
    "RawEvent",
    "Source",
    "Stage",
    "TruncatedError",
    "UnknownFingerprintError",
    "WrongTypeError",
    "canonical_value",
    "clean_event",
    "codec",
    "decode_any",
    "decode_clean",
    "decode_dlq",
    "decode_dropped",
    "decode_raw",
    "derived_event_id",
    "dropped_event",
    "encode_clean",
    "encode_dlq",
    "encode_dropped",
    "encode_raw",
    "event_fingerprint",
    "new_event_id",
    "new_raw_event",
    "normalise_event_name",
    "now_ms",
    "property_value",
    "stringify_properties",
    "to_json_bytes",
    "topic_key",
    "user_key",
    "visitor_domain",
    "visitor_id_with",
]
