"""The sink end to end on the real broker and the real ClickHouse server.

Most tests run the sink as a real process (``eventsieve sink``), configured
through the environment exactly like a deployment; the DLQ and profile tests
run the writer in a thread of the test process, which is the same code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from eventsieve.config import Settings, StackSettings
from ops.stack import ClickHouseServer
from ops.stack.kafka import cache_root
from ops.stack.maven import resolve_jars
from ops.stack.process import ManagedProcess, port_in_use
from schemas import registry
from schemas.codecs import decode_clean, decode_dlq, decode_dropped, encode_clean, encode_dropped
from schemas.columns import decoder
from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import DropReason, Stage
from sinks import queries
from sinks.blocks import Revenue, events_block, suspects
from sinks.clickhouse import ClickHouse
from sinks.ddl import EVENT_COLUMNS
from sinks.errors import ClickHouseUnavailableError
from sinks.metrics import SinkMetrics
from sinks.migrate import migrate
from sinks.rows import Batch, Decision
from sinks.service import build_writer, migrate_when_ready

ROOT = Path(__file__).resolve().parents[3]
CLI = (sys.executable, "-c", "from ops.cli import main; main()")
T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z
# Every event below falls in this range.
SPAN = queries.TimeRange(
    dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
)


# -- helpers ---------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def clean(i: int, project: str = "demo", **fields: Any) -> dict:
    user = f"user-{i % 37}"
    raw = new_raw_event(
        project=project,
        name=fields.pop("name", f"event-{i % 5}"),
        event_id=fields.pop("event_id", f"ev-{uuid.uuid4()}"),
        timestamp=fields.pop("timestamp", T0 + i),
        received_at=T0 + i,
        properties={"i": str(i)},
        **fields,
    )
    return dict(clean_event(raw, normalised_name="x", user_key=user, decided_at=T0 + 10 * i))


def dropped(i: int, reason: str = DropReason.BOT) -> dict:
    raw = new_raw_event(
        project="demo",
        name="pageview",
        event_id=f"dr-{uuid.uuid4()}",
        timestamp=T0 + i,
        received_at=T0 + i,
    )
    return dict(
        dropped_event(raw, reason=reason, stage=Stage.BOT, decided_at=T0 + 10 * i, user_key="bot")
    )


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None = None):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for n, value in enumerate(values):
        key = keys[n] if keys else str(n % 11).encode()
        producer.produce(topic, key=key, value=value)
        if n % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def committed_total(bootstrap: str, group: str, topics: list[str]) -> int:
    """Sum of the group's committed offsets over every partition of ``topics``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(timeout=10)
        tps = [
            TopicPartition(topic, p) for topic in topics for p in metadata.topics[topic].partitions
        ]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def distinct_events(ch: ClickHouse) -> int:
    try:
        return queries.event_count(ch)
    except ClickHouseUnavailableError:
        return -1


