"""The whole decision path for single records, with in-memory state and no Kafka."""

import orjson
import pytest

from eventsieve.config import ProjectSettings, Settings, ShieldSettings
from schemas.canonical import topic_key
from schemas.codecs import (
    decode_clean,
    decode_dlq,
    decode_dropped,
    decode_raw,
    decode_raw_marked,
    encode_raw,
)
from schemas.events import copy_event_id, new_raw_event
from sinks.rows import Decision, decision_version
from streams.partitioning import partition_for
from streams.pipeline import Pipeline, Pipelines, build_pipelines
from streams.processor import Processor, Record, Sink
from streams.rules.orders import RECORD_LIMIT
from streams.state import InMemoryState
from streams.useragents import UserAgents

T0 = 1_767_225_600_000
PARTITIONS = 3
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture
def settings():
    return Settings(
        projects=(ProjectSettings(id="demo", shields=ShieldSettings(country_blocklist=("XX",))),),
        topics={"partitions": PARTITIONS},
    )


@pytest.fixture
def processor(settings):
    return Processor(settings, clock=lambda: 42)


def record(value: bytes | None, *, key: str | None = None, partition=None, offset=0):
    if partition is None:
        partition = partition_for(key.encode(), PARTITIONS) if key else 0
    return Record("events.raw", partition, offset, key.encode() if key else None, value, T0)


def raw(**fields):
    fields.setdefault("user_id", "u1")
    fields.setdefault("timestamp", T0)
    fields.setdefault("received_at", T0)
    return new_raw_event(
        project=fields.pop("project", "demo"), name=fields.pop("name", "x"), **fields
    )


def feed(processor, state, event, **kw):
    key = topic_key(event["project"], event["user_id"] or "")
    return processor.on_raw(record(encode_raw(event), key=key, **kw), state)


def test_clean_event(processor):
    out = feed(processor, InMemoryState(), raw(user_agent=CHROME, ip="192.0.2.1"))
    assert out.sink is Sink.CLEAN
    [o] = out.outputs
    assert o.key == b"demo:u1"
    clean = decode_clean(o.value)
    assert clean["user_key"] == "u1"
    assert clean["browser"] == "Chrome"
    assert clean["decided_at"] == 42
    assert "ip" not in clean
    assert clean["checks"][:2] == ["bot", "spam_referrer"]


@pytest.mark.parametrize("value", [b"\xc3\x01garbage", b"not json", b"{}", b'{"project": 1}', None])
def test_poison_records_go_to_the_dlq(processor, value):
    out = processor.on_raw(record(value, key="demo:u1", offset=7), InMemoryState())
    assert out.sink is Sink.DLQ
    dlq = decode_dlq(out.outputs[0].value)
    assert dlq["value"] == value
    assert dlq["offset"] == 7
    assert dlq["stage"] == "decode"
    assert dlq["error"]


def test_unknown_project_goes_to_the_dlq_as_invalid(processor):
    out = feed(processor, InMemoryState(), raw(project="nope"))
    assert out.sink is Sink.DLQ
    dlq = decode_dlq(out.outputs[0].value)
    assert (dlq["stage"], dlq["error_type"]) == ("validate", "invalid")


def test_event_without_any_identity_or_ip_is_invalid(processor):
    event = raw(user_id=None)
    out = processor.on_raw(record(encode_raw(event), key="demo:"), InMemoryState())
    assert out.sink is Sink.DLQ


def test_misplaced_record_is_rekeyed_with_its_event_id(processor):
    event = raw(user_id=None, anonymous_id="anon-1", ip="192.0.2.1", user_agent=CHROME)
    # JSON without an event id, published without a key on some partition.
    body = orjson.dumps({k: v for k, v in event.items() if k != "event_id"})
    state = InMemoryState()
    outs = [processor.on_raw(record(body, partition=p, offset=5), state) for p in range(PARTITIONS)]
    rekeyed = [o for o in outs if o.sink is Sink.REKEY]
    assert len(rekeyed) == PARTITIONS - 1
    copy = decode_raw(rekeyed[0].outputs[0].value)
    assert copy["event_id"]
    key = topic_key("demo", "anon-1").encode()
    assert rekeyed[0].outputs[0].key == key
    assert rekeyed[0].outputs[0].partition == partition_for(key, PARTITIONS)
    # The copy is then decided on the right partition, keeping its event id.
    # (Fresh state: in `state` the copy that sat on the right partition was
    # accepted under its own derived id, so this one would be its duplicate.)
    again = processor.on_raw(
        Record("rekey", partition_for(key, PARTITIONS), 0, key, rekeyed[0].outputs[0].value),
        InMemoryState(),
        check_partition=False,
    )
    assert again.sink is Sink.CLEAN
    assert decode_clean(again.outputs[0].value)["event_id"] == copy["event_id"]


