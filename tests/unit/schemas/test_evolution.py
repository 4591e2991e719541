"""Schema evolution: the current reader decodes data written with every released version.

The first test runs over the real history in schemas/history/ and fails when a
change to a current schema would strand data written by an older publisher
(a new field without a default, a changed type that Avro cannot promote, ...).
The others prove the mechanism on made-up versions, so it is tested before
the first real v2 exists.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import registry
from schemas.codecs import MAGIC, Codec, projection
from schemas.errors import IncompatibleSchemaError


def single_object(version: registry.SchemaVersion, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(MAGIC + version.fingerprint)
    fastavro.schemaless_writer(out, version.parsed, record)
    return out.getvalue()


def expected_read(
    writer: registry.SchemaVersion, reader: registry.SchemaVersion, value: bytes
) -> dict[str, Any]:
    """What the Avro spec's resolution gives, computed by fastavro."""
    body = io.BytesIO(value[10:])
    return fastavro.schemaless_reader(body, writer.parsed, reader.parsed)


RELEASED = [(name, version) for name in registry.SCHEMA_NAMES for version in registry.history(name)]


@pytest.mark.parametrize(
    ("name", "version"), RELEASED, ids=[f"{n}-v{v.version}" for n, v in RELEASED]
)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_current_reader_decodes_every_released_writer(
    records: Any, name: str, version: registry.SchemaVersion, data: Any
) -> None:
    record = data.draw(records(version.schema))
    value = single_object(version, record)
    decoded = Codec(name).decode_avro(value)
    assert decoded == expected_read(version, registry.current(name), value)
    current_fields = [f["name"] for f in registry.current(name).schema["fields"]]
    assert list(decoded) == current_fields or set(decoded) == set(current_fields)


def _versions(old: dict[str, Any], new: dict[str, Any]) -> tuple[Any, Any]:
    return (
        registry.SchemaVersion.from_json("t", 1, old),
        registry.SchemaVersion.from_json("t", None, new),
    )


def _codec_for(monkeypatch: pytest.MonkeyPatch, old: dict[str, Any], new: dict[str, Any]) -> Codec:
    v1, cur = _versions(old, new)
    monkeypatch.setattr(registry, "current", lambda name: cur)
    monkeypatch.setattr(
        registry, "writers", lambda name: {v1.fingerprint: v1, cur.fingerprint: cur}
    )
    return Codec("t")


V1 = {
    "type": "record",
    "name": "T",
    "namespace": "io.eventsieve.test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "gone", "type": "string", "default": ""},
    ],
}


def test_added_field_with_default_and_removed_field(monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = copy.deepcopy(V1)
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "gone"]
    v2["fields"].append(
        {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}}
    )
    codec = _codec_for(monkeypatch, V1, v2)
    assert projection(V1, v2) is not None  # the fast path
    v1 = registry.SchemaVersion.from_json("t", 1, V1)
    value = single_object(v1, {"id": "a", "count": 3, "note": None, "gone": "x"})
    decoded = codec.decode_avro(value)
    assert decoded == {"id": "a", "count": 3, "note": None, "tags": {}}
    decoded["tags"]["k"] = "v"  # defaults are fresh per record
    assert codec.decode_avro(value)["tags"] == {}


def test_promoted_type_goes_through_full_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = copy.deepcopy(V1)
    v2["fields"][1]["type"] = "long"  # int -> long is an Avro promotion
    codec = _codec_for(monkeypatch, V1, v2)
    assert projection(V1, v2) is None
    v1 = registry.SchemaVersion.from_json("t", 1, V1)
    value = single_object(v1, {"id": "a", "count": 2**31 - 1, "note": "n", "gone": ""})
    assert codec.decode_avro(value) == {"id": "a", "count": 2**31 - 1, "note": "n", "gone": ""}


def test_breaking_change_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new required field without a default cannot read old data: the decode says so."""
    v2 = copy.deepcopy(V1)
    v2["fields"].append({"name": "required_now", "type": "string"})
    codec = _codec_for(monkeypatch, V1, v2)
    v1 = registry.SchemaVersion.from_json("t", 1, V1)
    value = single_object(v1, {"id": "a", "count": 1, "note": None, "gone": ""})
    with pytest.raises(IncompatibleSchemaError):
        codec.decode_avro(value)


def test_doc_only_change_keeps_the_fingerprint() -> None:
    v2 = copy.deepcopy(V1)
    v2["fields"][0]["doc"] = "documented later"
    old, new = _versions(V1, v2)
    assert old.fingerprint == new.fingerprint
