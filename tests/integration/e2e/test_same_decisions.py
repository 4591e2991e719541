"""Same input, same decisions: a generated stream decided under faults lands identically.

One generated raw stream (bursts of one user, backfill stretches where event
time runs hours ahead of the wall clock, email opens, order ids shared by
users on different partitions, client retries of the same record) is
published once to ``events.raw``. Each run below decides it with its own
consumer group, output topics and ClickHouse database, worker(s) and sink:

(a) one worker, undisturbed;
(b) a worker killed with SIGKILL at random commits (after the flush, before
    the offsets), restarted each time;
(c) workers joining and leaving while it runs;
(d) the run of (a), then ``eventsieve replay`` of time ranges over it.

Every run must leave in ClickHouse the same final decision (accepted, or
dropped with its reason) for every event id. The generator's seed is in the
failure message (``EVENTSIEVE_TEST_SEED`` repeats a run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clickhouse_driver import Client
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from pydantic import SecretStr

from eventsieve.config import Settings, settings_environment
from eventsieve.kafka import admin_client, ensure_topics, topic_names
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import RawEvent, new_raw_event
from schemas.topology import rekey_topic
from sinks.migrate import migrate
from sinks.service import connect
from streams.partitioning import partition_for

ROOT = Path(__file__).resolve().parents[3]
EVENTSIEVE = Path(sys.executable).with_name("eventsieve")
MINUTE = 60_000

# Loaded into workers through PYTHONPATH. EVENTSIEVE_TEST_SLOW_MS slows every
# raw decision (so faults land mid-stream); EVENTSIEVE_TEST_KILL_AT kills the
# process at that commit, after the flush and before the offsets go.
FAULTS = """
import os
import signal
import time

_slow = float(os.environ.get("EVENTSIEVE_TEST_SLOW_MS", "0")) / 1000
_kill_at = int(os.environ.get("EVENTSIEVE_TEST_KILL_AT", "0"))

if _slow:
    from streams.processor import Processor

    _on_raw = Processor.on_raw

    def _slow_on_raw(self, *args, **kwargs):
        time.sleep(_slow)
        return _on_raw(self, *args, **kwargs)

    Processor.on_raw = _slow_on_raw

if _kill_at:
    _commits = [0]

    def _count():
        _commits[0] += 1
        if _commits[0] == _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    if os.environ.get("EVENTSIEVE_STREAMS__ENGINE") == "faust":
        from faust.transport.drivers.aiokafka import Consumer

        _commit = Consumer._commit

        async def _faulty_commit(self, offsets):
            _count()
            return await _commit(self, offsets)

        Consumer._commit = _faulty_commit
    else:
        from streams.engine import Engine

        _finish = Engine._finish

        def _faulty_finish(self):
            _count()
            return _finish(self)

        Engine._finish = _faulty_finish
