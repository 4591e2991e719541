"""Schema files, fingerprints, and the rule that every current schema is a released one."""

from __future__ import annotations

import json

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint

from schemas import registry
from schemas.events import CleanEvent, DlqRecord, DroppedEvent, RawEvent


def test_crc64_avro_matches_the_spec_test_vectors() -> None:
    # From the Avro specification's test suite (schema-tests fingerprints).
    assert registry.crc64_avro(b'"null"') == 7195948357588979594
    assert registry.crc64_avro(b'"int"') == 8247732601305521295


@pytest.mark.parametrize("name", registry.SCHEMA_NAMES)
def test_fingerprint_agrees_with_fastavro(name: str) -> None:
    current = registry.current(name)
    canonical = registry.canonical_form(current.schema)
    assert current.fingerprint.hex() == fastavro_fingerprint(canonical, "CRC-64-AVRO")


@pytest.mark.parametrize("name", registry.SCHEMA_NAMES)
def test_current_schema_is_the_newest_released_version(name: str) -> None:
    """Changing schemas/avro/X.avsc needs a new schemas/history/X/vN.avsc copy of it."""
    versions = registry.history(name)
    assert versions, f"no released version of {name} in schemas/history/{name}/"
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    assert versions[-1].fingerprint == registry.current(name).fingerprint, (
        f"schemas/avro/{name}.avsc differs from its newest released version: copy it to "
        f"schemas/history/{name}/v{len(versions) + 1}.avsc"
    )


@pytest.mark.parametrize("name", registry.SCHEMA_NAMES)
def test_released_versions_are_never_edited(name: str) -> None:
    """Two released versions must differ; an edited vN would strand data written with it."""
    fingerprints = [v.fingerprint for v in registry.history(name)]
    assert len(set(fingerprints)) == len(fingerprints)


def test_schemas_share_one_namespace_and_document_every_field() -> None:
    for name in registry.SCHEMA_NAMES:
        schema = registry.current(name).schema
        assert schema["namespace"] == "io.eventsieve"
        undocumented = [f["name"] for f in schema["fields"] if not f.get("doc")]
        assert not undocumented, f"{name}: fields without doc: {undocumented}"


def test_optional_fields_have_defaults_so_readers_can_evolve() -> None:
    for name in registry.SCHEMA_NAMES:
        for field in registry.current(name).schema["fields"]:
            if isinstance(field["type"], list) and "null" in field["type"]:
                where = f"{name}.{field['name']}: optional fields are ['null', T], default null"
                assert field["type"][0] == "null", where
                assert field.get("default", 0) is None, where


@pytest.mark.parametrize(
    ("name", "model"),
    [
        (registry.RAW_EVENT, RawEvent),
        (registry.CLEAN_EVENT, CleanEvent),
        (registry.DROPPED_EVENT, DroppedEvent),
        (registry.DLQ_RECORD, DlqRecord),
    ],
)
def test_python_model_has_exactly_the_schema_fields(name: str, model: type) -> None:
    fields = {f["name"] for f in registry.current(name).schema["fields"]}
    assert set(model.__annotations__) | _inherited(model) == fields


def _inherited(model: type) -> set[str]:
    keys: set[str] = set()
    for base in model.__mro__[1:]:
        keys |= set(getattr(base, "__annotations__", {}))
    return keys


def test_clean_and_dropped_carry_every_raw_field_but_the_ip() -> None:
    raw = {f["name"]: f["type"] for f in registry.current(registry.RAW_EVENT).schema["fields"]}
    del raw["ip"]
    for name in (registry.CLEAN_EVENT, registry.DROPPED_EVENT):
        fields = {f["name"]: f["type"] for f in registry.current(name).schema["fields"]}
        assert "ip" not in fields
        for field, avro_type in raw.items():
            assert json.dumps(fields[field]) == json.dumps(avro_type), f"{name}.{field}"
