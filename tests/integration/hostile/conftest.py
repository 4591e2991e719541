"""Fixtures of the hostile-input suites: one real endpoint per test module.

``fuzz_endpoint`` runs the same app ``eventsieve serve`` runs (uvicorn in a
background thread) on a raw topic of its own, for the whole module: a fuzz
test sends hundreds of requests to it, and the module's last test checks
that it still accepts and publishes valid events afterwards.

Its edge limits are the production ones except failed authentication, which
is not limited here: the fuzz sends wrong credentials on purpose, and the
429s that limiter would answer from then on would hide every parser behind it.
The projects' rate limits are raised for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from confluent_kafka.admin import AdminClient

from eventsieve.config import KafkaSettings, Settings, load_settings
from eventsieve.kafka import ensure_topics
from producers.app import create_app
from producers.endpoint import build_endpoint
from producers.limits import EdgeLimits
from producers.protocol import protocol_with
from schemas.topology import salts_topic

EXAMPLE = Path(__file__).resolve().parents[3] / "eventsieve.toml"


@dataclass(frozen=True)
class FuzzEndpoint:
    url: str
    settings: Settings
    topic: str


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot own signals
        pass


def _free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (see root conftest)."""
    while True:
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@pytest.fixture(scope="module")
def fuzz_endpoint(kafka_bootstrap: str) -> Iterator[FuzzEndpoint]:
    """The endpoint of this module, publishing to a fresh one-partition raw topic."""
    topic = f"test.fuzz{uuid.uuid4().hex[:10]}.events.raw"
    ensure_topics(kafka_bootstrap, [topic], 1)
    base = load_settings(EXAMPLE)
    projects = tuple(p.model_copy(update={"rate_limit_per_second": 1e9}) for p in base.projects)
    settings = base.model_copy(
        update={
            "kafka": KafkaSettings(bootstrap_servers=kafka_bootstrap),
            "topics": base.topics.model_copy(update={"raw": topic}),
            "server": base.server.model_copy(
                update={"access_log": False, "delivery_timeout_s": 5.0}
            ),
            "projects": projects,
        }
    )
    limits = EdgeLimits(failed_auth_per_minute=1_000_000_000)
    port = _free_port()
    app = create_app(build_endpoint(settings, limits=limits))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        http=protocol_with(limits.header_timeout_s),
        lifespan="on",
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )
    server = _Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the endpoint did not start")
        time.sleep(0.02)
    try:
        yield FuzzEndpoint(f"http://127.0.0.1:{port}", settings, topic)
    finally:
        server.should_exit = True
        thread.join(15)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        futures = admin.delete_topics([topic, salts_topic(topic)], operation_timeout=10)
        for future in futures.values():
            with contextlib.suppress(Exception):
                future.result(timeout=20)
