"""The schema files: current versions, every released version, and their fingerprints.

``schemas/avro/<name>.avsc`` is the current (reader) schema of each record
type; ``schemas/history/<name>/v<N>.avsc`` keeps every released version, the
newest equal to the current one (a unit test enforces it). A writer schema is
identified by the CRC-64-AVRO fingerprint of its Parsing Canonical Form, as
the Avro spec's single-object encoding requires.

Schemas are parsed for fastavro with ``logicalType`` annotations removed, so
timestamp-millis fields read and write as plain ``int`` milliseconds (no
``datetime`` round trip in the hot path). The bytes are identical, and the
canonical form (hence the fingerprint) ignores logical types anyway.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).parent
AVRO_DIR = SCHEMA_DIR / "avro"
HISTORY_DIR = SCHEMA_DIR / "history"

RAW_EVENT = "raw_event"
CLEAN_EVENT = "clean_event"
DROPPED_EVENT = "dropped_event"
DLQ_RECORD = "dlq_record"
SCHEMA_NAMES = (RAW_EVENT, CLEAN_EVENT, DROPPED_EVENT, DLQ_RECORD)

_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")

# CRC-64-AVRO (Rabin fingerprint), exactly as in the Avro specification.
_EMPTY64 = 0xC15D213AA4D7A795


def _fp_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return tuple(table)


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO fingerprint of ``data`` (the spec's reference algorithm)."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: dict[str, Any]) -> str:
    """The Avro Parsing Canonical Form of a schema given as JSON data."""
    return to_parsing_canonical_form(schema)


def fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint used in single-object headers."""
    return crc64_avro(canonical_form(schema).encode()).to_bytes(8, "little")


def strip_logical_types(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType`` keys (see the module docstring)."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(v) for v in schema]
    return schema


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one record type: its JSON text, parsed form and fingerprint."""

    name: str
    version: int | None  # None: the current file in schemas/avro/
    schema: dict[str, Any]
    parsed: Any = field(repr=False)
    fingerprint: bytes

    @classmethod
    def from_json(cls, name: str, version: int | None, schema: dict[str, Any]) -> SchemaVersion:
        parsed = fastavro.parse_schema(strip_logical_types(schema))
        return cls(name, version, schema, parsed, fingerprint(schema))


def load_schema_file(path: Path) -> dict[str, Any]:
    """The JSON of one .avsc file."""
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@cache
def current(name: str) -> SchemaVersion:
    """The current (reader) schema of a record type, e.g. ``current("raw_event")``."""
    return SchemaVersion.from_json(name, None, load_schema_file(AVRO_DIR / f"{name}.avsc"))


@cache
def history(name: str) -> tuple[SchemaVersion, ...]:
    """Every released version of a record type, oldest first."""
    versions = []
    for path in (HISTORY_DIR / name).iterdir():
        match = _VERSION_FILE.match(path.name)
        if match:
            versions.append(
                SchemaVersion.from_json(name, int(match.group(1)), load_schema_file(path))
            )
    return tuple(sorted(versions, key=lambda v: v.version or 0))


@cache
def writers(name: str) -> dict[bytes, SchemaVersion]:
    """Writer schemas a decoder of ``name`` accepts, by fingerprint (history + current).

    Built once; callers must not modify the returned mapping.
    """
    known = {v.fingerprint: v for v in history(name)}
    cur = current(name)
    known[cur.fingerprint] = cur
    return known