def test_an_event_with_an_ip_but_no_user_is_invalid_the_stream_derives_no_visitor_id(processor):
    """Visitor ids need the day's random salt, which the stream does not hold."""
    event = raw(user_id=None, ip="192.0.2.1", user_agent=CHROME, domain="example.com")
    out = processor.on_raw(record(encode_raw(event), key="demo:"), InMemoryState())
    assert out.sink is Sink.DLQ
    assert out.error == "invalid"


def test_a_visitor_id_on_the_event_is_its_user_key(processor):
    event = raw(user_id=None, visitor_id="v-1", ip="192.0.2.1", user_agent=CHROME)
    assert processor.enricher.enrich(event).facts.user_key == "v-1"


@pytest.mark.parametrize("variant", ["Viewed Product", "viewed_product", " VIEWED  product "])
def test_name_variants_are_duplicates(processor, variant):
    state = InMemoryState()
    assert feed(processor, state, raw(name="viewed product")).sink is Sink.CLEAN
    out = feed(processor, state, raw(name=variant, timestamp=T0 + 1000))
    assert out.sink is Sink.DROPPED
    dropped = decode_dropped(out.outputs[0].value)
    assert (dropped["reason"], dropped["stage"]) == ("duplicate", "dedup")


def test_different_properties_are_not_duplicates(processor):
    state = InMemoryState()
    assert feed(processor, state, raw(properties={"a": "1"})).sink is Sink.CLEAN
    assert feed(processor, state, raw(properties={"a": "2"})).sink is Sink.CLEAN
    assert feed(processor, state, raw(properties={"a": "1.0"})).sink is Sink.DROPPED


def test_shield_drop_is_recorded_with_reason(processor):
    out = feed(processor, InMemoryState(), raw(country="xx"))
    dropped = decode_dropped(out.outputs[0].value)
    assert (dropped["reason"], dropped["stage"]) == ("site_country_blocklist", "shields")


def test_orders_go_through_events_orders(processor):
    user_state, order_state = InMemoryState(), InMemoryState()
    first = feed(processor, user_state, raw(name="purchase", order_id="o-1"))
    assert first.sink is Sink.ORDERS
    [fwd] = first.outputs
    assert fwd.key == b"demo:o-1"
    assert fwd.partition == partition_for(b"demo:o-1", PARTITIONS)
    # Another user, same order id, a day later in event time.
    later = T0 + 86_400_000
    second = feed(
        processor,
        user_state,
        raw(name="Purchase", order_id="o-1", user_id="u2", timestamp=later, received_at=later),
    )
    decided = [
        processor.on_order(
            Record("events.orders", fwd.partition, i, fwd.key, o.outputs[0].value), order_state
        )
        for i, o in enumerate([first, second])
    ]
    assert [d.sink for d in decided] == [Sink.CLEAN, Sink.DROPPED]
    assert decided[0].outputs[0].key == b"demo:u1"
    assert decode_dropped(decided[1].outputs[0].value)["reason"] == "duplicate_order"
    assert decode_clean(decided[0].outputs[0].value)["checks"][-1] == "order_uniqueness"


def order_records(processor, *events):
    """Each event through the raw path, as the events.orders records it becomes."""
    user_state = InMemoryState()
    out = []
    for offset, event in enumerate(events):
        [fwd] = feed(processor, user_state, event).outputs
        assert fwd.sink is Sink.ORDERS
        out.append(Record("events.orders", fwd.partition, 10 + offset, fwd.key, fwd.value))
    return out


def test_an_earlier_order_event_decided_later_takes_the_order_and_re_decides_the_holder(
    processor,
):
    late = raw(
        name="confirmation",
        order_id="o-7",
        user_id="merchant",
        timestamp=T0 + 23_040_000,  # 6.4 h later in event time
        received_at=T0 + 23_040_000,
        properties={"amount": "10"},
        user_agent=CHROME,
    )
    early = raw(name="confirmation", order_id="o-7", user_id="customer")
    r_late, r_early = order_records(processor, late, early)
    state = InMemoryState()
    first = processor.on_order(r_late, state)
    assert first.sink is Sink.CLEAN
    accepted = decode_clean(first.outputs[0].value)

    second = processor.on_order(r_early, state)
    assert second.sink is Sink.CLEAN
    assert second.event_id == early["event_id"]
    assert second.dropped is None
    clean, redecided = second.outputs
    assert clean.sink is Sink.CLEAN
    assert decode_clean(clean.value)["event_id"] == early["event_id"]
    # The holder's new decision: its whole event, dropped, from its own position.
    assert (redecided.sink, redecided.key) == (Sink.DROPPED, b"demo:merchant")
    dropped = decode_dropped(redecided.value)
    assert dropped["event_id"] == late["event_id"]
    assert (dropped["reason"], dropped["stage"]) == ("duplicate_order", "orders")
    assert dropped["detail"] == f"order taken by {early['event_id']} at {T0}"
    assert dropped["source_offset"] == r_late.offset
    for field in ("timestamp", "properties", "order_id", "browser", "fingerprint", "user_key"):
        assert dropped[field] == accepted[field], field
    # The clock stands still (42): the re-decision is stamped 1 ms after the
    # acceptance, so ClickHouse's version ranks it above the accepted row.
    assert (accepted["decided_at"], dropped["decided_at"]) == (42, 43)
    assert decision_version(43, Decision.DROPPED, "duplicate_order") > decision_version(
        42, Decision.ACCEPTED
    )


