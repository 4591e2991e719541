"""Replay's pure parts: the fresh run's order, the range, context, the report, the checkpoint."""

import random

import pytest

from eventsieve.config import ProjectSettings, Settings, ShieldSettings
from schemas.canonical import topic_key
from schemas.codecs import decode_clean, decode_dropped, encode_clean, encode_dropped, encode_raw
from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import Stage
from streams.partitioning import partition_for
from streams.processor import Record, Sink
from streams.replay import (
    AckTracker,
    Checkpoint,
    Replayer,
    ReplayRange,
    TimeOrderedMerge,
    changes,
    checkpoint_key,
    output_head,
    record_label,
    rules_fingerprint,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a whole second
S0 = T0 // 1000
PARTITIONS = 3
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


def settings(**shields) -> Settings:
    return Settings(
        projects=(
            ProjectSettings(id="demo", shields=ShieldSettings(**shields)),
            ProjectSettings(id="other"),
        ),
        topics={"partitions": PARTITIONS},
    )


def raw(t: int, **fields):
    fields.setdefault("user_id", "u1")
    fields.setdefault("user_agent", CHROME)
    fields.setdefault("ip", "192.0.2.1")
    return new_raw_event(
        project=fields.pop("project", "demo"),
        name=fields.pop("name", "x"),
        timestamp=t,
        received_at=t,
        **fields,
    )


class Log:
    """Raw records as a topic would hold them: offsets rising per partition."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}

    def record(self, event, partition: int | None = None) -> Record:
        key = topic_key(event["project"], event["user_id"]).encode()
        if partition is None:
            partition = partition_for(key, PARTITIONS)
        offset = self.offsets.get(partition, 0)
        self.offsets[partition] = offset + 1
        return Record("events.raw", partition, offset, key, encode_raw(event), event["timestamp"])


def run(s: Settings, span: ReplayRange, records: list[Record]) -> dict[str, str]:
    replayer = Replayer(s, span, decided_at=99, rekey_topic="rekey")
    out = {}
    for r in records:
        for decided in replayer.feed(r):
            out[decided.event_id] = decided.label
    return out


# -- the range ----------------------------------------------------------------------


def test_range_is_half_open_in_whole_seconds_like_clickhouse_event_time():
    span = ReplayRange(S0, S0 + 10)
    assert span.contains("demo", T0)
    assert span.contains("demo", T0 + 9_999)  # event_time = S0 + 9
    assert not span.contains("demo", T0 + 10_000)
    assert not span.contains("demo", T0 - 1)  # event_time = S0 - 1


def test_range_with_a_project_and_an_open_end():
    span = ReplayRange(S0, None, "demo")
    assert span.contains("demo", T0 + 10**9)
    assert not span.contains("other", T0)


def test_range_refuses_an_empty_span():
    with pytest.raises(ValueError, match="after its start"):
        ReplayRange(S0, S0)


# -- the order of a fresh run --------------------------------------------------------


def rec(partition: int, offset: int, ts: int) -> Record:
    return Record("t", partition, offset, None, b"", ts)


def test_merge_orders_by_timestamp_and_keeps_each_partition_in_offset_order():
    merge = TimeOrderedMerge([0, 1])
    for r in (rec(0, 0, 10), rec(0, 1, 5), rec(1, 0, 7)):
        merge.push(r)
    merge.finish(0)
    merge.finish(1)
    # partition 0's offset 1 (ts 5) cannot pass its offset 0 (ts 10)
    assert [(r.partition, r.offset) for r in merge.drain()] == [(1, 0), (0, 0), (0, 1)]


def test_merge_waits_for_a_partition_that_has_nothing_buffered_yet():
    merge = TimeOrderedMerge([0, 1])
    merge.push(rec(0, 0, 10))
    assert merge.pop() is None
    assert merge.waiting_for() == [1]
    merge.push(rec(1, 0, 3))
    assert merge.pop() == rec(1, 0, 3)


def test_merge_order_does_not_depend_on_how_reads_interleave():
    parts = {
        p: [rec(p, o, ts) for o, ts in enumerate(sorted(random.Random(p).sample(range(100), 20)))]
        for p in range(3)
    }
    orders = []
    for seed in range(5):
        rng = random.Random(seed)
        merge = TimeOrderedMerge(parts)
        cursors = dict.fromkeys(parts, 0)
        out: list[Record] = []
        while merge.open:
            p = rng.choice(sorted(merge.open))
            merge.push(parts[p][cursors[p]])
            cursors[p] += 1
            if cursors[p] == len(parts[p]):
                merge.finish(p)
            out.extend(merge.drain())
        out.extend(merge.drain())
        orders.append([(r.partition, r.offset) for r in out])
    assert all(o == orders[0] for o in orders)
    assert len(orders[0]) == 60


# -- decisions ---------------------------------------------------------------------------


def test_a_duplicate_of_an_event_accepted_just_before_the_range_is_still_a_duplicate():
    log = Log()
    first = raw(T0 - 1_000, properties={"a": "1"})
    copy = raw(T0 + 1_000, properties={"a": "1"})
    got = run(settings(), ReplayRange(S0), [log.record(first), log.record(copy)])
    assert got == {copy["event_id"]: "dropped:duplicate"}  # nothing for the context event


def test_an_order_id_seen_long_before_the_range_is_still_a_repeat():
    log = Log()
    year = 365 * 86_400_000
    first = raw(T0 - year, name="purchase", order_id="o-1")
    again = raw(T0 + 5_000, name="purchase", order_id="o-1", user_id="u2")
    got = run(settings(), ReplayRange(S0), [log.record(first), log.record(again)])
    assert got == {again["event_id"]: "dropped:duplicate_order"}


def test_events_after_the_range_and_of_other_projects_get_nothing():
    log = Log()
    inside = raw(T0 + 1_000)
    after = raw(T0 + 60_000, name="y")
    other = raw(T0 + 1_000, project="other")
    got = run(
        settings(),
        ReplayRange(S0, S0 + 60, "demo"),
        [log.record(inside), log.record(after), log.record(other)],
    )
    assert got == {inside["event_id"]: "accepted"}


def test_a_new_shield_drops_the_event_and_frees_the_window_it_anchored():
    log = Log()
    blocked = raw(T0 + 1_000, ip="203.0.113.9", properties={"a": "1"})
    copy = raw(T0 + 2_000, ip="192.0.2.1", properties={"a": "1"})
    records = [log.record(blocked), log.record(copy)]
    assert run(settings(), ReplayRange(S0), records) == {
        blocked["event_id"]: "accepted",
        copy["event_id"]: "dropped:duplicate",
    }
    assert run(settings(ip_blocklist=("203.0.113.0/24",)), ReplayRange(S0), records) == {
        blocked["event_id"]: "dropped:site_ip_blocklist",
        copy["event_id"]: "accepted",
    }


def test_a_misplaced_record_is_rekeyed_and_decided_with_its_users_state():
    log = Log()
    first = raw(T0 + 1_000, properties={"a": "1"})
    home = partition_for(b"demo:u1", PARTITIONS)
    copy = raw(T0 + 2_000, properties={"a": "1"})
    records = [log.record(first), log.record(copy, partition=(home + 1) % PARTITIONS)]
    replayer = Replayer(settings(), ReplayRange(S0), decided_at=99, rekey_topic="rekey")
    replayer.feed(records[0])
    [decided] = replayer.feed(records[1])
    assert decided.label == "dropped:duplicate"
    dropped = decode_dropped(decided.output.value)
    assert dropped["decided_at"] == 99
    assert (dropped["source_topic"], dropped["source_partition"]) == ("rekey", home)


def test_undecodable_records_are_counted_and_emit_nothing():
    replayer = Replayer(settings(), ReplayRange(S0), decided_at=99, rekey_topic="rekey")
    assert replayer.feed(Record("events.raw", 0, 0, b"k", b"{not json", T0)) == []
    assert replayer.counts.dlq == 1


def test_outputs_carry_the_replay_start_as_decided_at():
    log = Log()
    replayer = Replayer(settings(), ReplayRange(S0), decided_at=1234, rekey_topic="rekey")
    [decided] = replayer.feed(log.record(raw(T0, user_agent="python-requests/2.31.0")))
    assert decided.output.sink is Sink.DROPPED
    assert decode_dropped(decided.output.value)["decided_at"] == 1234
    assert decided.label == "dropped:bot"


# -- report, checkpoint, acks ---------------------------------------------------------------


def test_changes_counts_moves_and_ignores_unchanged_decisions():
    before = {"a": "accepted", "b": "accepted", "c": "dropped:bot", "d": "accepted"}
    after = {"a": "dropped:bot", "b": "dropped:bot", "c": "dropped:bot", "e": "accepted"}
    assert changes(before, after) == [
        ("accepted", "dropped:bot", 2),
        ("(none)", "accepted", 1),
    ]


def test_checkpoint_round_trips_and_its_key_follows_the_rules():
    c = Checkpoint("k", {"start_s": 1}, "events.raw", "r", {0: (0, 10), 2: (5, 5)}, 77, 3)
    assert Checkpoint.from_json(c.to_json()) == c
    span = ReplayRange(S0)
    plain, shielded = settings(), settings(ip_blocklist=("203.0.113.0/24",))
    assert rules_fingerprint(plain) == rules_fingerprint(settings())
    assert rules_fingerprint(plain) != rules_fingerprint(shielded)
    assert checkpoint_key(span, "events.raw", "r") != checkpoint_key(span, "events.raw", "s")


def test_ack_tracker_keeps_only_the_unbroken_prefix():
    t = AckTracker(start=5)
    t.ack(6)
    assert t.prefix == 5
    t.ack(5)
    assert t.prefix == 7
    t.callback(7)(None, None)
    t.callback(8)("broker down", None)
    assert t.prefix == 8
    assert t.failed == [(8, "broker down")]


@pytest.mark.parametrize("timestamp", [0, 1, T0, 2**41 + 12345])
def test_output_head_reads_id_project_and_time_of_both_outputs(timestamp):
    event = raw(timestamp, project="other", event_id="é-" + "x" * 70)
    clean = encode_clean(clean_event(event, normalised_name="x", user_key="u", decided_at=5))
    dropped = encode_dropped(
        dropped_event(event, reason="bot", stage=Stage.BOT, decided_at=5, user_key="u")
    )
    want = ("é-" + "x" * 70, "other", timestamp)
    assert output_head(clean) == want
    assert output_head(dropped) == want


def test_an_order_id_shared_by_two_users_goes_to_the_earliest_event_whatever_the_records():
    """Live and replayed alike: the earliest confirmation by event time keeps the order id,
    whichever record comes first (the merge's order follows record timestamps)."""
    log = Log()
    early = raw(T0 + 1_000, name="purchase", order_id="o-9", user_id="alice")
    late = raw(T0 + 9_000, name="purchase", order_id="o-9", user_id="bob")
    r_early, r_late = log.record(early), log.record(late)
    assert r_early.partition != r_late.partition
    for first, second in ((r_early, r_late), (r_late, r_early)):
        merge = TimeOrderedMerge(range(PARTITIONS))
        merge.push(Record(**{**_fields(first), "timestamp": T0}))
        merge.push(Record(**{**_fields(second), "timestamp": T0 + 5}))
        for p in range(PARTITIONS):
            merge.finish(p)
        replayer = Replayer(settings(), ReplayRange(S0), decided_at=99, rekey_topic="rekey")
        decided = [d for r in merge.drain() for d in replayer.feed(r)]
        final = {d.event_id: d.label for d in decided}
        assert final == {
            early["event_id"]: "accepted",
            late["event_id"]: "dropped:duplicate_order",
        }
        # The later one decided first is accepted, then re-decided 1 ms after the
        # replay's start, so the sink ranks the re-decision above the acceptance.
        stamps = [decode_any(d.output)["decided_at"] for d in decided]
        if first is r_late:
            assert [d.event_id for d in decided] == [
                late["event_id"],
                early["event_id"],
                late["event_id"],
            ]
            assert stamps == [99, 99, 100]
            assert replayer.counts.redecided == 1
        else:
            assert stamps == [99, 99]
            assert replayer.counts.redecided == 0


def test_a_displaced_holder_is_re_decided_only_when_it_is_in_the_range():
    log = Log()
    late = raw(T0 - 5_000, name="purchase", order_id="o-7", user_id="bob")
    early = raw(T0 - 9_000, name="purchase", order_id="o-7", user_id="alice")
    records = [log.record(late), log.record(early)]  # the later one is decided first
    assert run(settings(), ReplayRange(S0 - 10), records) == {
        late["event_id"]: "dropped:duplicate_order",
        early["event_id"]: "accepted",
    }
    # Only the early one in the range: the late one, outside, gets nothing.
    assert run(settings(), ReplayRange(S0 - 9, S0 - 6), records) == {early["event_id"]: "accepted"}


def decode_any(out):
    return (decode_dropped if out.sink is Sink.DROPPED else decode_clean)(out.value)


def _fields(r: Record) -> dict:
    return {name: getattr(r, name) for name in Record.__slots__}


def test_a_copy_drop_of_a_repeated_event_id_does_not_replace_its_decision():
    labels: dict[str, str] = {}
    record_label(labels, "a", "accepted")
    record_label(labels, "a", "dropped:duplicate_idempotency_key")
    record_label(labels, "b", "dropped:duplicate_idempotency_key")
    record_label(labels, "c", "dropped:duplicate_idempotency_key")
    record_label(labels, "c", "dropped:bot")
    assert labels == {"a": "accepted", "b": "dropped:duplicate_idempotency_key", "c": "dropped:bot"}
