"""The kafka engine's exactly-once claims, on the real broker with real worker processes.

Faults are injected into the worker process itself (``sitecustomize`` on its
PYTHONPATH, acting at the N-th commit), so ``kill -9`` and a pause land
*inside* a transaction: outputs and changelog records written, offsets not
yet committed. After each fault, events.clean/dropped read ``read_committed``
must hold every event exactly once, with the decisions of a run without the
fault (the pure Processor's, ``kit.oracle``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import decode_clean, decode_dropped, encode_raw
from streams.partitioning import partition_for
from streams.synthetic import synthetic_events

pytestmark = pytest.mark.parametrize("engine", ["kafka"])

# Loaded into a worker process through PYTHONPATH. At the N-th commit, after
# the batch's outputs and changelog records are flushed into the open
# transaction and before its offsets are sent: kill -9 the process, or stop
# it (SIGSTOP) so that its partitions move while it holds the transaction.
FAULT = """
import os
import signal

_action = os.environ.get("EVENTSIEVE_TEST_FAULT")
_at = int(os.environ.get("EVENTSIEVE_TEST_FAULT_BATCH", "0"))
if _action:
    from streams.engine import Engine

    _finish = Engine._finish
    _calls = [0]

    def _faulty_finish(self):
        _calls[0] += 1
        if _calls[0] == _at:
            os.kill(os.getpid(), signal.SIGKILL if _action == "kill" else signal.SIGSTOP)
        return _finish(self)

    Engine._finish = _faulty_finish
"""


@pytest.fixture
def fault(tmp_path: Path, kit):
    """``fault(action, batch)``: the environment that injects ``action`` at commit ``batch``."""
    inject = kit.injected(tmp_path / "inject", FAULT)

    def env(action: str, batch: int) -> dict[str, str]:
        return {
            **inject,
            "EVENTSIEVE_TEST_FAULT": action,
            "EVENTSIEVE_TEST_FAULT_BATCH": str(batch),
        }

    return env


@pytest.fixture
def settings(test_settings: Settings) -> Settings:
    """Small micro-batches (many transactions per test) and RocksDB stores."""
    streams = test_settings.streams.model_copy(
        update={"batch_size": 200, "store": "rocksdb", "transaction_timeout_s": 60.0}
    )
    return test_settings.model_copy(update={"streams": streams})


def keyed(kit, events, partitions: int):
    out = []
    for raw in events:
        key = topic_key(raw["project"], raw["user_id"]).encode()
        out.append(kit.Raw(partition_for(key, partitions), key, encode_raw(raw)))
    return out


def read_all(settings: Settings, isolation: str = "read_committed") -> Counter[str]:
    """How many times each event id is in events.clean + events.dropped, read to the end."""
    topics = settings.topics
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(settings),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    partitions = [
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in (topics.clean, topics.dropped)
        for p in range(topics.partitions)
    ]
    consumer.assign(partitions)
    remaining = {(tp.topic, tp.partition) for tp in partitions}
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    try:
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard((message.topic(), message.partition()))
                    continue
                decode = decode_clean if message.topic() == topics.clean else decode_dropped
                counts[decode(message.value())["event_id"]] += 1
    finally:
        consumer.close()
    assert not remaining, f"never reached the end of {remaining}"
    return counts


def assert_exactly_once(settings: Settings, found, expected) -> None:
    assert found.final() == expected
    counts = read_all(settings)
    events = {ident for ident, d in expected.items() if d[0] != "dlq"}
    assert set(counts) == events
    assert {ident: n for ident, n in counts.items() if n != 1} == {}


def members_are(settings: Settings, group: str, client_ids: set[str]) -> None:
    """Wait until the group is stable with exactly these members (by client.id)."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(settings)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = admin.describe_consumer_groups([group])[group].result()
        if (
            found.state == ConsumerGroupState.STABLE
            and {m.client_id for m in found.members} == client_ids
        ):
            return
        time.sleep(0.3)
    pytest.fail(f"group {group} never had exactly {client_ids}")


def stopped(worker) -> bool:
    """True when the worker process is stopped (SIGSTOP)."""
    fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0] == "T"


