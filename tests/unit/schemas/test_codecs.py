"""Round trips in both value formats, and a typed error for every way a value can be bad."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas import registry
from schemas.codecs import HEADER_SIZE, MAGIC, codec


def raw(**fields: Any) -> schemas.RawEvent:
    base: dict[str, Any] = {
        "project": "demo",
        "name": "Order Placed",
        "event_id": "e-1",
        "timestamp": 1_795_824_000_000,
        "received_at": 1_795_824_000_500,
    }
    return schemas.new_raw_event(**(base | fields))


DLQ: schemas.DlqRecord = {
    "key": b"demo:u1",
    "value": b"\xc3\x01garbage",
    "headers": [{"key": "traceparent", "value": b"00-ab"}, {"key": "empty", "value": None}],
    "topic": "events.raw",
    "partition": 2,
    "offset": 41,
    "record_timestamp": 1_795_824_000_000,
    "error_type": "truncated",
    "error": "RawEvent: value ends inside the record",
    "stage": "decode",
    "failed_at": 1_795_824_000_900,
}


# --- round trips --------------------------------------------------------------------------


def test_raw_round_trip_with_every_field_set() -> None:
    event = raw(
        user_id="u1",
        email="a@example.com",
        anonymous_id="anon",
        visitor_id="v" * 32,
        display_name="Ann",
        url="https://example.com/a",
        referrer="https://ref.example/",
        domain="example.com",
        properties={"plan": "pro", "nested": '{"a":1}'},
        user_properties={"tier": "gold"},
        user_properties_once={"first_seen": "2026-01-01"},
        user_properties_unset=["old"],
        ip="2001:db8::1",
        user_agent="Mozilla/5.0",
        ip_classification="dc_ip",
        country="DE",
        context_id="ctx",
        interactive=False,
        scroll_depth=80,
        engagement_time_ms=12_000,
        hash_mode=True,
        sdk_name="sdk",
        sdk_version="1.0",
        idempotency_key="idem",
        order_id="ord-1",
        source=schemas.Source.VERO,
        kind=schemas.EventKind.IDENTIFY,
    )
    value = schemas.encode_raw(event)
    assert value[:HEADER_SIZE] == MAGIC + registry.current(registry.RAW_EVENT).fingerprint
    assert schemas.decode_raw(value) == event


def test_raw_avro_round_trip_of_random_events(records: Any) -> None:
    @settings(max_examples=50, deadline=None)
    @given(records(registry.current(registry.RAW_EVENT).schema))
    def check(event: dict[str, Any]) -> None:
        assert schemas.decode_raw(schemas.encode_raw(event)) == event

    check()


def test_clean_and_dropped_round_trip() -> None:
    event = raw(user_id="u1", ip="1.2.3.4", properties={"a": "1"})
    clean = schemas.clean_event(
        event,
        normalised_name="order_placed",
        user_key="u1",
        fingerprint=schemas.event_fingerprint(event),
        decided_at=7,
        checks=["decode", "validate"],
        browser="Firefox",
        source_topic="events.raw",
        source_partition=1,
        source_offset=9,
    )
    assert "ip" not in clean
    assert schemas.decode_clean(schemas.encode_clean(clean)) == clean
    dropped = schemas.dropped_event(
        event,
        reason=schemas.DropReason.DUPLICATE,
        stage=schemas.Stage.DEDUP,
        detail="same as e-0 at 12:00:01",
        decided_at=8,
    )
    assert dropped["reason"] == "duplicate"
    assert dropped["stage"] == "dedup"
    assert schemas.decode_dropped(schemas.encode_dropped(dropped)) == dropped


def test_dlq_round_trip_keeps_bytes_exactly() -> None:
    assert schemas.decode_dlq(schemas.encode_dlq(DLQ)) == DLQ


def test_decode_any_finds_the_schema_by_fingerprint() -> None:
    assert schemas.decode_any(schemas.encode_dlq(DLQ)) == ("dlq_record", DLQ)
    event = raw()
    assert schemas.decode_any(schemas.encode_raw(event)) == ("raw_event", event)
    with pytest.raises(schemas.UnknownFingerprintError):
        schemas.decode_any(MAGIC + b"\x00" * 8 + b"\x00")
    with pytest.raises(schemas.NotJsonError):
        schemas.decode_any(b'{"a": 1}')


def test_to_json_bytes_writes_bytes_as_base64() -> None:
    out = orjson.loads(schemas.to_json_bytes(DLQ))
    assert base64.b64decode(out["value"]) == DLQ["value"]
    assert out["headers"][1] == {"key": "empty", "value": None}


# --- JSON values --------------------------------------------------------------------------


def test_json_round_trip_of_an_encoded_event() -> None:
    event = raw(user_id="u1", properties={"a": "1"}, interactive=True, scroll_depth=5)
    assert schemas.decode_raw(orjson.dumps(event)) == event


def test_json_minimal_event_gets_defaults_and_fallbacks() -> None:
    decoded = schemas.decode_raw(
        b'{"project": "demo", "name": "signup"}', event_id="derived", received_at=1000
    )
    assert decoded == schemas.new_raw_event(
        project="demo", name="signup", event_id="derived", timestamp=1000, received_at=1000
    )


def test_json_values_win_over_fallbacks_and_timestamp_defaults_to_received_at() -> None:
    decoded = schemas.decode_raw(
        b'{"project":"p","name":"n","event_id":"mine","received_at":"2026-11-28T10:00:00+01:00"}',
        event_id="derived",
        received_at=5,
    )
    assert decoded["event_id"] == "mine"
    assert decoded["received_at"] == 1_795_856_400_000  # 09:00 UTC
    assert decoded["timestamp"] == decoded["received_at"]


def test_json_timestamps_as_iso_without_offset_are_utc() -> None:
    value = b'{"project":"p","name":"n","event_id":"e","timestamp":"2026-11-28T09:00:00.250",'
    decoded = schemas.decode_raw(value + b'"received_at":1795856400000}')
    assert decoded["timestamp"] == 1_795_856_400_250


def test_json_properties_become_strings_and_nulls_are_dropped() -> None:
    value = orjson.dumps(
        {
            "project": "p",
            "name": "n",
            "event_id": "e",
            "timestamp": 1,
            "received_at": 1,
            "properties": {"s": "x", "i": 10, "f": 1.5, "b": True, "o": {"k": [1, "2"]}, "z": None},
        }
    )
    assert schemas.decode_raw(value)["properties"] == {
        "s": "x",
        "i": "10",
        "f": "1.5",
        "b": "true",
        "o": '{"k":[1,"2"]}',
    }


def test_json_unknown_keys_are_ignored() -> None:
    value = b'{"project":"p","name":"n","event_id":"e","timestamp":1,"received_at":1,"new":1}'
    assert "new" not in schemas.decode_raw(value)


def test_json_of_other_record_types() -> None:
    value = orjson.dumps(DLQ, default=lambda b: base64.b64encode(b).decode())
    assert schemas.decode_dlq(value) == DLQ
    with pytest.raises(schemas.InvalidValueError, match="base64"):
        schemas.decode_dlq(value.replace(b'"ZGVtbzp1MQ=="', b'"not base64!"'))


# --- every decode error class -------------------------------------------------------------


GOOD_JSON = {"project": "p", "name": "n", "event_id": "e", "timestamp": 1, "received_at": 1}


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (b"", schemas.NotJsonError, "neither Avro"),
        (b"hello", schemas.NotJsonError, "neither Avro"),
        (b"[1, 2]", schemas.NotJsonError, "list, expected an object"),
        (b'"text"', schemas.NotJsonError, "str, expected an object"),
        (b"\xc3", schemas.TruncatedError, "shorter than the 10-byte"),
        (b"\xc3\x01\x00\x00", schemas.TruncatedError, "shorter than the 10-byte"),
        (b"\xc3\x02" + b"\x00" * 8 + b"\x00", schemas.MalformedAvroError, "magic c302"),
        (MAGIC + bytes(range(8)) + b"\x00", schemas.UnknownFingerprintError, "0001020304050607"),
    ],
)
def test_bytes_that_are_not_an_event(value: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        schemas.decode_raw(value)
    assert isinstance(info.value, schemas.DecodeError)
    assert info.value.code == error.code


def test_a_tombstone_is_a_decode_error() -> None:
    with pytest.raises(schemas.NotJsonError, match="tombstone"):
        schemas.decode_raw(None)
    with pytest.raises(schemas.NotJsonError, match="tombstone"):
        schemas.decode_dlq(None)


def test_truncated_and_trailing_avro() -> None:
    value = schemas.encode_raw(raw(user_id="u1"))
    for cut in (HEADER_SIZE, HEADER_SIZE + 3, len(value) - 1):
        with pytest.raises(schemas.TruncatedError, match="ends inside the record"):
            schemas.decode_raw(value[:cut])
    with pytest.raises(schemas.MalformedAvroError, match="2 trailing bytes"):
        schemas.decode_raw(value + b"\x00\x00")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_after_the_header_is_a_decode_error_never_a_crash(body: bytes) -> None:
    header = codec(registry.RAW_EVENT).header
    with contextlib.suppress(schemas.DecodeError):
        schemas.decode_raw(header + body)


@pytest.mark.parametrize("field", ["event_id", "project", "name", "timestamp", "received_at"])
def test_missing_required_field_names_it(field: str) -> None:
    value = {k: v for k, v in GOOD_JSON.items() if k != field}
    if field == "timestamp":
        value.pop("received_at")  # timestamp defaults to received_at
    with pytest.raises(schemas.MissingFieldError, match=f"'{field}'") as info:
        schemas.decode_raw(orjson.dumps(value))
    assert info.value.field == field


def test_null_required_field_is_missing() -> None:
    with pytest.raises(schemas.MissingFieldError, match="'project'"):
        schemas.decode_raw(orjson.dumps(GOOD_JSON | {"project": None}))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("project", 5, "string"),
        ("user_id", 123, "string"),
        ("timestamp", 1.5, "integer milliseconds or ISO-8601 string"),
        ("timestamp", True, "integer milliseconds or ISO-8601 string"),
        ("interactive", "yes", "boolean"),
        ("scroll_depth", "50", "integer"),
        ("properties", ["a"], "object"),
        ("user_properties_unset", "a", "array"),
    ],
)
def test_wrong_type_names_field_and_type(field: str, value: Any, expected: str) -> None:
    with pytest.raises(schemas.WrongTypeError, match=f"'{field}': expected {expected}") as info:
        schemas.decode_raw(orjson.dumps(GOOD_JSON | {field: value}))
    assert info.value.field == field
    assert info.value.expected == expected


def test_wrong_type_inside_an_array_names_the_element() -> None:
    with pytest.raises(schemas.WrongTypeError, match=r"'user_properties_unset\[1\]'"):
        schemas.decode_raw(orjson.dumps(GOOD_JSON | {"user_properties_unset": ["a", 2]}))
    value = orjson.dumps({**DLQ, "key": None, "value": None, "headers": [{"value": None}]})
    with pytest.raises(schemas.MissingFieldError, match=r"'headers\[0\].key'"):
        schemas.decode_dlq(value)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("timestamp", "yesterday", "not an ISO-8601 date-time"),
        ("scroll_depth", 2**40, "32-bit int"),
        ("engagement_time_ms", 2**63, "64-bit long"),
    ],
)
def test_invalid_values(field: str, value: Any, problem: str) -> None:
    with pytest.raises(schemas.InvalidValueError, match=problem):
        schemas.decode_raw(orjson.dumps(GOOD_JSON | {field: value}))


def test_encode_errors_are_eventsieve_errors() -> None:
    from eventsieve.errors import EventsieveError

    with pytest.raises(schemas.EncodeError, match="missing required field 'event_id'") as info:
        schemas.encode_raw({"project": "p"})
    assert isinstance(info.value, EventsieveError)


def test_json_and_avro_decode_every_valid_event_alike(records: Any) -> None:
    @settings(max_examples=50, deadline=None)
    @given(records(registry.current(registry.RAW_EVENT).schema))
    def check(event: dict[str, Any]) -> None:
        as_json = schemas.decode_raw(orjson.dumps(event))
        assert as_json == schemas.decode_raw(schemas.encode_raw(event)) == event

    check()


# --- outputs spliced from the raw record's bytes ---------------------------------------------


def _given(event: dict[str, Any], data: Any) -> dict[str, Any]:
    text = st.one_of(st.none(), st.text(max_size=20))
    long = st.integers(-(2**63), 2**63 - 1)
    restated = {}
    # A restated field is given when it changed (or at will); else its raw bytes are copied.
    if data.draw(st.booleans()):
        restated["timestamp"] = data.draw(long)
    if data.draw(st.booleans()):
        restated["visitor_id"] = data.draw(text)
    return restated | {
        "normalised_name": data.draw(st.text(max_size=20)),
        "user_key": data.draw(st.text(max_size=20)),
        "fingerprint": data.draw(text),
        "browser": data.draw(text),
        "browser_version": data.draw(text),
        "os": data.draw(text),
        "os_version": data.draw(text),
        "device": data.draw(text),
        "checks": data.draw(st.lists(st.text(max_size=8), max_size=4)),
        "decided_at": data.draw(long),
        "source_topic": data.draw(st.text(max_size=20)),
        "source_partition": data.draw(st.integers(-(2**31), 2**31 - 1)),
        "source_offset": data.draw(long),
    }


def test_spliced_outputs_equal_the_encoders_bytes(records: Any) -> None:
    """For any raw record and derived values, twice (the memo of repeating fields)."""
    from schemas.codecs import decode_raw_marked, encode_clean_spliced, encode_dropped_spliced

    @settings(max_examples=60, deadline=None)
    @given(records(registry.current(registry.RAW_EVENT).schema), st.data())
    def check(event: dict[str, Any], data: Any) -> None:
        value = schemas.encode_raw(event)
        decoded, marks = decode_raw_marked(value)
        assert decoded == event
        assert marks is not None
        given_fields = _given(event, data)
        for _ in range(2):
            clean = schemas.clean_event(decoded, **given_fields)
            assert encode_clean_spliced(value, marks, given_fields) == schemas.encode_clean(clean)
            drop = {"reason": "bot", "stage": "bot", "detail": data.draw(st.text(max_size=9))}
            dropped = schemas.dropped_event(decoded, **given_fields, **drop)
            spliced = encode_dropped_spliced(value, marks, given_fields | drop)
            assert spliced == schemas.encode_dropped(dropped)

    check()


@pytest.mark.parametrize(
    ("odd", "why"),
    [
        (lambda v: v.replace(b"\x02\x0aclick", b"\x02\x8a\x00click"), "a length in two bytes"),
        (lambda v: v.replace(b"\x02\x02a\x021", b"\x01\x06\x02a\x021"), "a sized block"),
        (
            lambda v: v.replace(b"\x02\x02a\x021\x00", b"\x04\x02a\x021\x02a\x022\x00"),
            "a key twice",
        ),
    ],
)
def test_raw_records_not_in_the_encoders_form_are_not_spliced(odd: Any, why: str) -> None:
    from schemas.codecs import decode_raw_marked

    event = raw(user_id="click", properties={"a": "1"})
    value = schemas.encode_raw(event)
    assert decode_raw_marked(value)[1] is not None
    changed = odd(value)
    assert changed != value, why
    assert decode_raw_marked(changed)[1] is None, why
