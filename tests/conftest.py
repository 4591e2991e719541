"""Shared fixtures: real Kafka and ClickHouse for integration tests, isolated per test.

Where the services come from, in order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``CLICKHOUSE_URL`` when set (external services);
2. else the local stack (``eventsieve stack up``: started here if not running,
   and stopped again at the end if this session started it, unless
   ``EVENTSIEVE_TEST_KEEP_STACK=1``);
3. else, when the local stack cannot run here (no Java/Maven/ClickHouse) and a
   Docker engine answers, testcontainers.

Each test gets its own topics (``new_topic``) and database (``ch_database``), so
tests never see each other's data. Tests under tests/integration/ are marked
``integration`` automatically; ``pytest -m "not integration"`` runs the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver import Client
from clickhouse_driver.util.escape import escape_param
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from eventsieve import services as addresses
from eventsieve.config import (
    ClickHouseSettings,
    KafkaSettings,
    PrivacySettings,
    Settings,
    load_settings,
    settings_environment,
)
from eventsieve.errors import MissingDependencyError
from eventsieve.kafka import ensure_topics, topic_names
from ops.pipeline import programs
from ops.stack import LocalStack
from ops.supervisor import Supervisor
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import new_raw_event
from schemas.topology import salts_topic
from sinks.ddl import ServerFeatures

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "eventsieve.toml"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class Services:
    """Addresses of the real services the integration tests talk to."""

    kafka_bootstrap: str
    clickhouse_url: str  # clickhouse-driver URL of the server's `default` database
    origin: str  # "external", "local stack" or "testcontainers"

    def clickhouse_url_for(self, database: str) -> str:
        base = self.clickhouse_url.partition("?")[0].rstrip("/")
        return f"{base.rsplit('/', 1)[0]}/{database}"


def example_settings() -> Settings:
    """The shipped example configuration (honours the service env vars)."""
    return load_settings(EXAMPLE_CONFIG)


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _containers() -> Iterator[Services]:
    from testcontainers.clickhouse import ClickHouseContainer
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka, ClickHouseContainer() as clickhouse:
        host = clickhouse.get_container_host_ip()
        port = clickhouse.get_exposed_port(9000)
        yield Services(
            kafka.get_bootstrap_server(),
            f"clickhouse://{clickhouse.username}:{clickhouse.password}@{host}:{port}/default",
            "testcontainers",
        )


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    settings = example_settings()
    stack = LocalStack(settings)
    if not stack.managed:
        yield Services(
            addresses.kafka_bootstrap(settings),
            addresses.clickhouse_url(settings, "default"),
            "external",
        )
        return
    try:
        started = stack.up()
    except MissingDependencyError as exc:
        if not _docker_available():
            pytest.fail(f"no Kafka/ClickHouse for integration tests: {exc}", pytrace=False)
        with _containers() as found:
            yield found
        return
    try:
        yield Services(
            addresses.kafka_bootstrap(settings),
            addresses.clickhouse_url(settings, "default"),
            "local stack",
        )
    finally:
        if not os.environ.get("EVENTSIEVE_TEST_KEEP_STACK"):
            for service in stack.managed:
                if service.name in started:
                    service.stop()


@pytest.fixture
def pipeline_settings(test_settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings with a worker group, state directory and sink group of its own.

    For tests that run the worker and the sink as processes: nothing is
    shared with another test's pipeline, and the sink flushes every 0.3 s.
    """
    tag = uuid.uuid4().hex[:8]
    return test_settings.model_copy(
        update={
            "streams": test_settings.streams.model_copy(
                update={"app_id": f"pipeline-{tag}", "data_dir": tmp_path / "streams"}
            ),
            "sink": test_settings.sink.model_copy(
                update={"group_id": f"pipeline-sink-{tag}", "batch_max_interval_s": 0.3}
            ),
        }
    )


