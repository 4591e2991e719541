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


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, max_s=4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5