def test_an_order_event_read_again_gives_the_same_outputs(processor):
    late = raw(name="purchase", order_id="o-8", user_id="a", timestamp=T0 + 1, received_at=T0 + 1)
    early = raw(name="purchase", order_id="o-8", user_id="b")
    r_late, r_early = order_records(processor, late, early)
    state = InMemoryState()
    processor.on_order(r_late, state)
    taken = processor.on_order(r_early, state)
    assert processor.on_order(r_early, state).outputs == taken.outputs
    again = processor.on_order(r_late, state)
    assert again.sink is Sink.DROPPED
    [dropped] = again.outputs
    redecided = decode_dropped(taken.outputs[1].value)
    # The same decision; stamped by the clock, as a record decided now is.
    assert decode_dropped(dropped.value) == {**redecided, "decided_at": 42}


def test_an_oversized_holder_is_kept_trimmed_and_still_re_decided(processor):
    blob = {"orderId": "o-9", "notes": "x" * (RECORD_LIMIT + 1)}
    late = raw(name="purchase", user_id="a", properties=blob, timestamp=T0 + 1, received_at=T0 + 1)
    early = raw(name="purchase", order_id="o-9", user_id="b")
    r_late, r_early = order_records(processor, late, early)
    state = InMemoryState()
    processor.on_order(r_late, state)
    [(_, value)] = state.data.values()
    assert len(orjson.dumps(value)) < 4_096
    _, redecided = processor.on_order(r_early, state).outputs
    dropped = decode_dropped(redecided.value)
    assert dropped["event_id"] == late["event_id"]
    assert dropped["reason"] == "duplicate_order"
    assert dropped["order_id"] == "o-9"  # taken from the properties it no longer has
    assert dropped["properties"] == {}


def test_the_orders_pipeline_must_be_the_order_rule(settings):
    pipelines = build_pipelines(settings, UserAgents(16))
    with pytest.raises(ValueError, match="exactly one OrderUniqueness"):
        Processor(settings, pipelines=Pipelines(pipelines.user, Pipeline([])))


def test_order_id_from_properties(processor):
    out = feed(processor, InMemoryState(), raw(name="confirmation", properties={"orderId": "9"}))
    assert out.sink is Sink.ORDERS
    assert out.outputs[0].key == b"demo:9"


def test_out_of_tolerance_client_time_uses_received_at(processor):
    state = InMemoryState()
    assert feed(processor, state, raw(timestamp=T0, received_at=T0)).sink is Sink.CLEAN
    # Client clock says +1 h (beyond the 10 min tolerance): event time is received_at,
    # 1 s after the first, so it is a duplicate.
    late = raw(timestamp=T0 + 3_600_000, received_at=T0 + 1000)
    assert feed(processor, state, late).sink is Sink.DROPPED


def test_a_record_too_large_to_carry_on_goes_to_the_dlq_truncated(processor):
    """A record published straight to events.raw near the broker's limit: the clean
    record it would become is over Kafka's message size, so it is parked, not lost."""
    state = InMemoryState()
    big = raw(properties={"blob": "x" * 960_000})
    out = feed(processor, state, big)
    assert out.sink is Sink.DLQ
    assert out.error == "too_large"
    [o] = out.outputs
    assert len(o.value) < 1_000_000
    dlq = decode_dlq(o.value)
    assert len(dlq["value"]) == 256_000
    assert dlq["error"].startswith("value truncated to 256000 of ")
    assert state.get(f"d|{big['event_id']}") is None
    # The stream goes on: the next event is decided as usual.
    assert feed(processor, state, raw(name="after")).sink is Sink.CLEAN


def test_an_output_that_grew_too_large_goes_to_the_dlq(processor, monkeypatch):
    import streams.processor as module

    monkeypatch.setattr(module, "MAX_OUTPUT_BYTES", 2_000)
    out = feed(processor, InMemoryState(), raw(properties={"blob": "x" * 2_500}))
    assert (out.sink, out.error) == (Sink.DLQ, "too_large")
    assert "clean record would be" in decode_dlq(out.outputs[0].value)["error"]