class WorkerAndSink:
    """The stream worker and the sink as processes on a test's settings, logging to one file.

    Their log level is WARNING unless ``EVENTSIEVE_TEST_WORKER_LOGLEVEL`` says
    otherwise ("INFO" to debug a test).
    """

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self._out = log_path.open("a")
        env = settings_environment(settings)
        env["EVENTSIEVE_LOG_LEVEL"] = os.environ.get("EVENTSIEVE_TEST_WORKER_LOGLEVEL", "WARNING")
        worker_and_sink = [p for p in programs(None) if p.name != "producer"]
        self.supervisor = Supervisor(worker_and_sink, out=self._out, env=env)
        self.supervisor.start()

    def assert_alive(self) -> None:
        exited = self.supervisor.exited()
        assert exited is None, f"{exited} exited:\n{self.log()}"

    def log(self) -> str:
        """The end of the processes' output, for assertion messages."""
        self._out.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if not self._out.closed:
            self.supervisor.stop_all()
            self._out.close()


@pytest.fixture
def worker_and_sink(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerAndSink]]:
    """``worker_and_sink(settings)`` starts both processes; all are stopped after the test."""
    started: list[WorkerAndSink] = []

    def start(settings: Settings) -> WorkerAndSink:
        started.append(WorkerAndSink(settings, tmp_path / "pipeline.log"))
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def publish_direct() -> Callable[[Settings, int, str], set[str]]:
    """``publish_direct(settings, count, tag)``: ``count`` distinct clean events on events.raw.

    Written the way most direct publishers write them: Avro, keyed
    ``demo:<user>``, with confluent-kafka's default partitioner (not the
    murmur2 placement the stream expects, so most take the re-key hop).
    Returns their event ids.
    """

    def publish(settings: Settings, count: int, tag: str) -> set[str]:
        producer = Producer({"bootstrap.servers": addresses.kafka_bootstrap(settings)})
        ids = set()
        for i in range(count):
            user = f"{tag}-user-{i % 17}"
            event = new_raw_event(project="demo", name=f"step {i}", user_id=user, source="direct")
            key = topic_key("demo", user).encode()
            producer.produce(settings.topics.raw, key=key, value=encode_raw(event))
            ids.add(event["event_id"])
        assert producer.flush(30) == 0
        return ids

    return publish


