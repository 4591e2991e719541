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
from schemas.events import (
    DERIVED_FIELDS,
    DROP_FIELDS,
    RESTATED_FIELDS,
    CleanEvent,
    DlqRecord,
    DroppedEvent,
    RawEvent,
)
from schemas.fastcodec import (
    Marks,
    compile_decoder,
    compile_encoder,
    compile_marking_decoder,
    compile_writer,
)
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


class Splice:
    """An output record encoded from the bytes of the RawEvent it was made from.

    A CleanEvent (or DroppedEvent) repeats most RawEvent fields, in runs of
    the same order and type. Re-encoding each of them field by field was the
    largest single cost of a decision; a ``Splice`` instead copies each run's
    bytes from the raw record and encodes only the fields it is given: the
    ``derived`` ones, always, and a ``restated`` raw field when the given
    values hold it (else its raw bytes are copied too). The plan is computed
    from the two schemas, so a field added to both is copied, one added to
    the output only is derived (or takes its default).

    Derived fields whose values recur are encoded once per distinct value:
    ``repeating`` groups them (each group a tuple of consecutive fields,
    looked up by their values together in a bounded memo).

    The result is byte for byte the output encoder's, provided the raw record
    was decoded with marks (canonical input: the copied bytes are what the
    encoder writes for those values) and the fields copied were not changed
    since (a changed restated field is given).
    """

    # Memo of the encodings of a repeating group: bounded, cleared when full.
    MEMO_ENTRIES = 4_096

    def __init__(
        self,
        source: str,
        target: str,
        derived: frozenset[str],
        restated: frozenset[str] = frozenset(),
        repeating: tuple[tuple[str, ...], ...] = (),
    ) -> None:
        source_fields = registry.current(source).schema["fields"]
        out = registry.current(target).schema
        index = {f["name"]: i for i, f in enumerate(source_fields)}
        types = {f["name"]: _bare(f["type"]) for f in source_fields}
        group_of = {name: group for group in repeating for name in group}
        # ("copy", first, end): source fields [first, end) as they are;
        # ("restate", i, field): source field i, or its given value;
        # ("write", fields, group): derived fields (a repeating group, or None).
        plan: list[tuple[str, Any, Any]] = []
        for field in out["fields"]:
            name = field["name"]
            i = index.get(name)
            same = i is not None and types[name] == _bare(field["type"])
            if i is not None and same and name not in derived and name not in restated:
                if plan and plan[-1][0] == "copy" and plan[-1][2] == i:
                    plan[-1] = ("copy", plan[-1][1], i + 1)
                else:
                    plan.append(("copy", i, i + 1))
            elif name in restated and same:
                plan.append(("restate", i, field))
            elif plan and plan[-1][0] == "write" and plan[-1][2] == group_of.get(name):
                plan[-1][1].append(field)
            else:
                plan.append(("write", [field], group_of.get(name)))
        names = [f["name"] for f in source_fields] + [""]  # "": the end of the record
        bounds: set[str] = set()
        for step, first, end in plan:
            if step == "copy":
                bounds.update((names[first], names[end]))
            elif step == "restate":
                bounds.update((names[first], names[first + 1]))
        self.bounds = sorted(bounds, key=lambda name: index.get(name, len(source_fields)))
        self.header = codec(target).header
        self._names = names
        self._plan = plan
        self._splice: Callable[[bytes, Marks, Mapping[str, Any]], bytes] | None = None

    def bind(self, marked: tuple[str, ...]) -> None:
        """Generate the splice for a raw decoder that marks fields ``marked`` (in order)."""
        position = {name: i for i, name in enumerate(marked)}
        position[""] = len(marked)  # the marks end with the record's end
        names = self._names
        namespace: dict[str, Any] = {"HEADER": self.header}
        lines = ["def splice(buf, m, values):", "    parts = [HEADER]", "    out = parts.append"]
        for n, (step, first, end) in enumerate(self._plan):
            if step == "copy":
                a, b = position[names[first]], position[names[end]]
                lines.append(f"    out(buf[m[{a}]:m[{b}]])")
                continue
            fields = [end] if step == "restate" else first
            writer = f"w{n}"
            namespace[writer] = compile_writer(
                {"type": "record", "name": f"Splice{n}", "fields": fields}
            )
            if step == "restate":
                a, b = position[names[first]], position[names[first + 1]]
                lines += [
                    f"    if {end['name']!r} in values:",
                    f"        {writer}(values, out)",
                    "    else:",
                    f"        out(buf[m[{a}]:m[{b}]])",
                ]
            elif end is None:
                lines.append(f"    {writer}(values, out)")
            else:
                memo = f"memo{n}"
                namespace[memo] = {}
                key = ", ".join(
                    f"tuple(values[{f['name']!r}])"
                    if isinstance(f["type"], dict) and f["type"]["type"] == "array"
                    else f"values[{f['name']!r}]"
                    for f in fields
                )
                lines += [
                    f"    key = ({key},)",
                    f"    piece = {memo}.get(key)",
                    "    if piece is None:",
                    "        pieces = []",
                    f"        {writer}(values, pieces.append)",
                    '        piece = b"".join(pieces)',
                    f"        if len({memo}) >= {self.MEMO_ENTRIES}:",
                    f"            {memo}.clear()",
                    f"        {memo}[key] = piece",
                    "    out(piece)",
                ]
        lines.append('    return b"".join(parts)')
        exec(compile("\n".join(lines), f"<avro splice {self.header.hex()}>", "exec"), namespace)
        self._splice = namespace["splice"]

    def __call__(self, value: bytes, marks: Marks, given: Mapping[str, Any]) -> bytes:
        """The output's single-object encoding: ``value``'s runs and the ``given`` fields."""
        assert self._splice is not None  # bound when the raw codec is built
        return self._splice(value, marks, given)