def test_kill_9_inside_a_transaction_then_restart_is_exactly_once(
    settings: Settings, worker_factory, kit, fault
):
    records = keyed(kit, synthetic_events(6_000, seed=21), settings.topics.partitions)
    first, second = records[:4_000], records[4_000:]
    kit.publish(settings, first)
    crashing = worker_factory(settings, "crashing", env=fault("kill", 6))
    assert crashing.process.wait(120) == -signal.SIGKILL, crashing.log()
    # The open transaction's outputs are in the log, but no reader sees them.
    uncommitted = read_all(settings, "read_uncommitted")
    committed = read_all(settings)
    assert sum(uncommitted.values()) > sum(committed.values())
    assert 0 < len(committed) < len(first)
    kit.publish(settings, second)  # re-sends of phase 1: only restored state drops them
    restarted = worker_factory(settings, "restarted")
    found = kit.collect(settings, len(records), [restarted])
    restarted.stop()
    assert_exactly_once(settings, found, kit.oracle(settings, records))


def test_a_wiped_state_directory_is_restored_from_the_changelog(
    settings: Settings, worker_factory, kit, tmp_path, monkeypatch
):
    monkeypatch.setenv("EVENTSIEVE_TEST_WORKER_LOGLEVEL", "info")
    records = keyed(kit, synthetic_events(6_000, seed=22), settings.topics.partitions)
    first, second = records[:4_000], records[4_000:]
    kit.publish(settings, first)
    worker = worker_factory(settings, "first")
    kit.collect(settings, len(first), [worker])
    worker.kill9()
    shutil.rmtree(tmp_path / "data")
    kit.publish(settings, second)
    restarted = worker_factory(settings, "restarted")
    found = kit.collect(settings, len(records), [restarted])
    restarted.stop()
    assert_exactly_once(settings, found, kit.oracle(settings, records))
    log = restarted.log_path.read_text()
    assert '"partitions assigned"' in log, log[-3000:]
    assert '"restored": 0' not in log, log[-3000:]  # every store read its changelog


def test_workers_joining_and_leaving_mid_stream_are_exactly_once(
    settings: Settings, worker_factory, kit
):
    records = keyed(kit, synthetic_events(9_000, seed=23), settings.topics.partitions)
    parts = [records[:3_000], records[3_000:6_000], records[6_000:]]
    kit.publish(settings, parts[0])
    a = worker_factory(settings, "a")
    kit.collect(settings, 500, [a])
    b = worker_factory(settings, "b")  # joins while records are in flight
    kit.publish(settings, parts[1])
    kit.collect(settings, 4_000, [a, b])
    a.stop()  # leaves while records are in flight
    kit.publish(settings, parts[2])
    c = worker_factory(settings, "c")  # and another joins
    found = kit.collect(settings, len(records), [b, c])
    b.stop()
    c.stop()
    assert_exactly_once(settings, found, kit.oracle(settings, records))


def test_a_paused_worker_whose_partitions_moved_cannot_commit(
    settings: Settings, worker_factory, kit, fault
):
    records = keyed(kit, synthetic_events(6_000, seed=24), settings.topics.partitions)
    kit.publish(settings, records)
    old = worker_factory(settings, "old", env=fault("stop", 4))
    deadline = time.monotonic() + 60
    while not stopped(old):
        assert old.alive(), old.log()
        assert time.monotonic() < deadline, old.log()
        time.sleep(0.2)
    new = worker_factory(settings, "new")
    # The old one's session expires and the new one (instance slot 1) holds everything.
    members_are(settings, new.app_id, {f"{new.app_id}-{socket.gethostname()}-1"})
    old.process.send_signal(signal.SIGCONT)  # wakes up inside its open transaction
    found = kit.collect(settings, len(records), [new])
    deadline = time.monotonic() + 30
    while "micro-batch aborted" not in old.log_path.read_text():
        assert time.monotonic() < deadline, old.log()
        time.sleep(0.2)
    new.stop()
    old.stop()
    assert_exactly_once(settings, found, kit.oracle(settings, records))
