"""One real pipeline per test module for the official client packages.

``sdk_pipeline`` runs, for the whole module: the endpoint (the app ``eventsieve
serve`` runs) on loopback over HTTP and, for clients that only speak HTTPS,
over TLS with a self-signed certificate made for the test; a stream worker and
the sink as processes; fresh topics and a fresh ClickHouse database. Tests
drive the real client packages against it and read back what the sink wrote,
field by field, with :meth:`SdkPipeline.wait_for`.

The JavaScript clients are npm packages installed by ``make setup`` into
tests/sdk_clients/node_modules (``npm ci``); :func:`run_node` runs one of the
driver scripts there and returns what it reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from clickhouse_driver import Client
from confluent_kafka.admin import AdminClient
from starlette.types import ASGIApp, Receive, Scope, Send

from eventsieve.config import (
    ClickHouseSettings,
    KafkaSettings,
    ProjectSettings,
    Settings,
    load_settings,
    settings_environment,
)
from eventsieve.kafka import ensure_topics, topic_names
from eventsieve.services import clickhouse_url
from ops.pipeline import programs
from ops.supervisor import Supervisor
from producers.app import create_app
from producers.endpoint import build_endpoint
from producers.projects import hash_key
from sinks.clickhouse import ClickHouse
from sinks.queries import TimeRange, decision_counts

ROOT = Path(__file__).resolve().parents[3]
SDK_CLIENTS = ROOT / "tests" / "sdk_clients"

PROJECT = "sdk"
PUBLIC_TOKEN = "sdk-public-token"
VERO_TOKEN = "sdk-vero-token"
VTCDN_KEY = "sdk-vtcdn-key"
# The sites of the project: one per client, so no two clients' anonymous
# visitors (same loopback address, same browser) can ever share a visitor id.
SITES = (
    "shop.example.com",  # @vemetric/web
    "docs.example.com",  # plausible-tracker
    "store.example.com",  # @plausible-analytics/tracker
    "spa.example.com",  # @plausible-analytics/tracker, hash routing
    "app.example.com",  # plausible-events
)
SDK_PROJECT = ProjectSettings(
    id=PROJECT,
    name="Official clients",
    tokens=(PUBLIC_TOKEN,),
    vero_tokens=(hash_key(VERO_TOKEN),),
    vtcdn_keys=(hash_key(VTCDN_KEY),),
    domains=SITES,
)

# The columns of `events` the tests compare, in this order.
EVENT_FIELDS = (
    "event_id",
    "decision",
    "drop_reason",
    "name",
    "normalised_name",
    "kind",
    "source",
    "user_key",
    "user_id",
    "email",
    "visitor_id",
    "display_name",
    "url",
    "referrer",
    "domain",
    "user_agent",
    "sdk_name",
    "sdk_version",
    "hash_mode",
    "interactive",
    "scroll_depth",
    "engagement_time_ms",
    "context_id",
    "order_id",
    "timestamp_ms",
    "received_at_ms",
    "property_keys",
    "property_values",
    "user_property_keys",
    "user_property_values",
    "revenue_amount",
    "revenue_currency",
)


class RequestLog:
    """Pure ASGI: records every request the endpoint answers (method, path, origin, status).

    Only observes: the wrapped app answers exactly as it would alone. Lets
    the tests see the browsers' CORS preflights, which never reach Kafka.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.entries: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "scheme": scope["scheme"],
            "origin": headers.get("origin"),
            "request_headers": headers.get("access-control-request-headers"),
            "status": None,
            "response_headers": {},
        }
        self.entries.append(entry)

        async def observe(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                entry["response_headers"] = {
                    k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            await send(message)

        await self.app(scope, receive, observe)

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.entries[mark:]


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot own signals
        pass


def _serve(app: ASGIApp, port: int, **ssl: Any) -> tuple[_Server, threading.Thread]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        **ssl,
    )
    server = _Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the endpoint did not start")
        time.sleep(0.02)
    return server, thread


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 and localhost (valid two days)."""
    key, cert = directory / "endpoint.key", directory / "endpoint.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


def _row(names: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(names, values, strict=True))
    row["properties"] = dict(zip(row.pop("property_keys"), row.pop("property_values"), strict=True))
    row["user_properties"] = dict(
        zip(row.pop("user_property_keys"), row.pop("user_property_values"), strict=True)
    )
    return row


@dataclass
class SdkPipeline:
    """The running pipeline of a module and what the tests read back from it."""

    settings: Settings
    url: str  # http://127.0.0.1:PORT
    tls_url: str  # https://127.0.0.1:PORT (self-signed, ``ca_file``)
    ca_file: Path
    requests: RequestLog
    ch: Client
    supervisor: Supervisor
    log_path: Path
    project: str = PROJECT
    public_token: str = PUBLIC_TOKEN
    vero_token: str = VERO_TOKEN
    vtcdn_key: str = VTCDN_KEY
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def database(self) -> str:
        return self.settings.clickhouse.database

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def assert_alive(self) -> None:
        exited = self.supervisor.exited()
        assert exited is None, f"{exited} exited:\n{self.log()}"

    def run_node(
        self, script: str, arguments: dict[str, Any], env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """:func:`run_node` (skips the test where Node.js is not installed).

        Node trusts the endpoint's self-signed certificate (``NODE_EXTRA_CA_CERTS``).
        """
        return run_node(
            script, arguments, {"NODE_EXTRA_CA_CERTS": str(self.ca_file), **(env or {})}
        )

    def events(self, where: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of ``events FINAL`` (one per event id, its latest decision), by event time."""
        with self._lock:
            rows = self.ch.execute(
                f"SELECT {', '.join(EVENT_FIELDS)} FROM {self.database}.events FINAL "
                f"WHERE project = %(project)s AND ({where}) ORDER BY timestamp_ms, received_at_ms",
                {"project": PROJECT, **(params or {})},
            )
        return [_row(EVENT_FIELDS, values) for values in rows]

    def wait_for(
        self,
        count: int,
        where: str,
        params: dict[str, Any] | None = None,
        timeout: float = 60.0,
        settle: float = 1.5,
        check: bool = True,
    ) -> list[dict[str, Any]]:
        """The rows matching ``where`` once there are ``count``, still ``count`` ``settle`` s on.

        Waiting on past the count catches events landing twice or extra ones.
        With ``check=False`` the rows are returned whatever their number (after
        ``timeout``), for fixtures whose tests assert the count themselves.
        """
        deadline = time.monotonic() + timeout
        rows = self.events(where, params)
        while len(rows) < count and time.monotonic() < deadline:
            self.assert_alive()
            time.sleep(0.3)
            rows = self.events(where, params)
        time.sleep(settle)
        rows = self.events(where, params)
        assert not check or len(rows) == count, (
            f"{len(rows)} events landed, expected {count}:\n"
            + "\n".join(f"{r['decision']} {r['drop_reason']} {r['name']} {r['url']}" for r in rows)
            + f"\n{self.log()}"
        )
        return rows

    def decisions(self) -> tuple[Counter[str], Counter[str]]:
        """Accepted events by name and dropped ones by reason, from ``events FINAL``."""
        rows = self.events("1")
        accepted = Counter(r["name"] for r in rows if r["decision"] == "accepted")
        dropped = Counter(r["drop_reason"] for r in rows if r["decision"] == "dropped")
        return accepted, dropped

    def latest_decisions(self) -> tuple[Counter[str], Counter[str]]:
        """The same counts as ``eventsieve stats`` reads them (``sinks.queries``, argMax)."""
        ch = ClickHouse(clickhouse_url(self.settings, "default"), self.database)
        try:
            now = dt.datetime.now(dt.UTC)
            span = TimeRange(now - dt.timedelta(days=1), now + dt.timedelta(days=1))
            accepted, dropped = decision_counts(ch, PROJECT, span)
        finally:
            ch.close()
        return Counter(dict(accepted)), Counter(dict(dropped))

    def profiles(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Rows of the ``user_profiles`` view, by user id."""
        with self._lock:
            rows = self.ch.execute(
                f"SELECT user_id, display_name, email, avatar, anonymous_id "
                f"FROM {self.database}.user_profiles "
                f"WHERE project = %(project)s AND user_id IN %(ids)s",
                {"project": PROJECT, "ids": tuple(user_ids)},
            )
        return {
            r[0]: {"display_name": r[1], "email": r[2], "avatar": r[3], "anonymous_id": r[4]}
            for r in rows
        }

    def property_values(self, user_ids: list[str]) -> dict[str, dict[str, str]]:
        """The ``user_property_values`` view: current user properties, by user id."""
        with self._lock:
            rows = self.ch.execute(
                f"SELECT user_id, key, value FROM {self.database}.user_property_values "
                f"WHERE project = %(project)s AND user_id IN %(ids)s",
                {"project": PROJECT, "ids": tuple(user_ids)},
            )
        out: dict[str, dict[str, str]] = {}
        for user_id, key, value in rows:
            out.setdefault(user_id, {})[key] = value
        return out


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_topics(names, operation_timeout=10, request_timeout=15)
    for future in futures.values():
        with contextlib.suppress(Exception):
            future.result(timeout=20)


def _free_port() -> int:
    # Below the ephemeral range (see the root conftest's free_ports).
    while True:
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture(scope="module")
def sdk_pipeline(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkPipeline]:
    """Endpoint (HTTP and HTTPS), worker and sink on fresh topics and a fresh database."""
    tmp = tmp_path_factory.mktemp("sdk-pipeline")
    tag = uuid.uuid4().hex[:10]
    database = f"test_sdk_{tag}"
    admin = Client.from_url(services.clickhouse_url)
    admin.execute(f"CREATE DATABASE {database}")
    base = load_settings(ROOT / "eventsieve.toml")
    prefix = f"test.sdk{tag}."
    topics = base.topics.model_copy(
        update={
            name: prefix + getattr(base.topics, name)
            for name in ("raw", "orders", "clean", "dropped", "dlq")
        }
        | {"partitions": 3}
    )
    settings = base.model_copy(
        update={
            "kafka": KafkaSettings(bootstrap_servers=services.kafka_bootstrap),
            "clickhouse": ClickHouseSettings(
                url=services.clickhouse_url_for(database), database=database
            ),
            "topics": topics,
            "projects": (*base.projects, SDK_PROJECT),
            "server": base.server.model_copy(update={"access_log": False}),
            "streams": base.streams.model_copy(
                update={"app_id": f"sdk-{tag}", "data_dir": tmp / "streams"}
            ),
            "sink": base.sink.model_copy(
                update={"group_id": f"sdk-sink-{tag}", "batch_max_interval_s": 0.3}
            ),
        }
    )
    names = topic_names(topics)
    ensure_topics(services.kafka_bootstrap, names, topics.partitions)
    log_path = tmp / "pipeline.log"
    out = log_path.open("a")
    env = settings_environment(settings)
    env["EVENTSIEVE_LOG_LEVEL"] = os.environ.get("EVENTSIEVE_TEST_WORKER_LOGLEVEL", "WARNING")
    supervisor = Supervisor([p for p in programs(None) if p.name != "producer"], out=out, env=env)
    supervisor.start()
    servers: list[tuple[_Server, threading.Thread]] = []
    ch = Client.from_url(services.clickhouse_url_for(database))
    try:
        key, cert = self_signed_certificate(tmp)
        app = RequestLog(create_app(build_endpoint(settings)))
        tls_app = RequestLog(create_app(build_endpoint(settings)))
        tls_app.entries = app.entries  # one log of both
        http_port, https_port = _free_port(), _free_port()
        servers.append(_serve(app, http_port))
        servers.append(_serve(tls_app, https_port, ssl_keyfile=str(key), ssl_certfile=str(cert)))
        pipeline = SdkPipeline(
            settings=settings,
            url=f"http://127.0.0.1:{http_port}",
            tls_url=f"https://127.0.0.1:{https_port}",
            ca_file=cert,
            requests=app,
            ch=ch,
            supervisor=supervisor,
            log_path=log_path,
        )
        # The sink creates the schema when it starts: wait for it.
        deadline = time.monotonic() + 90
        while not ch.execute(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'user_deletions'",
            {"db": database},
        )[0][0]:
            pipeline.assert_alive()
            assert time.monotonic() < deadline, f"the sink never migrated\n{pipeline.log()}"
            time.sleep(0.3)
        yield pipeline
        pipeline.assert_alive()
    finally:
        for server, thread in servers:
            server.should_exit = True
            thread.join(15)
        supervisor.stop_all()
        out.close()
        ch.disconnect()
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()
        _delete_topics(services.kafka_bootstrap, names)


def node_or_skip() -> str:
    """The ``node`` executable; the test is skipped where Node.js (or npm, to install
    the clients) is not installed, as ``make setup`` skips the npm clients there."""
    node = shutil.which("node")
    if node is None or (
        shutil.which("npm") is None and not (SDK_CLIENTS / "node_modules").is_dir()
    ):
        pytest.skip(
            "Node.js/npm not installed (.ci/run installs them, `make setup` the npm clients)"
        )
    if not (SDK_CLIENTS / "node_modules").is_dir():
        pytest.fail("tests/sdk_clients/node_modules is missing: run `make setup` (npm ci)")
    return node


def run_node(
    script: str, arguments: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 90
) -> dict[str, Any]:
    """Run a driver of tests/sdk_clients with its JSON arguments; returns its JSON report.

    The report (see browser.mjs) lists the client's requests with their answers
    and what the page logged; a driver that fails or logs an error fails the test.
    """
    node = node_or_skip()
    done = subprocess.run(
        [node, str(SDK_CLIENTS / script), json.dumps(arguments)],
        cwd=SDK_CLIENTS,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    problems = [c for c in report["console"] if c["level"] not in ("log", "info")]
    assert problems == [], f"{script} logged problems: {problems}\n{done.stderr}"
    return report
