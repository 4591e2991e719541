"""Forgetting expired state never runs ahead of the committed offset.

A backfill makes event time run far ahead of the wall clock: one record can
move a partition's watermark by days and expire the anchors that dropped the
records just before it. If that expiry became durable (a changelog tombstone)
while the offsets of those records were not yet committed, a crash would have
them decided again *without* the anchor: a dropped duplicate would come back
accepted. The fault lands exactly there: after the outputs and changelog
records of a commit are flushed, before its offsets are committed.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import new_raw_event
from streams.partitioning import partition_for

# Loaded into the worker through PYTHONPATH: kill -9 at the first commit whose
# offsets reach EVENTSIEVE_TEST_KILL_AT, after the flush, before the commit.
FAULT = """
import os
import signal

_at = int(os.environ.get("EVENTSIEVE_TEST_KILL_AT", "0"))
if _at:
    def _reaches(offsets):
        return any(o >= _at for o in offsets)

    if os.environ.get("EVENTSIEVE_STREAMS__ENGINE") == "faust":
        from faust.transport.drivers.aiokafka import Consumer

        _commit = Consumer._commit

        async def _faulty_commit(self, offsets):
            if _reaches(offsets.values()):
                os.kill(os.getpid(), signal.SIGKILL)
            return await _commit(self, offsets)

        Consumer._commit = _faulty_commit
    else:
        from streams.engine import Engine

        _finish = Engine._finish

        def _faulty_finish(self):
            if _reaches(tp.offset for tp in self.committing_offsets):
                os.kill(os.getpid(), signal.SIGKILL)
            return _finish(self)

        Engine._finish = _faulty_finish
"""

DAY_MS = 86_400_000


def committed(settings: Settings, group: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap(settings), "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(settings.topics.raw, partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def wait_committed(settings: Settings, group: str, partition: int, offset: int, worker) -> None:
    deadline = time.monotonic() + 90
    while committed(settings, group, partition) < offset:
        assert worker.alive(), worker.log()
        assert time.monotonic() < deadline, f"offset {offset} not committed\n{worker.log()}"
        time.sleep(0.3)


def users_on_one_partition(partitions: int) -> tuple[str, str, int]:
    """Two user ids whose records belong on the same raw partition."""
    first = f"expiry-{uuid.uuid4().hex[:8]}"
    partition = partition_for(topic_key("demo", first).encode(), partitions)
    for i in range(1_000):
        other = f"{first}-{i}"
        if partition_for(topic_key("demo", other).encode(), partitions) == partition:
            return first, other, partition
    raise AssertionError("no second user on the partition")


@pytest.mark.parametrize(
    "later_from",
    [
        # Another user's record moves the watermark two days on and expires the key.
        "other",
        # The same user's same event two days on does not expire the key: it
        # rewrites it, keeping only the anchors within window and grace of the
        # newest. That rewrite must not lose the anchor the repeat was dropped by.
        "same",
    ],
)
def test_a_crash_after_a_later_record_does_not_undrop_a_duplicate(
    test_settings: Settings, worker_factory, kit, tmp_path: Path, later_from: str
) -> None:
    partitions = test_settings.topics.partitions
    user, other, partition = users_on_one_partition(partitions)
    t0 = int(time.time() * 1000) - 30 * DAY_MS  # a backfill: events from a month ago

    def record(user_id: str, at: int) -> tuple:
        event = new_raw_event(
            project="demo", name="Report Exported", user_id=user_id, timestamp=at, received_at=at
        )
        key = topic_key("demo", user_id).encode()
        return event["event_id"], kit.Raw(partition, key, encode_raw(event))

    first_id, first = record(user, t0)
    repeat_id, repeat = record(user, t0 + 10_000)  # the same event 10 s later: a duplicate
    later_id, later = record(other if later_from == "other" else user, t0 + 2 * DAY_MS)

    kit.publish(test_settings, [first])
    fault = {**kit.injected(tmp_path / "inject", FAULT), "EVENTSIEVE_TEST_KILL_AT": "3"}
    crashing = worker_factory(test_settings, "crashing", fault)
    group = crashing.app_id
    wait_committed(test_settings, group, partition, 1, crashing)
    # Now the repeat (dropped by the first's anchor) and the later record that
    # forgets that anchor: the worker dies as it is about to commit them.
    kit.publish(test_settings, [repeat, later])
    crashing.process.wait(90)

    restarted = worker_factory(test_settings, "restarted")
    wait_committed(test_settings, group, partition, 3, restarted)
    found = kit.collect(test_settings, 3, [restarted])
    assert found.final() == {
        first_id: ("clean", ""),
        repeat_id: ("dropped", "duplicate"),
        later_id: ("clean", ""),
    }, found.by_id
