"""Fixtures for the endpoint's integration tests: a real server on loopback, a real broker.

``endpoint`` starts uvicorn (the same app ``eventsieve serve`` runs) in a
background thread, publishing to a fresh topic of the test broker;
``read_raw`` consumes that topic and decodes every record as a RawEvent.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from confluent_kafka import Consumer, KafkaError, TopicPartition

from eventsieve.config import KafkaSettings, ProjectSettings, Settings, load_settings
from producers.app import create_app
from producers.endpoint import build_endpoint
from producers.limits import EdgeLimits
from producers.projects import hash_key
from producers.protocol import protocol_with
from producers.publisher import Publisher
from schemas.codecs import decode_raw
from schemas.events import RawEvent

EXAMPLE = Path(__file__).resolve().parents[3] / "eventsieve.toml"

# A second project, so tests can show that keys never cross projects.
OTHER = ProjectSettings(
    id="other",
    tokens=("other-public-token",),
    server_keys=(hash_key("other-secret-key"),),
    vero_tokens=(hash_key("other-vero-token"),),
    vtcdn_keys=(hash_key("other-vtcdn-key"),),
    domains=("other.example",),
)


@dataclass
class RunningEndpoint:
    url: str
    settings: Settings
    topic: str


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot own signals
        pass


@pytest.fixture
def make_settings(kafka_bootstrap: str, new_topic: Callable[..., str]) -> Callable[..., Settings]:
    """``make_settings(bootstrap=..., projects=..., **server)``: example config on a fresh topic."""

    def make(
        *,
        bootstrap: str | None = None,
        projects: tuple[ProjectSettings, ...] | None = None,
        **server: Any,
    ) -> Settings:
        base = load_settings(EXAMPLE)
        # One partition: these tests check what lands, not how it spreads, and the
        # shared broker carries every suite's topics.
        topic = new_topic(1) if bootstrap is None else f"unused.{uuid.uuid4().hex[:8]}"
        return base.model_copy(
            update={
                "kafka": KafkaSettings(bootstrap_servers=bootstrap or kafka_bootstrap),
                "topics": base.topics.model_copy(update={"raw": topic}),
                "server": base.server.model_copy(
                    update={"access_log": False, "delivery_timeout_s": 5.0, **server}
                ),
                "projects": projects if projects is not None else (*base.projects, OTHER),
            }
        )

    return make


@pytest.fixture
def serve(
    free_ports: Callable[[int], list[int]],
) -> Iterator[Callable[[Settings], RunningEndpoint]]:
    """``serve(settings, limits=None, publisher=None)`` runs the endpoint until the test ends."""
    servers: list[tuple[_Server, threading.Thread]] = []

    def start(
        settings: Settings, limits: EdgeLimits | None = None, publisher: Publisher | None = None
    ) -> RunningEndpoint:
        (port,) = free_ports(1)
        limits = limits or EdgeLimits()
        app = create_app(build_endpoint(settings, limits=limits, publisher=publisher))
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
        servers.append((server, thread))
        return RunningEndpoint(f"http://127.0.0.1:{port}", settings, settings.topics.raw)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def read_raw(kafka_bootstrap: str) -> Callable[..., list[tuple[bytes, RawEvent]]]:
    """``read_raw(topic)``: every record of the topic as (key, RawEvent), in offset order."""

    def read(topic: str, timeout: float = 10.0) -> list[tuple[bytes, RawEvent]]:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # Read to the end, not to the high watermark: the endpoint writes in
                # transactions, whose commit markers take offsets without being records.
                "enable.partition.eof": True,
            }
        )
        try:
            meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
            consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
            open_partitions = set(meta.partitions)
            out: list[tuple[int, int, bytes, RawEvent]] = []
            deadline = time.monotonic() + timeout
            while open_partitions:
                assert time.monotonic() < deadline, f"no end of {topic} after {len(out)} records"
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(msg.partition())
                    continue
                out.append((msg.partition(), msg.offset(), msg.key(), decode_raw(msg.value())))
            return [(key, event) for _p, _o, key, event in sorted(out, key=lambda r: r[:2])]
        finally:
            # close() can block on a stalled broker; never let it hold the suite.
            closer = threading.Thread(target=consumer.close, daemon=True)
            closer.start()
            closer.join(10)

    return read