@pytest.mark.parametrize("claimed", [4_102_444_800_000, 31_536_000_000])  # 2100, 1971
def test_a_forged_client_time_is_never_stored_as_the_event_time(processor, claimed):
    state = InMemoryState()
    clean = decode_clean(feed(processor, state, raw(timestamp=claimed)).outputs[0].value)
    assert clean["timestamp"] == clean["received_at"] == T0
    bot = raw(timestamp=claimed, user_agent="Googlebot/2.1 (+http://www.google.com/bot.html)")
    dropped = decode_dropped(feed(processor, state, bot).outputs[0].value)
    assert dropped["timestamp"] == T0


def test_a_client_time_within_the_tolerance_is_kept(processor):
    clean = decode_clean(
        feed(processor, InMemoryState(), raw(timestamp=T0 - 60_000)).outputs[0].value
    )
    assert clean["timestamp"] == T0 - 60_000


def test_an_event_id_re_sent_at_another_time_is_stored_under_a_derived_id(processor):
    """The copy's drop never shares the original's event id: one row per event id."""
    state = InMemoryState()
    first = raw(event_id="client-7", idempotency_key="client-7", user_agent=CHROME)
    assert feed(processor, state, first).sink is Sink.CLEAN
    again = dict(first, timestamp=T0 + 2_000, received_at=T0 + 2_000)
    out = feed(processor, state, again, offset=1)
    assert out.sink is Sink.DROPPED
    [o] = out.outputs
    dropped = decode_dropped(o.value)
    assert dropped["reason"] == "duplicate_idempotency_key"
    assert dropped["event_id"] == out.event_id == copy_event_id("client-7", T0 + 2_000)
    assert "client-7" in dropped["detail"]
    # Read again (a redelivery of the copy): the same derived id, the same row.
    assert feed(processor, state, again, offset=1).event_id == out.event_id
    # The original read again is still accepted under its own id.
    assert feed(processor, state, first).event_id == "client-7"


def _without_splicing(monkeypatch):
    """The processor re-encodes every output field by field (the reference path)."""
    import streams.processor as module

    def decode_whole(value):
        return module._decode_raw(value), None

    monkeypatch.setattr(module, "decode_raw_marked", decode_whole)


def _decide_all(processor, events):
    user, orders = InMemoryState(), InMemoryState()
    out = []
    for offset, event in enumerate(events):
        key = topic_key(event["project"], event["user_id"] or "")
        outcome = processor.on_raw(record(encode_raw(event), key=key, offset=offset), user)
        if outcome.sink is Sink.ORDERS:
            o = outcome.outputs[0]
            order = Record("events.orders", o.partition or 0, offset, o.key, o.value, T0)
            outcome = processor.on_order(order, orders)
        out.append([(o.sink, o.key, o.value, o.partition) for o in outcome.outputs])
    return out


def test_spliced_outputs_are_the_bytes_of_the_field_by_field_encoding(settings, monkeypatch):
    """Outputs copied from the raw record's bytes equal a full re-encoding, for every
    outcome: clean, each drop (a copy re-using an id among them), orders, re-decisions."""
    from streams.synthetic import synthetic_events

    events = list(synthetic_events(3_000, seed=7))
    events += [
        raw(event_id="dup", idempotency_key="k", timestamp=T0 + 5),
        raw(event_id="dup", idempotency_key="k", timestamp=T0 + 9),  # the id re-sent: a copy
        raw(user_id=None, ip="192.0.2.9", user_agent=CHROME),  # visitor id filled in
        raw(timestamp=T0 + 3_600_000_000),  # outside the tolerance: received_at restated
        raw(country="XX", revenue_amount="9.99", revenue_currency="EUR", properties={"é": "ü"}),
        raw(name="purchase", order_id="o-1", user_properties_unset=["a", "b"], interactive=False),
    ]
    spliced = _decide_all(Processor(settings, clock=lambda: T0 + 77), events)
    _without_splicing(monkeypatch)
    assert _decide_all(Processor(settings, clock=lambda: T0 + 77), events) == spliced


def test_records_not_in_the_encoders_form_are_encoded_field_by_field(processor):
    """A publisher's longer (still valid) varint for a length: the output is the
    canonical encoding, never a copy of the odd bytes."""
    event = raw(user_agent=CHROME, url="https://example.com/")
    value = encode_raw(event)
    canonical = processor.on_raw(record(value, key="demo:u1"), InMemoryState())
    url = b"\x02\x28https://example.com/"  # the union branch, then the length 20 in one byte
    assert url in value
    odd = value.replace(url, b"\x02\xa8\x00https://example.com/")  # 20 in two bytes
    assert decode_raw(odd) == event
    assert decode_raw_marked(value)[1] is not None
    assert decode_raw_marked(odd)[1] is None
    out = processor.on_raw(record(odd, key="demo:u1"), InMemoryState())
    assert out.outputs[0].value == canonical.outputs[0].value
