"""schemas.columns: batches decoded into columns give exactly what the one-record codec gives.

(Tests of schemas/columns.py live with the sink, its one user.)
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import registry
from schemas.codecs import codec
from schemas.columns import (
    MAX_ITEMS,
    ColumnDecoder,
    StringColumn,
    StringListColumn,
    StringMapColumn,
    decoder,
)
from schemas.errors import DecodeError
from schemas.fastcodec import long_bytes

NAMES = (registry.CLEAN_EVENT, registry.DROPPED_EVENT)
# Short text most of the time, now and then long enough for multi-byte lengths
# (over 63 bytes: two varint bytes in Avro; over 127: two in the layout).
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(max_size=12).map(lambda s: s * 20),
    st.just("ü" * 70),
    st.just("x" * 20_000),
)
LONG = st.one_of(st.integers(0, 200), st.integers(-(2**63), 2**63 - 1), st.just(1_764_288_000_000))


def strategy_for(avro_type: Any) -> st.SearchStrategy[Any]:
    if isinstance(avro_type, list):
        return st.one_of([strategy_for(t) for t in avro_type])
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "map":
            return st.dictionaries(TEXT, strategy_for(avro_type["values"]), max_size=4)
        if kind == "array":
            return st.lists(strategy_for(avro_type["items"]), max_size=4)
        return strategy_for(kind)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": LONG,
        "string": TEXT,
    }[avro_type]


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    schema = registry.current(name).schema
    return st.fixed_dictionaries({f["name"]: strategy_for(f["type"]) for f in schema["fields"]})


def expected(name: str, value: bytes) -> dict[str, Any] | None:
    """What the one-record codec reads, or None when it refuses the value."""
    try:
        return codec(name).decode_avro(value)
    except DecodeError:
        return None


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def laid_out(batch: Any, column: StringColumn) -> bytes:
    """A column's strings as the layout should hold them: each after its LEB128 length."""
    data = batch.data
    return b"".join(
        leb128(n) + data[s : s + n]
        for s, n in zip(column.start.tolist(), column.length.tolist(), strict=True)
    )


def string_columns(batch: Any) -> list[StringColumn]:
    out = []
    for column in batch.columns.values():
        inner = getattr(column, "inner", column)
        if isinstance(inner, StringColumn):
            out.append(inner)
        elif isinstance(inner, StringListColumn):
            out.append(inner.items)
        elif isinstance(inner, StringMapColumn):
            out += [inner.keys, inner.values]
    return out


def _columnar(name: str, record: dict[str, Any]) -> bool:
    """Whether the batch reader takes a record the codec reads (else it flags it)."""
    for field in registry.current(name).schema["fields"]:
        value = record[field["name"]]
        if field["type"] == "int" and not -(2**31) <= value < 2**31:
            return False
        if isinstance(value, dict | list) and len(value) > MAX_ITEMS:
            return False
    return True


def numpy_decoder(name: str) -> ColumnDecoder:
    """The numpy passes, which the compiled decoder replaces (and which stay its fallback)."""
    current = registry.current(name)
    return ColumnDecoder(current.schema, b"\xc3\x01" + current.fingerprint, compiled=False)


def check(name: str, values: list[bytes]) -> Any:
    """Decode ``values`` as a batch, compiled and with numpy passes; every row of both
    agrees with the one-record codec. Returns the compiled decoder's batch."""
    assert decoder(name).compiled
    for other in (numpy_decoder(name), decoder(name)):
        batch = _check(other, name, values)
    return batch


