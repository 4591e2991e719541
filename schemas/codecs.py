"""Encoding and decoding of every topic's values: Avro single-object encoding, or JSON.

Avro single-object encoding (Avro spec): ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema, then the schemaless Avro body.
A decoder accepts every released writer version of its record type
(schemas/history/) and resolves it to the current reader schema, so old
publishers keep working after a field is added.

Decoders also accept JSON (a value whose first byte is not ``C3``), checked
against the same schema with defaults applied (see schemas/json_values.py).
Every failure is a ``DecodeError`` subclass that says what was wrong.

Records are plain dicts; timestamps are ``int`` milliseconds (see
schemas/events.py). Schemas are parsed once at first use.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from functools import cache, partial
from io import BytesIO
from typing import Any, cast

import orjson
from fastavro import schemaless_reader
from fastavro.read import SchemaResolutionError

from schemas import registry
from schemas.errors import (
    DecodeError,
    IncompatibleSchemaError,
    MalformedAvroError,
    NotJsonError,
    TruncatedError,
    UnknownFingerprintError,
)
from schemas.events import CleanEvent, DlqRecord, DroppedEvent, RawEvent
from schemas.fastcodec import compile_decoder, compile_encoder
from schemas.json_values import compile_record

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10  # 2 magic bytes + 8 fingerprint bytes


class Codec:
    """Encoder/decoder of one record type (``raw_event``, ``clean_event``, ...).

    The current schema is encoded and decoded by generated code
    (schemas/fastcodec.py). An older writer version whose fields keep their
    types is decoded by its own generated decoder and projected onto the
    current fields (defaults for added fields, removed fields left out);
    any other older version is resolved by fastavro.
    """

    def __init__(self, name: str) -> None:
        current = registry.current(name)
        self.name = name
        self.schema_name: str = current.schema["name"]
        self._parsed = current.parsed
        self._header = MAGIC + current.fingerprint
        self._fingerprint = current.fingerprint
        self._encode = compile_encoder(current.schema)
        self._decode = compile_decoder(current.schema)
        self._old: dict[bytes, Callable[[bytes], dict[str, Any]]] = {
            fp: self._old_reader(version)
            for fp, version in registry.writers(name).items()
            if fp != current.fingerprint
        }
        self._from_json = compile_record(current.schema)

    def _old_reader(self, writer: registry.SchemaVersion) -> Callable[[bytes], dict[str, Any]]:
        current = registry.current(self.name)
        plan = projection(writer.schema, current.schema)
        if plan is None:
            return partial(self._fastavro_resolve, writer.parsed)
        decode = compile_decoder(writer.schema)
        schema_name = self.schema_name

        def read(value: bytes) -> dict[str, Any]:
            record, end = decode(value, HEADER_SIZE)
            if end != len(value):
                raise MalformedAvroError(f"{schema_name}: {len(value) - end} trailing bytes")
            return {
                name: record[name] if from_writer else _fresh(default)
                for name, from_writer, default in plan
            }

        return read

    def _fastavro_resolve(self, writer: Any, value: bytes) -> dict[str, Any]:
        body = BytesIO(value)
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer, self._parsed)
        except EOFError as exc:
            raise TruncatedError(
                f"{self.schema_name}: value ends inside the record ({exc})"
            ) from None
        except SchemaResolutionError as exc:
            raise IncompatibleSchemaError(f"{self.schema_name}: {exc}") from None
        except (ValueError, IndexError, UnicodeDecodeError, TypeError, OverflowError) as exc:
            raise MalformedAvroError(f"{self.schema_name}: invalid Avro body ({exc})") from None
        if body.tell() != len(value):
            raise MalformedAvroError(
                f"{self.schema_name}: {len(value) - body.tell()} trailing bytes after the record"
            )
        return cast(dict[str, Any], record)

    @property
    def header(self) -> bytes:
        """The 10-byte single-object header of the current schema."""
        return self._header

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Avro single-object encoding of ``record`` with the current schema.

        Absent optional fields take their schema defaults; a missing required
        field or a wrong type raises ``EncodeError`` naming the field.
        """
        return self._encode(record, self._header)

    def decode(
        self, value: bytes | None, fallbacks: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A record from Avro single-object encoding or JSON; raises a DecodeError subclass.

        ``fallbacks`` fills fields a JSON value lacks (before schema defaults);
        Avro values always carry every field.
        """
        if value is None:
            raise NotJsonError(f"{self.schema_name}: no value (a tombstone record)")
        if value[:1] == b"\xc3":
            return self.decode_avro(value)
        return self.decode_json(value, fallbacks)

    def decode_avro(self, value: bytes) -> dict[str, Any]:
        """A record from Avro single-object encoding (any released writer version)."""
        fingerprint = value[2:HEADER_SIZE]
        if fingerprint == self._fingerprint and value[:2] == MAGIC:
            record, end = self._decode(value, HEADER_SIZE)
            if end != len(value):
                raise MalformedAvroError(
                    f"{self.schema_name}: {len(value) - end} trailing bytes after the record"
                )
            return record
        if len(value) < HEADER_SIZE:
            if value[:2] == MAGIC[: len(value)]:
                raise TruncatedError(
                    f"{self.schema_name}: {len(value)} bytes, shorter than the "
                    f"{HEADER_SIZE}-byte single-object header"
                )
            raise MalformedAvroError(f"{self.schema_name}: not Avro single-object encoding")
        if value[:2] != MAGIC:
            raise MalformedAvroError(
                f"{self.schema_name}: bad single-object magic {value[:2].hex()} (expected c301)"
            )
        reader = self._old.get(fingerprint)
        if reader is None:
            raise UnknownFingerprintError(fingerprint, self.schema_name)
        return reader(value)

    def decode_json(
        self, value: bytes | str, fallbacks: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A record from a JSON object, validated against the current schema."""
        return self.from_object(self.load_object(value), fallbacks)

    def load_object(self, value: bytes | str) -> dict[str, Any]:
        """The JSON object in ``value``; raises ``NotJsonError`` for anything else."""
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise NotJsonError(
                f"{self.schema_name}: neither Avro single-object encoding nor JSON ({exc})"
            ) from None
        if not isinstance(obj, dict):
            raise NotJsonError(
                f"{self.schema_name}: JSON value is {type(obj).__name__}, expected an object"
            )
        return obj

    def from_object(
        self, obj: dict[str, Any], fallbacks: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A record from parsed JSON: checked, converted, defaults applied."""
        return self._from_json(obj, "", fallbacks)


def projection(
    writer: dict[str, Any], reader: dict[str, Any]
) -> list[tuple[str, bool, Any]] | None:
    """How to turn a writer-version record into a reader record, if it is simple.

    Simple means: every field present in both has the same type (docs and
    defaults aside) and every field only the reader has carries a default.
    Returns ``[(field, taken_from_writer, default)]`` in reader order, or
    ``None`` when fastavro's full schema resolution is needed.
    """
    writer_types = {f["name"]: _bare(f["type"]) for f in writer["fields"]}
    plan: list[tuple[str, bool, Any]] = []
    for field in reader["fields"]:
        name = field["name"]
        if name in writer_types:
            if writer_types[name] != _bare(field["type"]):
                return None
            plan.append((name, True, None))
        elif "default" in field:
            plan.append((name, False, field["default"]))
        else:
            return None
    return plan


def _bare(avro_type: Any) -> Any:
    """A type without documentation and defaults, for comparing two versions' fields."""
    if isinstance(avro_type, dict):
        return {k: _bare(v) for k, v in avro_type.items() if k not in ("doc", "default")}
    if isinstance(avro_type, list):
        return [_bare(v) for v in avro_type]
    return avro_type


def _fresh(value: Any) -> Any:
    return value.copy() if isinstance(value, dict | list) else value


@cache
def codec(name: str) -> Codec:
    """The shared codec of a record type (``registry.RAW_EVENT``, ...), built once."""
    return Codec(name)


def encode_raw(event: RawEvent | Mapping[str, Any]) -> bytes:
    """RawEvent → Avro single-object bytes (for ``events.raw``/``events.orders``)."""
    return codec(registry.RAW_EVENT).encode(event)


def decode_raw(
    value: bytes | None, *, event_id: str | None = None, received_at: int | None = None
) -> RawEvent:
    """Avro or JSON bytes → RawEvent with every field present; raises DecodeError.

    For JSON values only: ``event_id`` is used when the value has none (pass
    ``derived_event_id(topic, partition, offset)`` so a replay gives the same
    id), ``received_at`` when it has none (pass the Kafka record timestamp),
    and ``timestamp`` defaults to ``received_at``.
    """
    c = codec(registry.RAW_EVENT)
    if value is None:
        raise NotJsonError("RawEvent: no value (a tombstone record)")
    if value[:1] == b"\xc3":
        return cast(RawEvent, c.decode_avro(value))
    obj = c.load_object(value)
    fallbacks: dict[str, Any] = {}
    if event_id is not None:
        fallbacks["event_id"] = event_id
    if received_at is not None:
        fallbacks["received_at"] = received_at
    if obj.get("timestamp") is None:
        fallbacks["timestamp"] = obj.get("received_at", received_at)
    return cast(RawEvent, c.from_object(obj, fallbacks))


def encode_clean(event: CleanEvent | Mapping[str, Any]) -> bytes:
    """CleanEvent → Avro single-object bytes (for ``events.clean``)."""
    return codec(registry.CLEAN_EVENT).encode(event)


def decode_clean(value: bytes | None) -> CleanEvent:
    """Avro or JSON bytes → CleanEvent; raises DecodeError."""
    return cast(CleanEvent, codec(registry.CLEAN_EVENT).decode(value))


def encode_dropped(event: DroppedEvent | Mapping[str, Any]) -> bytes:
    """DroppedEvent → Avro single-object bytes (for ``events.dropped``)."""
    return codec(registry.DROPPED_EVENT).encode(event)


def decode_dropped(value: bytes | None) -> DroppedEvent:
    """Avro or JSON bytes → DroppedEvent; raises DecodeError."""
    return cast(DroppedEvent, codec(registry.DROPPED_EVENT).decode(value))


def encode_dlq(record: DlqRecord | Mapping[str, Any]) -> bytes:
    """DlqRecord → Avro single-object bytes (for ``events.dlq``)."""
    return codec(registry.DLQ_RECORD).encode(record)


def decode_dlq(value: bytes | None) -> DlqRecord:
    """Avro or JSON bytes → DlqRecord; raises DecodeError."""
    return cast(DlqRecord, codec(registry.DLQ_RECORD).decode(value))


def decode_any(value: bytes) -> tuple[str, dict[str, Any]]:
    """``(record type, record)`` of an Avro value of any eventsieve schema, by fingerprint.

    For tools that read any topic (``eventsieve tail``). Raises
    ``UnknownFingerprintError`` for Avro of unknown schemas, ``NotJsonError``
    for non-Avro values (JSON is not self-describing: use a typed decoder).
    """
    if value[:2] == MAGIC and len(value) >= HEADER_SIZE:
        fingerprint = value[2:HEADER_SIZE]
        for name in registry.SCHEMA_NAMES:
            if fingerprint in registry.writers(name):
                return name, codec(name).decode_avro(value)
        raise UnknownFingerprintError(fingerprint, "any eventsieve schema")
    if value[:1] == b"\xc3":
        raise TruncatedError(f"{len(value)} bytes, shorter than the single-object header")
    raise NotJsonError("not Avro single-object encoding")


def to_json_bytes(record: Mapping[str, Any]) -> bytes:
    """A decoded record as compact JSON (bytes values as base64 text)."""
    return orjson.dumps(record, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


__all__ = [
    "Codec",
    "DecodeError",
    "codec",
    "decode_any",
    "decode_clean",
    "decode_dlq",
    "decode_dropped",
    "decode_raw",
    "encode_clean",
    "encode_dlq",
    "encode_dropped",
    "encode_raw",
    "to_json_bytes",
]
