"""Records that wait in events.raw across a worker restart are all decided.

Published with confluent-kafka's default partitioner (CRC32, not the murmur2
placement the stream expects), so most records take the re-key hop; the
group has committed offsets when the second worker starts, as after any
deploy.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import new_raw_event


def test_records_waiting_across_a_graceful_restart_are_all_decided(
    test_settings: Settings, worker_factory, kit, publish_direct
):
    first = publish_direct(test_settings, 150, "a")
    worker = worker_factory(test_settings, "first")
    seen = kit.collect(test_settings, len(first), [worker])
    worker.stop()
    second = publish_direct(test_settings, 150, "b")
    restarted = worker_factory(test_settings, "restarted")
    found = kit.collect(test_settings, len(first) + len(second), [restarted])

    assert set(seen.by_id) == first
    assert set(found.by_id) == first | second
    assert found.inconsistent() == {}
    assert set(found.final().values()) == {("clean", "")}


def test_records_published_in_transactions_are_all_decided(
    test_settings: Settings, worker_factory, kit
):
    """Transaction markers take offsets without being records: the worker steps over them."""
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap(test_settings),
            "transactional.id": f"txn-{test_settings.topics.raw}",
        }
    )
    producer.init_transactions(30)
    ids = set()
    for batch in range(4):
        producer.begin_transaction()
        for i in range(5):
            user = f"txn-user-{i}"
            event = new_raw_event(
                project="demo", name=f"txn {batch}/{i}", user_id=user, source="direct"
            )
            key = topic_key("demo", user).encode()
            producer.produce(test_settings.topics.raw, key=key, value=encode_raw(event))
            ids.add(event["event_id"])
        producer.commit_transaction(30)
    worker = worker_factory(test_settings)
    found = kit.collect(test_settings, len(ids), [worker], timeout=60)
    assert set(found.by_id) == ids
    assert set(found.final().values()) == {("clean", "")}


def test_records_of_aborted_transactions_are_never_decided(
    test_settings: Settings, worker_factory, kit
):
    """The endpoint writes in transactions; a request answered 503 was aborted and retried.

    Its aborted records are in the log: a worker that read them would count
    the request twice.
    """
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap(test_settings),
            "transactional.id": f"txn-abort-{test_settings.topics.raw}",
        }
    )
    producer.init_transactions(30)
    kept: set[str] = set()
    aborted: set[str] = set()
    for attempt, wanted in (("aborted", aborted), ("committed", kept), ("aborted", aborted)):
        producer.begin_transaction()
        for i in range(5):
            user = f"abort-user-{i}"
            event = new_raw_event(project="demo", name=f"{attempt} {i}", user_id=user)
            key = topic_key("demo", user).encode()
            producer.produce(test_settings.topics.raw, key=key, value=encode_raw(event))
            wanted.add(event["event_id"])
        if attempt == "aborted":
            producer.flush(30)  # the records reach the broker, then the transaction aborts
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    worker = worker_factory(test_settings)
    found = kit.collect(test_settings, len(kept), [worker], timeout=60)
    time.sleep(3)  # an aborted record decided after the committed ones would show now
    found = kit.collect(test_settings, len(kept), [worker], timeout=60)
    assert set(found.by_id) == kept
    assert not set(found.by_id) & aborted


def test_two_workers_joining_while_records_wait_decide_every_record(
    test_settings: Settings, worker_factory, kit, publish_direct
):
    """The second worker's join rebalances the group while records are in flight."""
    ids = publish_direct(test_settings, 300, "c")
    first = worker_factory(test_settings, "a")
    second = worker_factory(test_settings, "b")
    found = kit.collect(test_settings, len(ids), [first, second])
    assert set(found.by_id) == ids
    assert found.inconsistent() == {}
    assert set(found.final().values()) == {("clean", "")}


# Loaded into the worker process (PYTHONPATH): Faust's fetch loop loses the
# first record of every raw partition once, as faust-streaming 0.15.3 can after
# a rebalance. The worker must notice the hole, seek back and decide it.
LOSE_FIRST_RECORDS = """
import os
import faust.transport.consumer as consumer

_raw = os.environ["EVENTSIEVE_TOPICS__RAW"]
_lost = set()
_getmany = consumer.Consumer.getmany


async def getmany(self, timeout):
    async for tp, message in _getmany(self, timeout):
        if tp.topic == _raw and tp not in _lost:
            _lost.add(tp)
            continue
        yield tp, message


consumer.Consumer.getmany = getmany
"""


@pytest.mark.parametrize("engine", ["faust"])  # the Faust shell's own guard
def test_a_record_lost_inside_faust_is_sought_back_and_decided(
    test_settings: Settings, worker_factory, kit, tmp_path, monkeypatch, publish_direct
):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(LOSE_FIRST_RECORDS)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    ids = publish_direct(test_settings, 60, "d")
    worker = worker_factory(test_settings)
    found = kit.collect(test_settings, len(ids), [worker], timeout=60)
    assert set(found.by_id) == ids
    assert "seeking back" in worker.log_path.read_text()
