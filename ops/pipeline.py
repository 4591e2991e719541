"""The pipeline's three processes for one configuration: endpoint, stream worker, sink.

Shared by ``eventsieve run`` (foreground, prefixed logs) and ``eventsieve
demo`` (background, logs to a file), so both start exactly the same thing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from eventsieve.config import Settings
from eventsieve.errors import ServiceError
from eventsieve.kafka import ensure_eventsieve_topics
from ops.stack.process import port_in_use
from ops.supervisor import Program


def eventsieve_argv(config: Path | None, *command: str) -> list[str]:
    """argv of an ``eventsieve`` subcommand run by this interpreter."""
    flags = ["--config", str(config)] if config else []
    return [sys.executable, "-m", "ops", *flags, *command]


def programs(config: Path | None) -> list[Program]:
    """The producer endpoint, one stream worker and the sink."""
    return [
        Program("producer", eventsieve_argv(config, "serve")),
        Program("worker", eventsieve_argv(config, "worker")),
        Program("sink", eventsieve_argv(config, "sink")),
    ]


def ports_taken(settings: Settings) -> list[str]:
    """The ports the three processes will listen on that another program holds already.

    Checked before anything starts: a taken port would otherwise surface as
    one process exiting among the others' start-up logs.
    """
    wanted = [
        ("server.port", settings.server.host, settings.server.port),
        ("streams.metrics_port", "127.0.0.1", settings.streams.metrics_port),
        ("sink.metrics_port", "127.0.0.1", settings.sink.metrics_port),
    ]
    return [
        f"{name} = {port} is taken by another program"
        for name, host, port in wanted
        if port and port_in_use(port, "127.0.0.1" if host in ("0.0.0.0", "::") else host)
    ]


def check_ports(settings: Settings) -> None:
    """Raise one clear error naming every taken port and how to choose another."""
    if taken := ports_taken(settings):
        raise ServiceError(
            "; ".join(taken) + ": stop that program, or choose another port in eventsieve.toml"
            " (or EVENTSIEVE_SERVER__PORT and the like)"
        )


def prepare(settings: Settings, config: Path | None) -> None:
    """Topics exist and the ClickHouse schema is current before anything runs."""
    ensure_eventsieve_topics(settings)
    if subprocess.run(eventsieve_argv(config, "migrate"), check=False).returncode != 0:
        raise ServiceError("migrating ClickHouse failed (see above)")


def endpoint_url(settings: Settings) -> str:
    return f"http://{settings.server.host}:{settings.server.port}"


def endpoint_ready(settings: Settings) -> bool:
    """True when the producer endpoint answers its health check."""
    try:
        return httpx.get(f"{endpoint_url(settings)}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_endpoint(settings: Settings, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not endpoint_ready(settings):
        if time.monotonic() > deadline:
            raise ServiceError(f"the endpoint at {endpoint_url(settings)} did not come up")
        time.sleep(0.3)
