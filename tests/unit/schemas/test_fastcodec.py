"""The generated codec writes exactly fastavro's bytes and reads them back exactly."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import registry
from schemas.errors import EncodeError, MalformedAvroError, TruncatedError
from schemas.fastcodec import compile_decoder, compile_encoder, long_bytes, read_long

ALL_TYPES: dict[str, Any] = {
    "type": "record",
    "name": "AllTypes",
    "namespace": "io.eventsieve.test",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {"name": "u", "type": ["null", "string", "long", "boolean"]},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "a", "type": {"type": "array", "items": "string"}},
        {
            "name": "r",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Inner",
                    "fields": [{"name": "k", "type": "string"}, {"name": "v", "type": "bytes"}],
                },
            },
        },
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    parsed = fastavro.parse_schema(registry.strip_logical_types(schema))
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


SCHEMAS = [ALL_TYPES] + [registry.current(n).schema for n in registry.SCHEMA_NAMES]
CODECS = {
    s["name"]: (
        fastavro.parse_schema(registry.strip_logical_types(s)),
        compile_encoder(s),
        compile_decoder(s),
    )
    for s in SCHEMAS
}


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s["name"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_same_bytes_as_fastavro_and_back(records: Any, schema: dict[str, Any], data: Any) -> None:
    record = data.draw(records(schema))
    parsed, encode, decode = CODECS[schema["name"]]
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    expected = out.getvalue()
    assert encode(record) == expected
    decoded, end = decode(expected, 0)
    assert end == len(expected)
    assert decoded == record


@given(st.integers(-(2**63), 2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    data = long_bytes(value)
    assert read_long(data, 0) == (value, len(data))


def test_varint_out_of_range_is_an_encode_error() -> None:
    with pytest.raises(EncodeError):
        long_bytes(2**63)


def test_decoder_reads_from_an_offset_and_reports_the_end() -> None:
    schema = registry.current(registry.DLQ_RECORD).schema
    record = {
        "key": b"k",
        "value": None,
        "headers": [{"key": "h", "value": b"\x00"}],
        "topic": "t",
        "partition": 1,
        "offset": 2,
        "record_timestamp": 3,
        "error_type": "x",
        "error": "y",
        "stage": "decode",
        "failed_at": 4,
    }
    body = compile_encoder(schema)(record)
    assert compile_decoder(schema)(b"xyz" + body + b"tail", 3) == (record, 3 + len(body))


def test_truncated_and_malformed_input() -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]}
    decode = compile_decoder(schema)
    with pytest.raises(TruncatedError):
        decode(b"\x0aab", 0)  # says 5 bytes, has 2
    with pytest.raises(TruncatedError):
        decode(b"", 0)
    with pytest.raises(MalformedAvroError, match="negative length"):
        decode(b"\x01", 0)
    with pytest.raises(MalformedAvroError, match="UTF-8"):
        decode(b"\x02\xff", 0)
    union = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null", "long"]}]}
    with pytest.raises(MalformedAvroError, match="union index"):
        compile_decoder(union)(b"\x06", 0)
    nulls = {
        "type": "record",
        "name": "N",
        "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}],
    }
    with pytest.raises(MalformedAvroError, match="block of"):
        compile_decoder(nulls)(long_bytes(2**62), 0)  # would loop 2**62 times
    boolean = {"type": "record", "name": "B", "fields": [{"name": "b", "type": "boolean"}]}
    with pytest.raises(MalformedAvroError, match="boolean"):
        compile_decoder(boolean)(b"\x07", 0)


def test_encode_errors_name_the_field() -> None:
    encode = compile_encoder(ALL_TYPES)
    with pytest.raises(EncodeError, match="missing required field 'n'"):
        encode({})
    good = {
        "n": None,
        "b": True,
        "i": 1,
        "l": 2,
        "f": 1.5,
        "d": 2.5,
        "s": "s",
        "y": b"y",
        "u": None,
        "m": {},
        "a": [],
        "r": [],
        "t": 5,
    }
    assert compile_decoder(ALL_TYPES)(encode(good), 0)[0] == good
    for field, bad in [("b", 1), ("s", 5), ("u", 1.5), ("l", "7"), ("n", 0), ("a", [1])]:
        with pytest.raises(EncodeError, match=f"field '{field}'"):
            encode({**good, field: bad})


def test_absent_fields_with_defaults_are_written_with_the_default() -> None:
    schema = registry.current(registry.RAW_EVENT).schema
    minimal = {"event_id": "e", "project": "p", "name": "n", "timestamp": 1, "received_at": 2}
    full = {f["name"]: f.get("default") for f in schema["fields"]} | minimal
    assert compile_encoder(schema)(minimal) == fastavro_bytes(schema, full)


def test_unsupported_types_fail_at_compile_time() -> None:
    schema = {
        "type": "record",
        "name": "E",
        "fields": [{"name": "e", "type": {"type": "enum", "name": "X", "symbols": ["A"]}}],
    }
    with pytest.raises(NotImplementedError):
        compile_decoder(schema)
    with pytest.raises(NotImplementedError):
        compile_encoder(schema)


@pytest.mark.parametrize("size", [63, 64, 100, 8191, 8192, 70_000])
def test_long_strings_and_their_lengths_of_several_bytes(size: int) -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]}
    record = {"s": "é" * (size // 2) + "x" * (size % 2)}
    data = fastavro_bytes(schema, record)
    assert compile_encoder(schema)(record) == data
    assert compile_decoder(schema)(data, 0) == (record, len(data))
    with pytest.raises(TruncatedError):
        compile_decoder(schema)(data[:1], 0)  # inside the length


def test_lengths_and_longs_not_in_the_shortest_form_still_decode() -> None:
    strings = {"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]}
    assert compile_decoder(strings)(b"\x86\x00abc", 0) == ({"s": "abc"}, 5)  # 3 in two bytes
    longs = {"type": "record", "name": "L", "fields": [{"name": "l", "type": "long"}]}
    assert compile_decoder(longs)(b"\x84\x80\x00", 0) == ({"l": 2}, 3)
    ten = long_bytes(-(2**63))
    assert len(ten) == 10
    assert compile_decoder(longs)(ten, 0) == ({"l": -(2**63)}, 10)
    with pytest.raises(MalformedAvroError, match="longer than 10"):
        compile_decoder(longs)(b"\xff" * 10 + b"\x01", 0)
    with pytest.raises(TruncatedError):
        compile_decoder(longs)(b"\xff\xff", 0)
