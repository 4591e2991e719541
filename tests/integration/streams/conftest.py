"""Helpers for the stream integration tests: real worker processes, real topics.

- ``worker_factory(settings)`` starts ``eventsieve worker`` as a subprocess
  configured through environment variables (so ``kill -9`` is real);
- ``publish(settings, records)`` writes records to ``events.raw`` on the
  partition each one names;
- ``collect(settings, want, workers)`` reads events.clean/dropped/dlq until
  ``want`` distinct records are decided, failing early if a worker dies;
- ``oracle(settings, records)`` decides the same records with the pure
  Processor and in-memory state: what every worker run must reproduce.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, ConsumerGroupState, Producer
from confluent_kafka.admin import AdminClient

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from schemas.codecs import decode_clean, decode_dlq, decode_dropped
from streams.processor import Processor, Record, Sink
from streams.state import InMemoryState

ROOT = Path(__file__).resolve().parents[3]
EVENTSIEVE = Path(sys.executable).with_name("eventsieve")
LOGLEVEL_ENV = "EVENTSIEVE_TEST_WORKER_LOGLEVEL"  # e.g. "info" when debugging a failure


@dataclass(frozen=True)
class Raw:
    """One record to publish: its partition, key and bytes."""

    partition: int
    key: bytes | None
    value: bytes


Decision = tuple[str, str]
"""("clean", "") | ("dropped", reason) | ("dlq", error_type)"""


@dataclass
class Decisions:
    """What came out, by id: event id for clean/dropped, ``topic/partition/offset`` for dlq."""

    by_id: dict[str, list[Decision]] = field(default_factory=dict)

    def add(self, ident: str, decision: Decision) -> None:
        self.by_id.setdefault(ident, []).append(decision)

    def final(self) -> dict[str, Decision]:
        return {ident: found[-1] for ident, found in self.by_id.items()}

    def inconsistent(self) -> dict[str, list[Decision]]:
        """Ids decided more than once *differently* (re-deciding the same way is fine)."""
        return {i: d for i, d in self.by_id.items() if len(set(d)) > 1}


def worker_env(settings: Settings, app_id: str, data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "EVENTSIEVE_CONFIG": str(ROOT / "eventsieve.toml"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(settings),
        "EVENTSIEVE_STREAMS__APP_ID": app_id,
        "EVENTSIEVE_STREAMS__DATA_DIR": str(data_dir),
        "EVENTSIEVE_STREAMS__STORE": settings.streams.store,
        "EVENTSIEVE_STREAMS__ENGINE": settings.streams.engine,
        "EVENTSIEVE_STREAMS__BATCH_SIZE": str(settings.streams.batch_size),
        "EVENTSIEVE_STREAMS__BATCH_INTERVAL_MS": str(settings.streams.batch_interval_ms),
        "EVENTSIEVE_STREAMS__TRANSACTION_TIMEOUT_S": str(settings.streams.transaction_timeout_s),
        "EVENTSIEVE_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "EVENTSIEVE_PROJECTS": orjson.dumps(
            [p.model_dump(mode="json") for p in settings.projects]
        ).decode(),
        "EVENTSIEVE_LOG_FORMAT": "json",
        # Fail over fast after kill -9 (the broker's minimum is 6 s).
        "EVENTSIEVE_STREAMS__SESSION_TIMEOUT_S": "6",
    }
    for name in ("raw", "orders", "clean", "dropped", "dlq"):
        env[f"EVENTSIEVE_TOPICS__{name.upper()}"] = getattr(settings.topics, name)
    return env


class Worker:
    """A worker subprocess with its log file."""

    def __init__(
        self,
        settings: Settings,
        app_id: str,
        workdir: Path,
        label: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.app_id = app_id
        self.bootstrap = kafka_bootstrap(settings)
        self.log_path = workdir / f"{label}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(EVENTSIEVE), "worker", "--loglevel", os.environ.get(LOGLEVEL_ENV, "warning")],
            env={**worker_env(settings, app_id, workdir / "data"), **(env or {})},
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


ENGINES = ("kafka", "faust")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every stream test runs on both engines unless it asks for one (``engine`` override)."""
    return str(request.param)


