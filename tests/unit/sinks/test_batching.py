"""Batch bookkeeping: offsets to commit, dedup tokens, when to flush, how long to wait."""

from __future__ import annotations

import random

from sinks.batching import Backoff, FlushPolicy, OffsetRanges, dedup_token


def test_commit_offsets_are_one_past_the_last_offset_of_each_partition() -> None:
    ranges = OffsetRanges()
    for topic, partition, offset in [("c", 0, 5), ("c", 0, 7), ("c", 1, 2), ("d", 0, 9)]:
        ranges.add(topic, partition, offset)
    assert ranges.commit_offsets() == {("c", 0): 8, ("c", 1): 3, ("d", 0): 10}


def test_token_depends_on_ranges_and_table_not_on_arrival_order() -> None:
    a, b, c = OffsetRanges(), OffsetRanges(), OffsetRanges()
    a.add("c", 0, 1)
    a.add("c", 1, 4)
    b.add("c", 1, 4)
    b.add("c", 0, 1)
    c.add("c", 0, 1)
    c.add("c", 1, 5)
    assert dedup_token(a, "events") == dedup_token(b, "events")
    assert dedup_token(a, "events") != dedup_token(c, "events")
    assert dedup_token(a, "events") != dedup_token(a, "user_updates")


def test_flush_policy_on_size_and_on_age() -> None:
    policy = FlushPolicy(max_rows=100, max_interval_s=1.0)
    assert not policy.due(0, None, now=50.0)
    assert not policy.due(10, started_at=10.0, now=10.5)
    assert policy.due(10, started_at=10.0, now=11.0)
    assert policy.due(100, started_at=10.0, now=10.0)


def test_flush_policy_flushes_early_when_idle_but_not_more_often_than_the_minimum_gap() -> None:
    policy = FlushPolicy(max_rows=100, max_interval_s=1.0)
    assert policy.min_interval_s == 0.1
    # The consumer has nothing more: a lone record goes at once...
    assert policy.due(1, started_at=10.0, now=10.0, idle=True)
    # ... unless the previous flush was less than the minimum gap ago.
    assert not policy.due(1, started_at=10.0, now=10.05, idle=True, last_flush=10.0)
    assert policy.due(1, started_at=10.0, now=10.1, idle=True, last_flush=10.0)
    # Under load (more records waiting) only size and age count.
    assert not policy.due(50, started_at=10.0, now=10.9, idle=False, last_flush=0.0)
    assert not policy.due(0, started_at=None, now=10.0, idle=True)
    assert FlushPolicy(10, 2.0, min_interval_s=0.5).min_interval_s == 0.5


def test_offsets_of_many_records_at_once_are_those_of_one_by_one() -> None:
    one, many = OffsetRanges(), OffsetRanges()
    records = [(0, 5), (1, 2), (0, 6), (2, 9), (1, 1), (0, 4)]
    for partition, offset in records:
        one.add("c", partition, offset)
    many.add_many("c", [p for p, _ in records], [o for _, o in records])
    many.add_many("c", [3, 3], [7, 8])
    one.add("c", 3, 7)
    one.add("c", 3, 8)
    assert many.ranges == one.ranges
    many.add_many("c", [], [])
    assert many.ranges == one.ranges


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, max_s=4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5