def _check(columns: ColumnDecoder, name: str, values: list[bytes]) -> Any:
    batch = columns.decode(values)
    assert batch.rows == len(values)
    for row, value in enumerate(values):
        one = expected(name, value)
        if one is None:
            assert batch.bad[row], f"row {row} should be bad"
            continue
        if not _columnar(name, one):
            assert batch.bad[row]
            continue
        assert not batch.bad[row], f"row {row} should decode: {one}"
        assert batch.record(row) == one
    good = batch.select(~batch.bad)
    for column in string_columns(good):
        assert bytes(column.data) == laid_out(good, column)
    return batch


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_row_is_what_the_codec_reads(name: str, data: Any) -> None:
    batch = data.draw(st.lists(records(name), min_size=1, max_size=12))
    check(name, [codec(name).encode(r) for r in batch])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_damaged_values_are_flagged_and_the_others_decode(name: str, data: Any) -> None:
    values = [codec(name).encode(r) for r in data.draw(st.lists(records(name), min_size=2))]
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for i in rng.sample(range(len(values)), k=max(1, len(values) // 2)):
        value = bytearray(values[i])
        how = rng.choice(("cut", "flip", "extra", "header"))
        if how == "cut":
            value = value[: rng.randrange(len(value))]
        elif how == "flip":
            value[rng.randrange(10, len(value))] = rng.randrange(256)
        elif how == "extra":
            value += b"\x00"
        else:
            value[rng.randrange(10)] ^= 0xFF
        values[i] = bytes(value)
    check(name, values)


def test_strings_that_are_not_utf8_flag_their_record_only() -> None:
    name = registry.CLEAN_EVENT
    good = codec(name).encode(_event(user_agent="Mozilla", properties={"k": "v"}))
    bad_ua = good.replace(b"Mozilla", b"Mo\xffilla")
    bad_key = good.replace(b"\x02k\x02v", b"\x02\xc3\x02v")
    split = good.replace(b"\x02k\x02v", b"\x02\xc3\x02\xa9")  # a character cut in two
    batch = check(name, [good, bad_ua, good, bad_key, split, good])
    assert batch.bad.tolist() == [False, True, False, True, True, False]


def test_long_varints_large_counts_and_negative_blocks() -> None:
    name = registry.CLEAN_EVENT
    big = _event(source_offset=2**63 - 1, engagement_time_ms=-(2**63))
    many = _event(properties={str(i): "v" for i in range(MAX_ITEMS + 1)})
    values = [codec(name).encode(big), codec(name).encode(many)]
    # An array written in a negative block (count, then byte size), as Avro allows.
    plain = codec(name).encode(_event(checks=["a", "bc"]))
    items = b"\x02a\x04bc"
    negative = plain.replace(
        b"\x04" + items + b"\x00", long_bytes(-2) + long_bytes(len(items)) + items + b"\x00"
    )
    assert negative != plain
    batch = check(name, [*values, negative])
    assert batch.bad.tolist() == [False, True, False]  # too many items: one by one
    assert batch.record(2)["checks"] == ["a", "bc"]


def test_select_keeps_rows_and_lays_their_strings_out_again() -> None:
    name = registry.CLEAN_EVENT
    events = [_event(user_id=f"u{i}", properties={"i": str(i)} if i % 2 else {}) for i in range(6)]
    batch = decoder(name).decode([codec(name).encode(e) for e in events])
    keep = np.array([True, False, True, True, False, True])
    picked = batch.select(keep)
    assert picked.rows == 4
    assert [picked.record(r)["user_id"] for r in range(4)] == ["u0", "u2", "u3", "u5"]
    for column in string_columns(picked):
        assert bytes(column.data) == laid_out(picked, column)


def test_equals_compares_whole_strings() -> None:
    name = registry.CLEAN_EVENT
    kinds = ["public", "server", "publi", "public!", "", "duplicate_idempotency_key"]
    batch = decoder(name).decode([codec(name).encode(_event(credential=k)) for k in kinds])
    credential = batch.columns["credential"]
    assert isinstance(credential, StringColumn)
    assert batch.equals(credential, b"public").tolist() == [k == "public" for k in kinds]
    long = b"duplicate_idempotency_key"
    assert batch.equals(credential, long).tolist() == [k == long.decode() for k in kinds]
    assert batch.equals(credential, b"").tolist() == [k == "" for k in kinds]


def test_foreign_and_short_values_are_bad() -> None:
    name = registry.CLEAN_EVENT
    good = codec(name).encode(_event())
    old = b"\xc3\x01" + b"\x00" * 8 + good[10:]  # another fingerprint
    for columns in (decoder(name), numpy_decoder(name)):
        batch = columns.decode([b"", b"\xc3", b'{"json": 1}', old, good])
        assert batch.bad.tolist() == [True, True, True, True, False]


def test_unsupported_schemas_fail_when_the_decoder_is_built() -> None:
    record = {"type": "record", "name": "R", "fields": [{"name": "f", "type": "float"}]}
    with pytest.raises(NotImplementedError):
        ColumnDecoder(record)
    union = {"type": "record", "name": "R", "fields": [{"name": "u", "type": ["string", "long"]}]}
    with pytest.raises(NotImplementedError):
        ColumnDecoder(union)


def test_a_schema_the_compiled_loop_does_not_read_takes_the_numpy_passes() -> None:
    optional_list = {"type": ["null", {"type": "array", "items": "string"}]}
    record = {"type": "record", "name": "R", "fields": [{"name": "l", **optional_list}]}
    columns = ColumnDecoder(record)
    assert not columns.compiled
    batch = columns.decode([b"\x02\x02\x02a\x00"])  # one list of one item, "a"
    assert batch.record(0) == {"l": ["a"]}
    assert ColumnDecoder(registry.current(registry.CLEAN_EVENT).schema).compiled


def _event(**fields: Any) -> dict[str, Any]:
    from schemas.events import clean_event, new_raw_event

    raw = new_raw_event(
        project="demo", name="signup", timestamp=1_764_288_000_000, received_at=1_764_288_000_000
    )
    event = dict(clean_event(raw, normalised_name="signup", user_key="u", decided_at=1))
    event.update(fields)
    return event