def scrape(port: int, sample: str) -> float:
    """One sample's value from a Prometheus /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
    return 0.0


class SinkProcess:
    """``eventsieve sink`` as a child process, configured through its environment."""

    def __init__(self, settings: Settings, group: str, log: Path, **env: str) -> None:
        topics = settings.topics
        self.env = {
            **os.environ,
            "EVENTSIEVE_CONFIG": str(ROOT / "eventsieve.toml"),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers or "",
            "CLICKHOUSE_URL": env.pop("clickhouse_url", None)
            or settings.clickhouse.url.get_secret_value(),  # type: ignore[union-attr]
            "EVENTSIEVE_CLICKHOUSE__DATABASE": settings.clickhouse.database,
            "EVENTSIEVE_TOPICS__CLEAN": topics.clean,
            "EVENTSIEVE_TOPICS__DROPPED": topics.dropped,
            "EVENTSIEVE_TOPICS__DLQ": topics.dlq,
            "EVENTSIEVE_TOPICS__PARTITIONS": str(topics.partitions),
            "EVENTSIEVE_SINK__GROUP_ID": group,
            "EVENTSIEVE_SINK__BATCH_MAX_ROWS": "2000",
            "EVENTSIEVE_SINK__BATCH_MAX_INTERVAL_S": "0.3",
            "EVENTSIEVE_SINK__RETRY_INITIAL_S": "0.2",
            "EVENTSIEVE_SINK__RETRY_MAX_S": "1",
            "EVENTSIEVE_LOG_FORMAT": "json",
            **env,
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*CLI, "sink"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., SinkProcess]]:
    started: list[SinkProcess] = []

    def make(settings: Settings, group: str, **env: str) -> SinkProcess:
        sink = SinkProcess(settings, group, tmp_path / f"sink-{len(started)}.log", **env)
        started.append(sink)
        return sink

    yield make
    for sink in started:
        if sink.alive():
            sink.proc.kill()  # type: ignore[union-attr]
            sink.proc.wait(10)  # type: ignore[union-attr]


@pytest.fixture
def ch(test_settings: Settings, clickhouse_url: str) -> Iterator[ClickHouse]:
    client = ClickHouse(clickhouse_url, test_settings.clickhouse.database)
    yield client
    client.close()


def fill(settings: Settings, accepted: int, dropped_n: int) -> None:
    bootstrap = settings.kafka.bootstrap_servers or ""
    produce(bootstrap, settings.topics.clean, [encode_clean(clean(i)) for i in range(accepted)])
    produce(
        bootstrap, settings.topics.dropped, [encode_dropped(dropped(i)) for i in range(dropped_n)]
    )


# -- tests -----------------------------------------------------------------------


def test_n_events_give_n_rows_and_a_fresh_group_replay_counts_nothing_twice(
    test_settings: Settings, ch: ClickHouse, sinks: Callable[..., SinkProcess]
) -> None:
    accepted, dropped_n = 4_000, 1_000
    fill(test_settings, accepted, dropped_n)
    topics = [test_settings.topics.clean, test_settings.topics.dropped]
    bootstrap = test_settings.kafka.bootstrap_servers or ""

    first = sinks(test_settings, f"sink-{uuid.uuid4().hex[:8]}").start()
    wait_until(
        lambda: (
            committed_total(bootstrap, first.env["EVENTSIEVE_SINK__GROUP_ID"], topics)
            == accepted + dropped_n
        ),
        60,
        "the first sink to commit every record",
    )
    assert first.stop() == 0
    assert distinct_events(ch) == accepted + dropped_n
    stats = queries.project_stats(ch, "demo", SPAN)
    assert stats.accepted == accepted
    assert stats.dropped_by_reason == [("bot", dropped_n)]

    # The same topics again, from the start, by a new consumer group.
    second = sinks(test_settings, f"replay-{uuid.uuid4().hex[:8]}").start()
    wait_until(
        lambda: (
            committed_total(bootstrap, second.env["EVENTSIEVE_SINK__GROUP_ID"], topics)
            == accepted + dropped_n
        ),
        60,
        "the replaying sink to commit every record",
    )
    assert second.stop() == 0
    assert distinct_events(ch) == accepted + dropped_n
    assert queries.project_stats(ch, "demo", SPAN) == stats

    # What an operator sees.
    shown = subprocess.run(
        [*CLI, "stats", "-p", "demo", "--from", "2025-01-01", "--to", "2027-01-01"],
        env=second.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"accepted {accepted:,}" in shown
    assert f"dropped {dropped_n:,}" in shown
    assert "unique users 37" in shown


def test_kill_9_between_insert_and_commit_loses_and_doubles_nothing(
    test_settings: Settings, ch: ClickHouse, sinks: Callable[..., SinkProcess]
) -> None:
    n = 3_000
    fill(test_settings, n, 0)
    topics = [test_settings.topics.clean]
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    group = f"sink-{uuid.uuid4().hex[:8]}"

    doomed = sinks(test_settings, group, EVENTSIEVE_SINK_FAILPOINT="after_insert").start()
    wait_until(lambda: "failpoint reached" in doomed.output(), 60, "the failpoint")
    # The batch is in ClickHouse, its offsets are not committed: kill -9 now.
    inserted = ch.scalar(f"SELECT count() FROM {ch.database}.events")
    assert inserted > 0
    assert committed_total(bootstrap, group, topics) == 0
    doomed.kill9()

    survivor = sinks(test_settings, group).start()
    wait_until(lambda: committed_total(bootstrap, group, topics) == n, 60, "the restarted sink")
    assert survivor.stop() == 0
    assert distinct_events(ch) == n
    assert queries.project_stats(ch, "demo", SPAN).accepted == n


def test_two_sinks_in_one_group_share_the_work_through_a_rebalance(
    test_settings: Settings,
    ch: ClickHouse,
    sinks: Callable[..., SinkProcess],
    free_ports: Callable[[int], list[int]],
) -> None:
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    topic = test_settings.topics.clean
    group = f"sink-{uuid.uuid4().hex[:8]}"
    ports = free_ports(2)
    first = sinks(test_settings, group, EVENTSIEVE_SINK__METRICS_PORT=str(ports[0])).start()
    produce(bootstrap, topic, [encode_clean(clean(i)) for i in range(2_000)])
    wait_until(lambda: distinct_events(ch) > 0, 60, "the first sink to write")
    second = sinks(test_settings, group, EVENTSIEVE_SINK__METRICS_PORT=str(ports[1])).start()
    wait_until(lambda: "partitions revoked" in first.output(), 60, "the rebalance")
    wait_until(lambda: "partitions assigned" in second.output(), 60, "the second sink's share")
    produce(bootstrap, topic, [encode_clean(clean(i)) for i in range(2_000, 4_000)])
    wait_until(lambda: committed_total(bootstrap, group, [topic]) == 4_000, 90, "every commit")
    assert first.alive()
    assert second.alive()
    # Both wrote rows: the work really was shared (read from their /metrics).
    written = [scrape(port, 'eventsieve_sink_rows_written_total{table="events"}') for port in ports]
    assert all(n > 0 for n in written), written
    assert sum(written) >= 4_000
    assert first.stop() == 0
    assert second.stop() == 0
    assert distinct_events(ch) == 4_000
    assert queries.project_stats(ch, "demo", SPAN).accepted == 4_000


@pytest.fixture
def private_clickhouse(
    tmp_path: Path, free_ports: Callable[[int], list[int]]
) -> Iterator[ClickHouseServer]:
    """A ClickHouse server of this test alone (not started yet), stopped at the end."""
    tcp, http = free_ports(2)
    stack = StackSettings(dir=tmp_path / "stack", clickhouse_port=tcp, clickhouse_http_port=http)
    server = ClickHouseServer(stack)
    yield server
    server.stop()


def test_clickhouse_outage_under_load_loses_nothing_and_the_sink_survives(
    test_settings: Settings,
    sinks: Callable[..., SinkProcess],
    private_clickhouse: ClickHouseServer,
) -> None:
    database = test_settings.clickhouse.database
    url = f"clickhouse://default:@127.0.0.1:{private_clickhouse.port}/default"
    ch = ClickHouse(url, database)
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    topic = test_settings.topics.clean
    group = f"sink-{uuid.uuid4().hex[:8]}"
    # The sink starts before ClickHouse does: it waits for it, it does not exit.
    sink = sinks(test_settings, group, clickhouse_url=url).start()
    wait_until(lambda: "ClickHouse not ready" in sink.output(), 60, "the sink to wait")
    assert sink.alive()
    private_clickhouse.start()
    private_clickhouse.wait_ready(60)

    per_chunk = 500
    produced = [0]
    stop_loading = threading.Event()

    def load() -> None:
        """Produce chunk after chunk until told to stop: load before, during and after."""
        chunk = 0
        while not stop_loading.is_set():
            values = [encode_clean(clean(chunk * per_chunk + i)) for i in range(per_chunk)]
            produce(bootstrap, topic, values)
            produced[0] += per_chunk
            chunk += 1
            time.sleep(0.2)  # pacing of the load generator, not a wait for the sink

    def more_load(chunks: int) -> Callable[[], bool]:
        mark = produced[0]
        return lambda: produced[0] >= mark + chunks * per_chunk

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        wait_until(lambda: distinct_events(ch) > 0, 60, "the first rows")
        private_clickhouse.stop()  # ClickHouse goes away in the middle of the load
        wait_until(lambda: "flush failed, retrying" in sink.output(), 60, "a failed flush")
        wait_until(more_load(3), 60, "more load during the outage")
        assert sink.alive(), sink.output()[-2000:]
        private_clickhouse.start()
        private_clickhouse.wait_ready(60)
        wait_until(more_load(3), 60, "more load after the outage")
    finally:
        stop_loading.set()
        loader.join(60)
    total = produced[0]
    wait_until(
        lambda: committed_total(bootstrap, group, [topic]) == total, 90, "every record committed"
    )
    assert sink.alive()
    assert distinct_events(ch) == total
    assert queries.project_stats(ch, "demo", SPAN).accepted == total
    assert sink.stop() == 0
    ch.close()


def test_the_sink_writes_within_seconds_of_clickhouse_answering_again(
    test_settings: Settings,
    sinks: Callable[..., SinkProcess],
    private_clickhouse: ClickHouseServer,
) -> None:
    """However long the backoff has grown, a cheap probe ends the wait once the server answers.

    Before, the sink slept out its backoff (up to retry_max_s) and wrote again
    3-18 s after ClickHouse was back.
    """
    url = f"clickhouse://default:@127.0.0.1:{private_clickhouse.port}/default"
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    topic = test_settings.topics.clean
    group = f"sink-{uuid.uuid4().hex[:8]}"
    private_clickhouse.start()
    private_clickhouse.wait_ready(60)
    backoff = {"EVENTSIEVE_SINK__RETRY_INITIAL_S": "20", "EVENTSIEVE_SINK__RETRY_MAX_S": "30"}
    sink = sinks(test_settings, group, clickhouse_url=url, **backoff).start()
    produce(bootstrap, topic, [encode_clean(clean(i)) for i in range(100)])
    wait_until(lambda: committed_total(bootstrap, group, [topic]) == 100, 60, "the first rows")
    private_clickhouse.stop()
    produce(bootstrap, topic, [encode_clean(clean(100 + i)) for i in range(100)])
    wait_until(lambda: "flush failed, retrying" in sink.output(), 60, "a failed flush")
    private_clickhouse.start()
    private_clickhouse.wait_ready(60)
    answered = time.monotonic()
    wait_until(lambda: committed_total(bootstrap, group, [topic]) == 200, 60, "the rest")
    resumed_after = time.monotonic() - answered
    assert sink.alive(), sink.output()[-2000:]
    assert resumed_after < 5.0, f"wrote {resumed_after:.1f} s after ClickHouse answered"
    assert sink.stop() == 0


@contextlib.contextmanager
def running_writer(settings: Settings, metrics: SinkMetrics) -> Iterator[None]:
    """The sink's writer in a thread of this process (migrated first), stopped on exit."""
    stop = threading.Event()
    from sinks.service import connect

    migrator = connect(settings)
    assert migrate_when_ready(migrator, settings, stop)
    migrator.close()
    writer = build_writer(settings, metrics)
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def read_dlq(bootstrap: str, topic: str, wanted: int) -> list[dict]:
    """The first ``wanted`` DLQ records (decoded), waiting up to 30 s for them."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    records: list[dict] = []
    deadline = time.monotonic() + 30
    while len(records) < wanted and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            records.append(dict(decode_dlq(message.value())))
    consumer.close()
    return records


def test_poison_records_go_to_the_dlq_and_the_rest_is_written(
    test_settings: Settings, ch: ClickHouse
) -> None:
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    settings = test_settings.model_copy(
        update={
            "sink": test_settings.sink.model_copy(
                update={"group_id": f"sink-{uuid.uuid4().hex[:8]}", "batch_max_interval_s": 0.2}
            )
        }
    )
    good = [encode_clean(clean(i)) for i in range(50)]
    garbage = b"\xc3\x01not-avro-at-all"
    no_id = encode_clean({**clean(99), "event_id": ""})
    values = [*good[:20], garbage, *good[20:40], no_id, *good[40:]]
    produce(bootstrap, settings.topics.clean, values, keys=[b"k"] * len(values))
    metrics = SinkMetrics()

    with running_writer(settings, metrics):
        wait_until(
            lambda: (
                committed_total(bootstrap, settings.sink.group_id, [settings.topics.clean])
                == len(values)
            ),
            60,
            "every record committed",
        )
    assert distinct_events(ch) == 50

    records = read_dlq(bootstrap, settings.topics.dlq, 2)
    assert sorted(r["value"] for r in records) == sorted([garbage, no_id])
    assert {r["stage"] for r in records} == {"sink"}
    assert {r["topic"] for r in records} == {settings.topics.clean}
    by_value = {r["value"]: r for r in records}
    assert by_value[no_id]["error_type"] == "missing_field"
    assert by_value[garbage]["offset"] == 20
    assert metrics.dlq_records.labels("missing_field")._value.get() == 1


def test_records_clickhouse_rejects_are_parked_truncated_and_the_rest_is_written(
    test_settings: Settings, ch: ClickHouse
) -> None:
    """A batch the server refuses is split until the refused records stand alone.

    The column is narrowed after migration, as a schema drift would: values
    that no longer fit are refused on every retry. Before, the batch was
    retried forever (or the driver's error crashed the sink), and a refused
    record over 256 KB could not even be parked: its DLQ copy was too large.
    """
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    settings = test_settings.model_copy(
        update={
            "sink": test_settings.sink.model_copy(
                update={"group_id": f"sink-{uuid.uuid4().hex[:8]}", "batch_max_interval_s": 0.2}
            )
        }
    )
    migrate(ch)
    ch.execute(f"ALTER TABLE {ch.database}.events MODIFY COLUMN scroll_depth Nullable(Int8)")
    good = [encode_clean(clean(i, scroll_depth=50)) for i in range(60)]
    refused = encode_clean(clean(100, scroll_depth=300))
    huge = encode_clean(clean(101, scroll_depth=300, user_agent="x" * 700_000))
    values = [*good[:25], refused, *good[25:50], huge, *good[50:]]
    produce(bootstrap, settings.topics.clean, values, keys=[b"k"] * len(values))
    metrics = SinkMetrics()
    with running_writer(settings, metrics):
        wait_until(
            lambda: (
                committed_total(bootstrap, settings.sink.group_id, [settings.topics.clean])
                == len(values)
            ),
            90,
            "every record committed",
        )
    assert distinct_events(ch) == 60
    records = read_dlq(bootstrap, settings.topics.dlq, 2)
    assert sorted(r["offset"] for r in records) == [25, 51]
    assert {r["error_type"] for r in records} == {"clickhouse_rejected"}
    by_offset = {r["offset"]: r for r in records}
    assert by_offset[25]["value"] == refused
    assert len(by_offset[51]["value"]) == 256_000
    assert by_offset[51]["value"] == huge[:256_000]
    assert by_offset[51]["error"].startswith(f"value truncated to 256000 of {len(huge)} bytes")
    assert metrics.dlq_records.labels("clickhouse_rejected")._value.get() == 2


def test_users_keep_the_newest_profile_when_updates_arrive_out_of_order(
    test_settings: Settings, ch: ClickHouse
) -> None:
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    settings = test_settings.model_copy(
        update={
            "sink": test_settings.sink.model_copy(
                update={"group_id": f"sink-{uuid.uuid4().hex[:8]}", "batch_max_interval_s": 0.2}
            )
        }
    )

    def identify(i: int, ts: int, **fields: Any) -> bytes:
        return encode_clean(
            clean(i, name="identify", kind="identify", user_id="u1", timestamp=ts, **fields)
        )

    # Newest first: the order a slow client's retries or a replay can produce.
    values = [
        identify(1, T0 + 3_000, display_name="Third", user_properties={"plan": "team"}),
        identify(2, T0 + 1_000, display_name="First", email="first@example.com"),
        identify(3, T0 + 2_000, display_name="Second", user_properties={"plan": "pro"}),
    ]
    produce(bootstrap, settings.topics.clean, values, keys=[b"demo:u1"] * 3)
    with running_writer(settings, SinkMetrics()):
        wait_until(
            lambda: (
                committed_total(bootstrap, settings.sink.group_id, [settings.topics.clean]) == 3
            ),
            60,
            "every record committed",
        )
    (profile,) = queries.user_profiles(ch, "demo", ["u1"])
    assert profile.display_name == "Third"
    assert profile.email == "first@example.com"
    assert profile.properties == {"plan": "team"}
    assert profile.updated_at_ms == T0 + 3_000


# -- a replicated ClickHouse: one shard, two replicas, ZooKeeper --------------------

ZOOKEEPER_VERSION = "3.8.4"
ZOOKEEPER_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.eventsieve.tests</groupId>
  <artifactId>zookeeper</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.zookeeper</groupId>
      <artifactId>zookeeper</artifactId>
      <version>{version}</version>
    </dependency>
    <!-- Needed at run time, declared optional by ZooKeeper. -->
    <dependency>
      <groupId>io.dropwizard.metrics</groupId>
      <artifactId>metrics-core</artifactId>
      <version>4.1.12.1</version>
    </dependency>
    <dependency>
      <groupId>org.xerial.snappy</groupId>
      <artifactId>snappy-java</artifactId>
      <version>1.1.10.5</version>
    </dependency>
  </dependencies>
</project>
"""
CLUSTER = "eventsieve_test"


class Replica(ClickHouseServer):
    """A ClickHouse server that is one replica of CLUSTER (its config names all of them)."""

    def __init__(self, stack: StackSettings, extra_config: str) -> None:
        super().__init__(stack)
        self.extra_config = extra_config

    def write_config(self) -> None:
        super().write_config()
        config = self.config_file.read_text().replace("</yandex>", self.extra_config + "</yandex>")
        self.config_file.write_text(config)


def start_zookeeper(home: Path, port: int) -> ManagedProcess:
    """A standalone ZooKeeper from Maven Central on ``port``, answering when returned."""
    libs = cache_root() / f"zookeeper-{ZOOKEEPER_VERSION}" / "libs"
    if not (libs / f"zookeeper-{ZOOKEEPER_VERSION}.jar").exists():
        resolve_jars(
            ZOOKEEPER_POM.format(version=ZOOKEEPER_VERSION), libs, "ZooKeeper", "install Maven"
        )
    (home / "data").mkdir(parents=True)
    config = home / "zoo.cfg"
    config.write_text(
        f"tickTime=2000\ndataDir={home / 'data'}\nclientPort={port}\n"
        "clientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n"
    )
    process = ManagedProcess("zookeeper", home / "zk.pid", home / "zk.log", str(config))
    java = ["java", "-Xmx256m", "-cp", f"{libs}/*"]
    process.start([*java, "org.apache.zookeeper.server.ZooKeeperServerMain", str(config)])
    wait_until(lambda: port_in_use(port), 60, "ZooKeeper to listen")
    return process


@pytest.fixture
def replicated_clickhouse(
    tmp_path: Path, free_ports: Callable[[int], list[int]]
) -> Iterator[list[Replica]]:
    """ZooKeeper and two ClickHouse servers, the replicas of one shard of CLUSTER."""
    zk_port, *ports = free_ports(7)
    zookeeper = start_zookeeper(tmp_path / "zookeeper", zk_port)
    servers = [(f"r{i + 1}", *ports[i * 3 : i * 3 + 3]) for i in range(2)]
    members = "".join(
        f"<replica><host>127.0.0.1</host><port>{tcp}</port></replica>" for _, tcp, _, _ in servers
    )
    replicas = []
    for name, tcp, http, interserver in servers:
        extra = f"""
  <interserver_http_port>{interserver}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node></zookeeper>
  <macros><shard>1</shard><replica>{name}</replica></macros>
  <remote_servers><{CLUSTER}><shard>
    <internal_replication>true</internal_replication>{members}
  </shard></{CLUSTER}></remote_servers>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
"""
        stack = StackSettings(dir=tmp_path / name, clickhouse_port=tcp, clickhouse_http_port=http)
        replicas.append(Replica(stack, extra))
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready(60)
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
        zookeeper.stop()


def test_on_a_replicated_cluster_every_replica_holds_each_event_once(
    test_settings: Settings,
    sinks: Callable[..., SinkProcess],
    replicated_clickhouse: list[Replica],
) -> None:
    """The sink writes to one replica; the other holds the same rows, exact, once each.

    The schema is created ON CLUSTER from the first replica alone; a second
    consumer group re-reading the topic (a replay) doubles nothing anywhere.
    """
    first, second = replicated_clickhouse
    database = test_settings.clickhouse.database
    url = f"clickhouse://default:@127.0.0.1:{first.port}/default"
    bootstrap = test_settings.kafka.bootstrap_servers or ""
    topics = [test_settings.topics.clean, test_settings.topics.dropped]
    accepted, dropped_n = 3_000, 500
    fill(test_settings, accepted, dropped_n)

    for group in (f"sink-{uuid.uuid4().hex[:8]}", f"replay-{uuid.uuid4().hex[:8]}"):
        sink = sinks(
            test_settings, group, clickhouse_url=url, EVENTSIEVE_CLICKHOUSE__CLUSTER=CLUSTER
        ).start()
        wait_until(
            lambda group=group: committed_total(bootstrap, group, topics) == accepted + dropped_n,
            90,
            "the sink to commit every record",
        )
        assert sink.stop() == 0

    for replica in (first, second):
        ch = ClickHouse(f"clickhouse://default:@127.0.0.1:{replica.port}/default", database)
        try:
            engines = dict(
                ch.execute(
                    "SELECT name, engine FROM system.tables WHERE database = %(db)s",
                    {"db": database},
                )
            )
            assert engines["events"] == "ReplicatedReplacingMergeTree"
            assert engines["users"] == "ReplicatedAggregatingMergeTree"
            for table in ("events", "users", "user_properties"):
                ch.execute(f"SYSTEM SYNC REPLICA {database}.{table}")
            assert distinct_events(ch) == accepted + dropped_n
            stats = queries.project_stats(ch, "demo", SPAN)
            assert stats.accepted == accepted
            assert stats.dropped_by_reason == [("bot", dropped_n)]
        finally:
            ch.close()


def test_native_blocks_read_back_exactly_as_the_rows_of_the_same_events(
    ch: ClickHouse, clickhouse_url: str
) -> None:
    """The columnar path (Native blocks, sent as they are) and the row path (values
    serialised by clickhouse-driver) store the same rows, on this server, for events
    with every kind of field: text of every length, NULLs, maps, revenue, ranks."""
    migrate(ch)
    rows_db = ClickHouse(clickhouse_url, f"{ch.database}_rows")
    migrate(rows_db)
    try:
        accepted = []
        for i in range(400):
            fields: dict[str, Any] = {}
            if i % 3 == 0:
                fields.update(interactive=i % 2 == 0, scroll_depth=i, engagement_time_ms=-i)
            if i % 5 == 0:
                fields.update(
                    revenue_amount=f"{i}.1234", revenue_currency="EUR", credential="public"
                )
            if i % 7 == 0:
                fields.update(user_agent="Zoë ✓ " * 60, display_name="Ännä", user_id=f"u{i}")
            accepted.append(encode_clean(clean(i, **fields)))
        drops = [
            encode_dropped(dropped(i, reason=DropReason.DUPLICATE_IDEMPOTENCY_KEY))
            for i in range(50)
        ]
        blocks, rows = [], Batch()
        for values, name, decision, decode in (
            (accepted, registry.CLEAN_EVENT, Decision.ACCEPTED, decode_clean),
            (drops, registry.DROPPED_EVENT, Decision.DROPPED, decode_dropped),
        ):
            batch = decoder(name).decode(values)
            revenue = Revenue(batch)
            assert not suspects(batch, decision, revenue).any()
            blocks.append(events_block(batch, decision, revenue))
            for value in values:
                rows.add(decode(value), decision)
        assert ch.insert_blocks("events", blocks) == 450  # no ColumnsMismatchError: the fast path
        rows_db.insert_columns("events", rows.events.names, rows.events.data)
        columns = ", ".join(name for name, _ in EVENT_COLUMNS)
        query = "SELECT {columns} FROM {db}.events ORDER BY event_id, version"
        native = ch.execute(query.format(columns=columns, db=ch.database))
        assert native == rows_db.execute(query.format(columns=columns, db=rows_db.database))
        assert len(native) == 450
    finally:
        rows_db.execute(f"DROP DATABASE IF EXISTS {rows_db.database}")
        rows_db.close()


def test_stats_shows_hostile_event_names_as_text(
    test_settings: Settings, ch: ClickHouse, sinks: Callable[..., SinkProcess]
) -> None:
    """Names are client data: rich markup in one must not fail the command, and escape
    sequences must not reach the operator's terminal."""
    migrate(ch)
    batch = Batch()
    for i, name in enumerate(["[/]", "\x1b[2Jwiped", "[bold red]loud", "plain"]):
        batch.add(clean(i, name=name), Decision.ACCEPTED)
    for table, columns in batch.tables:
        ch.insert_columns(table, columns.names, columns.data)
    shown = subprocess.run(
        [*CLI, "stats", "-p", "demo", "--from", "2025-01-01", "--to", "2027-01-01"],
        env={**sinks(test_settings, "stats").env, "COLUMNS": "200", "FORCE_COLOR": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "accepted 4" in out
    assert "[/]" in out
    assert "[bold red]loud" in out
    assert "\\x1b[2Jwiped" in out
    assert "\x1b[2J" not in out