def _raw_fields() -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = registry.current(registry.RAW_EVENT).schema["fields"]
    return fields


# Derived fields whose values recur from event to event, in groups of
# consecutive fields: the name, a parsed user agent with the checks passed, the
# decision's millisecond, the input topic and partition, a drop's reason and
# stage. Their encodings are looked up, not redone. Compared by value, so they
# must hold their schema's Python types (never True for 1).
REPEATING_FIELDS = (
    ("normalised_name",),
    ("browser", "browser_version", "os", "os_version", "device", "checks"),
    ("decided_at",),
    ("source_topic", "source_partition"),
    ("reason", "stage"),
)


@cache
def splices() -> dict[str, Splice]:
    """The CleanEvent and DroppedEvent splices, bound to ``raw_marks``."""
    derived = frozenset(DERIVED_FIELDS)
    restated = frozenset(RESTATED_FIELDS)
    out = {
        registry.CLEAN_EVENT: Splice(
            registry.RAW_EVENT, registry.CLEAN_EVENT, derived, restated, REPEATING_FIELDS
        ),
        registry.DROPPED_EVENT: Splice(
            registry.RAW_EVENT,
            registry.DROPPED_EVENT,
            derived | set(DROP_FIELDS),
            restated,
            REPEATING_FIELDS,
        ),
    }
    marked = _marked_fields(out.values())
    for s in out.values():
        s.bind(marked)
    return out


def _marked_fields(all_splices: Any) -> tuple[str, ...]:
    order = {f["name"]: i for i, f in enumerate(_raw_fields())}
    wanted = {name for s in all_splices for name in s.bounds if name}
    return tuple(sorted(wanted, key=order.__getitem__))


@cache
def _raw_marking_decoder() -> Callable[[bytes, int], tuple[dict[str, Any], int, Marks | None]]:
    current = registry.current(registry.RAW_EVENT)
    return compile_marking_decoder(current.schema, _marked_fields(splices().values()))


def decode_raw_marked(value: bytes) -> tuple[RawEvent, Marks | None]:
    """A RawEvent from Avro or JSON, and its marks for ``encode_clean_spliced`` and
    ``encode_dropped_spliced``, or None when its bytes cannot be spliced (JSON,
    an older writer schema, or Avro not in the encoder's canonical form)."""
    if value[:2] == MAGIC and value[2:HEADER_SIZE] == _raw_fingerprint():
        record, end, marks = _raw_marking_decoder()(value, HEADER_SIZE)
        if end != len(value):
            raise MalformedAvroError(
                f"RawEvent: {len(value) - end} trailing bytes after the record"
            )
        return cast(RawEvent, record), marks
    return decode_raw(value), None


@cache
def _raw_fingerprint() -> bytes:
    return registry.current(registry.RAW_EVENT).fingerprint


def encode_clean_spliced(raw_value: bytes, marks: Marks, given: Mapping[str, Any]) -> bytes:
    """CleanEvent bytes from the raw record's bytes (``decode_raw_marked``) and the
    fields the stream gives: every one of ``DERIVED_FIELDS``, and those of
    ``RESTATED_FIELDS`` whose value differs from the decoded one (giving one
    that does not differ is allowed). The same bytes as ``encode_clean`` of the
    ``clean_event`` built from the decoded record with those fields."""
    return splices()[registry.CLEAN_EVENT](raw_value, marks, given)


def encode_dropped_spliced(raw_value: bytes, marks: Marks, given: Mapping[str, Any]) -> bytes:
    """DroppedEvent bytes like ``encode_clean_spliced``, ``given`` with ``DROP_FIELDS`` too."""
    return splices()[registry.DROPPED_EVENT](raw_value, marks, given)


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
    "decode_raw_marked",
    "encode_clean",
    "encode_clean_spliced",
    "encode_dlq",
    "encode_dropped",
    "encode_dropped_spliced",
    "encode_raw",
    "to_json_bytes",
]