"""


# -- the generated stream ----------------------------------------------------------


@dataclass(frozen=True)
class Published:
    event_ids: frozenset[str]
    first_time: int
    last_time: int


def generate(rng: random.Random, count: int) -> list[RawEvent]:
    """Events in publishing order; each user's records go to that user's partition."""
    users = [f"u{n}-{uuid.uuid4().hex[:6]}" for n in range(40)]
    orders = [f"ord-{n}" for n in range(25)]  # shared across users, so across partitions
    now = int(time.time() * 1000)
    clock = now - 3 * 24 * 60 * MINUTE  # a backfill: starts three days ago
    events: list[RawEvent] = []
    while len(events) < count:
        # A stretch of traffic: live-like (seconds apart) or a backfill (minutes apart:
        # hours of event time in a few hundred records, far ahead of the wall clock).
        step = rng.choice([2_000, 15_000, 4 * MINUTE])
        for _ in range(rng.randint(20, 80)):
            clock += rng.randint(0, step)
            user = rng.choice(users)
            kind = rng.random()
            if kind < 0.10:  # a burst: one user, the same few events within seconds
                name = rng.choice(["Report Exported", "Viewed Product"])
                for _ in range(rng.randint(2, 6)):
                    clock += rng.randint(0, 3_000)
                    events.append(_event(user, name, clock, {"p": rng.choice(["a", "b"])}))
                continue
            if kind < 0.25:
                props = {"campaignId": rng.choice(["c1", "c2"])}
                events.append(_event(user, "email_open", clock, props))
            elif kind < 0.35:
                props = {"orderId": rng.choice(orders)}
                events.append(_event(user, "confirmation", clock, props))
            else:
                props = {"p": str(rng.randint(0, 3))}
                events.append(_event(user, rng.choice(["Signup", "Viewed Product"]), clock, props))
            if rng.random() < 0.05:  # a client retry: the very same event, a moment later
                events.append(dict(events[-1]))  # type: ignore[arg-type]
    return events


def _event(user: str, name: str, at: int, properties: dict[str, str]) -> RawEvent:
    return new_raw_event(
        project="demo",
        name=name,
        user_id=user,
        timestamp=at,
        received_at=at,
        properties=properties,
    )


def publish(settings: Settings, events: list[RawEvent]) -> Published:
    partitions = settings.topics.partitions
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap(settings), "enable.idempotence": True}
    )
    for event in events:
        key = topic_key(event["project"], event["user_id"]).encode()
        producer.produce(
            settings.topics.raw,
            key=key,
            value=encode_raw(event),
            partition=partition_for(key, partitions),
        )
    assert producer.flush(30) == 0
    times = [e["timestamp"] for e in events]
    return Published(frozenset(e["event_id"] for e in events), min(times), max(times))


# -- one run: its topics, group, database and processes -------------------------------


class Run:
    """Workers and a sink deciding the shared raw topic into outputs of their own."""

    def __init__(
        self, base: Settings, engine: str, label: str, workdir: Path, faults: Path
    ) -> None:
        tag = f"{label}{uuid.uuid4().hex[:6]}"
        prefix = base.topics.raw.removesuffix("events.raw") + tag + "."
        topics = base.topics.model_copy(
            update={n: prefix + f"events.{n}" for n in ("orders", "clean", "dropped", "dlq")}
        )
        self.database = f"{base.clickhouse.database}_{tag}"
        base_url = base.clickhouse.url.get_secret_value()
        url = base_url.rsplit("/", 1)[0] + "/" + self.database
        self.settings = base.model_copy(
            update={
                "topics": topics,
                "streams": base.streams.model_copy(
                    update={
                        "engine": engine,
                        "app_id": f"same-{tag}",
                        "session_timeout_s": 6.0,
                        "batch_size": 100,
                    }
                ),
                "sink": base.sink.model_copy(
                    update={"group_id": f"same-sink-{tag}", "batch_max_interval_s": 0.3}
                ),
                "clickhouse": base.clickhouse.model_copy(
                    update={"url": SecretStr(url), "database": self.database}
                ),
            }
        )
        self.workdir = workdir / tag
        self.workdir.mkdir(parents=True)
        self.faults = faults
        self.processes: list[subprocess.Popen[bytes]] = []
        self.admin = Client.from_url(base_url)
        self.admin.execute(f"CREATE DATABASE {self.database}")
        # The schema first, as `eventsieve run` does: the workers may decide
        # everything before the sink process has started and migrated.
        ch = connect(self.settings)
        try:
            migrate(ch, self.settings.sink.dedup_window, self.settings.clickhouse.cluster)
        finally:
            ch.close()
        ensure_topics(kafka_bootstrap(self.settings), topic_names(topics)[1:], topics.partitions)

    def start(self, command: str, **env: str) -> subprocess.Popen[bytes]:
        n = len(self.processes)
        out = (self.workdir / f"{command}-{n}.log").open("wb")
        process = subprocess.Popen(
            [str(EVENTSIEVE), command],
            env={
                **os.environ,
                **settings_environment(self.settings),
                "EVENTSIEVE_STREAMS__DATA_DIR": str(self.workdir / f"data-{n}"),
                "EVENTSIEVE_LOG_FORMAT": "json",
                "EVENTSIEVE_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(self.faults),
                **env,
            },
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.processes.append(process)
        return process

    def worker(self, **env: str) -> subprocess.Popen[bytes]:
        return self.start("worker", **env)

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )

    def progress(self) -> float:
        """The share of raw records the worker group has committed."""
        done, total = _committed_vs_end(
            self.settings, self.settings.streams.app_id, [self.settings.topics.raw]
        )
        return done / total if total else 1.0

    def wait(self, condition, what: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f}s\n{self.logs()}")
            time.sleep(0.3)

    def decided(self) -> bool:
        """Every raw record through the user pipeline: the worker group committed them all.

        (Not the orders topic: written in transactions, it ends in a commit
        marker no consumer commits past. An order event's decision comes from
        that hop, so ``decisions`` waits for every event id instead.)
        """
        return self.progress() >= 1.0

    def decisions(self, expected: int) -> dict[str, tuple[str, str]]:
        """Each event id's latest decision in ClickHouse, once the sink has written them all.

        Not "the sink committed everything": after transactional outputs the
        last offset of a partition is a commit marker no consumer commits past.
        So: every raw record decided, ``expected`` ids in ClickHouse, and
        nothing changing for 3 s (the sink flushes every 0.3 s).
        """
        self.wait(self.decided, "every record decided")
        deadline = time.monotonic() + 120
        last: dict[str, tuple[str, str]] = {}
        stable_since = time.monotonic()
        while True:
            rows = self.admin.execute(
                "SELECT event_id, toString(argMax(decision, version)),"
                f" argMax(drop_reason, version) FROM {self.database}.events GROUP BY event_id"
            )
            found = {event_id: (decision, reason) for event_id, decision, reason in rows}
            if found != last:
                last, stable_since = found, time.monotonic()
            elif len(found) >= expected and time.monotonic() - stable_since >= 3:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"{len(found)}/{expected} ids in ClickHouse\n{self.logs()}")
            time.sleep(0.5)

    def history(self, event_ids: list[str]) -> str:
        """Every row of ``event_ids`` (each decision made), for a failure message."""
        rows = self.admin.execute(
            "SELECT event_id, name, toString(decision), drop_reason, drop_detail, event_time,"
            f" source_partition, source_offset, decided_at_ms FROM {self.database}.events"
            " WHERE event_id IN %(ids)s ORDER BY event_id, decided_at_ms",
            {"ids": tuple(event_ids)},
        )
        return "\n".join(" | ".join(str(v) for v in row) for row in rows)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.admin.execute(f"DROP DATABASE IF EXISTS {self.database}")
        self.admin.disconnect()
        s = self.settings
        admin = admin_client(kafka_bootstrap(s))
        internal = [
            t for t in admin.list_topics(timeout=10).topics if t.startswith(s.streams.app_id)
        ]
        # Each name once: a repeated name fails the whole request (and, seen here,
        # can crash the client when its results come back).
        names = sorted({*topic_names(s.topics)[1:], rekey_topic(s), *internal})
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()


def _committed_vs_end(settings: Settings, group: str, topics: list[str]) -> tuple[int, int]:
    """(sum of the group's committed offsets, sum of the end offsets) over ``topics``."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(settings),
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in range(settings.topics.partitions)
        ]
        done = total = 0
        try:
            for tp in consumer.committed(partitions, timeout=10):
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                total += high - low
                done += max(tp.offset, low) - low if tp.offset >= 0 else 0
        except KafkaException:  # a topic created a moment ago: no leader yet
            return 0, 1
        return done, total
    finally:
        consumer.close()