@pytest.fixture
def test_settings(test_settings: Settings, engine: str) -> Settings:
    """The root ``test_settings`` with this test's stream engine."""
    return test_settings.model_copy(
        update={"streams": test_settings.streams.model_copy(update={"engine": engine})}
    )


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator:
    started: list[Worker] = []
    app_id = f"streams-test-{uuid.uuid4().hex[:8]}"

    def start(
        settings: Settings, label: str = "worker", env: dict[str, str] | None = None
    ) -> Worker:
        worker = Worker(settings, app_id, tmp_path, f"{label}-{len(started)}", env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    if started:
        _delete_internal_topics(started[0].bootstrap, app_id)


def _delete_internal_topics(bootstrap: str, app_id: str) -> None:
    """Faust's changelog/assignor topics and the re-key topic, all named ``<app_id>-...``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{app_id}-")]
    if names:
        for future in admin.delete_topics(names, operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result()


def publish(settings: Settings, records: Sequence[Raw]) -> None:
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap(settings), "enable.idempotence": True}
    )
    for r in records:
        producer.produce(settings.topics.raw, key=r.key, value=r.value, partition=r.partition)
    assert producer.flush(30) == 0


def wait_for_group(settings: Settings, workers: Sequence[Worker], timeout: float = 60.0) -> None:
    """Wait until every worker is a member of the (stable) consumer group."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(settings)})
    group = workers[0].app_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            assert w.alive(), f"worker died:\n{w.log()}"
        found = admin.describe_consumer_groups([group])[group].result()
        if found.state == ConsumerGroupState.STABLE and len(found.members) == len(workers):
            return
        time.sleep(0.5)
    pytest.fail(f"group {group} not stable with {len(workers)} members in {timeout}s")


def collect(
    settings: Settings, want: int, workers: Sequence[Worker], timeout: float = 90.0
) -> Decisions:
    """Read the three output topics from the start until ``want`` ids are decided."""
    topics = settings.topics
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(settings),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topics.clean, topics.dropped, topics.dlq])
    found = Decisions()
    deadline = time.monotonic() + timeout
    try:
        while len(found.by_id) < want:
            if time.monotonic() > deadline:
                logs = "\n".join(w.log() for w in workers)
                pytest.fail(f"only {len(found.by_id)}/{want} decided in {timeout}s\n{logs}")
            for w in workers:
                assert w.alive(), f"worker died:\n{w.log()}"
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                topic, value = message.topic(), message.value()
                if topic == topics.clean:
                    found.add(decode_clean(value)["event_id"], ("clean", ""))
                elif topic == topics.dropped:
                    event = decode_dropped(value)
                    found.add(event["event_id"], ("dropped", event["reason"]))
                else:
                    dlq = decode_dlq(value)
                    ident = f"{dlq['topic']}/{dlq['partition']}/{dlq['offset']}"
                    found.add(ident, ("dlq", dlq["error_type"]))
    finally:
        consumer.close()
    return found


def oracle(settings: Settings, records: Sequence[Raw]) -> dict[str, Decision]:
    """The decisions of the pure Processor over ``records`` in per-partition order.

    Valid when every order id's events come from one raw partition (then
    their order on events.orders is fixed too).
    """
    processor = Processor(settings)
    user_state, order_state = InMemoryState(), InMemoryState()
    offsets: dict[int, int] = {}
    out: dict[str, Decision] = {}
    pending = [
        r for p in sorted({r.partition for r in records}) for r in records if r.partition == p
    ]
    for r in pending:
        offset = offsets.get(r.partition, 0)
        offsets[r.partition] = offset + 1
        record = Record(settings.topics.raw, r.partition, offset, r.key, r.value, None)
        outcome = processor.on_raw(record, user_state)
        if outcome.sink is Sink.REKEY:
            [o] = outcome.outputs
            outcome = processor.on_raw(
                Record("rekey", o.partition or 0, 0, o.key, o.value),
                user_state,
                check_partition=False,
            )
        if outcome.sink is Sink.ORDERS:
            [o] = outcome.outputs
            outcome = processor.on_order(
                Record("orders", o.partition or 0, 0, o.key, o.value), order_state
            )
        if outcome.sink is Sink.DLQ:
            out[f"{record.topic}/{record.partition}/{record.offset}"] = ("dlq", outcome.error or "")
        elif outcome.sink is Sink.DROPPED:
            assert outcome.dropped is not None
            out[outcome.event_id or ""] = ("dropped", outcome.dropped.reason.value)
        else:
            out[outcome.event_id or ""] = ("clean", "")
    return out


def injected(directory: Path, code: str) -> dict[str, str]:
    """The environment that loads ``code`` into a worker process (as its ``sitecustomize``).

    How the tests inject a fault (a kill at a chosen moment, a failing rule)
    into a real worker process without touching the product's code.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": str(directory)}


@dataclass(frozen=True)
class Kit:
    """The helpers above, as one fixture (test modules cannot import conftest)."""

    Raw: type[Raw] = Raw
    publish = staticmethod(publish)
    collect = staticmethod(collect)
    wait_for_group = staticmethod(wait_for_group)
    oracle = staticmethod(oracle)
    injected = staticmethod(injected)


@pytest.fixture
def kit() -> Kit:
    return Kit()