class ChdbClickHouse:
    """sinks.clickhouse.ClickHouse's interface on chdb: current ClickHouse, in-process.

    What the migrations, the sink's rows and the query layers use, so the same
    code that runs against the local stack's old server is checked on a
    current one without a server.
    """

    def __init__(self, session: Any, database: str) -> None:
        self.session = session
        self.database = database
        self._client = Client("localhost")  # never connects: only formats parameters
        self._context = self._client.connection.context

    def features(self) -> ServerFeatures:
        return ServerFeatures.parse(str(self.scalar("SELECT version()")))

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        if isinstance(params, list):  # INSERT ... VALUES with rows
            values = ", ".join(
                "(" + ", ".join(str(escape_param(v, self._context)) for v in row) + ")"
                for row in params
            )
            self.session.query(f"{sql} {values}")
            return []
        if params:
            sql = self._client.substitute_params(sql, params, self._context)
        result = self.session.query(sql, "JSONCompact")
        text = result.data() if hasattr(result, "data") else str(result)
        if not text.strip():
            return []
        return [tuple(row) for row in json.loads(text)["data"]]

    def scalar(self, sql: str, params: Any = None) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def insert_columns(
        self, table: str, names: Sequence[str], columns: Sequence[list[Any]], token: Any = None
    ) -> int:
        rows = list(zip(*columns, strict=True))
        self.execute(f"INSERT INTO {self.database}.{table} ({', '.join(names)}) VALUES", rows)
        return len(rows)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded current ClickHouse (chdb) for the run; skipped where chdb is missing."""
    chdb = pytest.importorskip("chdb.session")
    session = chdb.Session(str(tmp_path_factory.mktemp("chdb")))
    yield session
    session.close()


@pytest.fixture
def chdb_clickhouse(chdb_session: Any) -> ChdbClickHouse:
    """A fresh database on chdb behind the ClickHouse adapter interface."""
    return ChdbClickHouse(chdb_session, f"t_{uuid.uuid4().hex[:10]}")


_handed_out: set[int] = set()


@pytest.fixture
def free_ports() -> Callable[[int], list[int]]:
    """``free_ports(n)``: n distinct free loopback ports, never handed out twice.

    They come from below the kernel's ephemeral range (32768+): a client that
    retries a port in that range while nothing listens there can be given the
    same port as its own source and connect to itself, and the server meant
    for that port then fails to bind. Port 0 picks from that very range.
    """

    def pick(n: int) -> list[int]:
        ports: list[int] = []
        while len(ports) < n:
            port = random.randrange(20_000, 32_000)
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            ports.append(port)
        return ports

    return pick


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    """``host:port`` of the test Kafka broker."""
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def clickhouse_url(services: Services) -> str:
    """clickhouse-driver URL of the test ClickHouse server (``default`` database)."""
    return services.clickhouse_url


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def new_topic(services: Services) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=3, prefix="t")`` creates a fresh topic, deleted after."""
    created: list[str] = []

    def make(partitions: int = 3, prefix: str = "test.") -> str:
        name = unique(prefix)
        ensure_topics(services.kafka_bootstrap, [name], partitions)
        created.append(name)
        return name

    yield make
    _delete_topics(services.kafka_bootstrap, created)


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete the topics a test made (best effort, bounded in time).

    The admin client is kept alive until the deletions answered: a client
    destroyed right after the call abandons them. A topic an endpoint served as
    its raw topic has a companion, ``<name>.salts`` (producers.salts): it goes too.
    """
    if not names:
        return
    names = [*names, *(salts_topic(n) for n in names)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_topics(names, operation_timeout=10, request_timeout=15)
    for future in futures.values():
        with contextlib.suppress(Exception):
            future.result(timeout=20)


@pytest.fixture
def ch_database(services: Services) -> Iterator[str]:
    """A fresh ClickHouse database for this test, dropped afterwards."""
    name = unique("test_")
    admin = Client.from_url(services.clickhouse_url)
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.disconnect()


@pytest.fixture
def ch_client(services: Services, ch_database: str) -> Iterator[Client]:
    """A clickhouse-driver client bound to this test's database."""
    client = Client.from_url(services.clickhouse_url_for(ch_database))
    yield client
    client.disconnect()


@pytest.fixture
def test_settings(services: Services, ch_database: str) -> Iterator[Settings]:
    """The example Settings pointed at the test services, with unique topics and database.

    The topics (3 partitions each) exist before the test starts and are
    deleted after it; the database is this test's ``ch_database``.
    """
    base = example_settings()
    prefix = unique("test.") + "."
    topics = base.topics.model_copy(
        update={
            "raw": prefix + "events.raw",
            "orders": prefix + "events.orders",
            "clean": prefix + "events.clean",
            "dropped": prefix + "events.dropped",
            "dlq": prefix + "events.dlq",
            "partitions": 3,
        }
    )
    settings = base.model_copy(
        update={
            "kafka": KafkaSettings(bootstrap_servers=services.kafka_bootstrap),
            "clickhouse": ClickHouseSettings(
                url=services.clickhouse_url_for(ch_database), database=ch_database
            ),
            "topics": topics,
            # External services: the endpoint refuses the shipped default secret.
            "privacy": PrivacySettings(salt_secret=SecretStr(uuid.uuid4().hex * 2)),
        }
    )
    names = topic_names(topics)
    ensure_topics(services.kafka_bootstrap, names, topics.partitions)
    yield settings
    _delete_topics(services.kafka_bootstrap, names)