@pytest.fixture
def runs(pipeline_settings: Settings, tmp_path: Path, engine: str) -> Iterator:
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "sitecustomize.py").write_text(FAULTS)
    started: list[Run] = []

    def make(label: str) -> Run:
        run = Run(pipeline_settings, engine, label, tmp_path, faults)
        started.append(run)
        return run

    yield make
    for run in started:
        run.close()


@pytest.fixture(params=["kafka", "faust"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the property -------------------------------------------------------------------


def test_every_run_of_a_generated_stream_lands_the_same_decisions(
    pipeline_settings: Settings, runs, engine: str
) -> None:
    seed = int(os.environ.get("EVENTSIEVE_TEST_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    published = publish(pipeline_settings, generate(rng, 1_500))
    slow = {"EVENTSIEVE_TEST_SLOW_MS": "3"}  # ~5 s of deciding: time for faults

    # (a) undisturbed
    clean_run = runs("a")
    clean_run.start("sink")
    clean_run.worker()
    reference = clean_run.decisions(len(published.event_ids))
    assert set(reference) == published.event_ids, f"seed {seed}"
    reasons = {r for d, r in reference.values() if d == "dropped"}
    # The stream exercises every stateful rule (a generator that stops doing so fails here).
    assert {"duplicate", "email_open_throttled", "duplicate_order"} <= reasons, (seed, reasons)

    # (d) replay of time ranges over the undisturbed run
    span = published.last_time - published.first_time
    for start, end in [(0.0, 0.4), (0.3, 1.0)]:
        low = published.first_time + int(span * start)
        high = published.first_time + int(span * end) + 1_000
        replayed = subprocess.run(
            [
                str(EVENTSIEVE),
                "replay",
                "--from",
                _iso(low),
                "--to",
                _iso(high),
                "--state-dir",
                str(clean_run.workdir / "replay"),
            ],
            env={**os.environ, **settings_environment(clean_run.settings)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    _same_as_reference(reference, clean_run, clean_run, f"seed {seed}: replay")

    # (b) kill -9 at random commits
    crashes = runs("b")
    crashes.start("sink")
    for _ in range(3):
        kill_at = rng.randint(2, 6)
        victim = crashes.worker(**slow, EVENTSIEVE_TEST_KILL_AT=str(kill_at))
        crashes.wait(
            lambda v=victim: v.poll() is not None or crashes.progress() >= 1.0,
            f"the kill at commit {kill_at}",
        )
    crashes.worker()
    _same_as_reference(reference, clean_run, crashes, f"seed {seed}: kill -9")

    # (c) workers joining and leaving while it runs
    moving = runs("c")
    moving.start("sink")
    first = moving.worker(**slow)
    moving.wait(lambda: moving.progress() > 0.1, "10% decided")
    moving.worker(**slow)  # joins
    moving.wait(lambda: moving.progress() > 0.4, "40% decided")
    first.send_signal(signal.SIGTERM)  # leaves
    first.wait(60)
    moving.worker(**slow)  # joins
    _same_as_reference(reference, clean_run, moving, f"seed {seed}: rebalances")


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _same_as_reference(reference: dict, clean_run: Run, run: Run, label: str) -> None:
    differences = _differences(reference, run.decisions(len(reference)))
    if differences:
        ids = sorted(differences)[:5]
        # ... and the events their reference drops name (the anchor that dropped them).
        ids += re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", clean_run.history(ids))
        ids = sorted(set(ids))
        pytest.fail(
            f"{label}: {len(differences)} event ids decided otherwise: {differences}\n"
            f"reference rows:\n{clean_run.history(ids)}\nthis run's rows:\n{run.history(ids)}"
        )


def _differences(
    expected: dict[str, tuple[str, str]], found: dict[str, tuple[str, str]]
) -> dict[str, tuple[tuple[str, str] | None, tuple[str, str] | None]]:
    return {
        event_id: (expected.get(event_id), found.get(event_id))
        for event_id in expected.keys() | found.keys()
        if expected.get(event_id) != found.get(event_id)
    }
