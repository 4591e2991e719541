"""The main commands fail early with one clear line when their ground is missing.

No Kafka or ClickHouse is needed: each case fails before any would be used,
and nothing is started.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

BIN = Path(sys.executable).parent
CONFIG = Path(__file__).resolve().parents[3] / "eventsieve.toml"


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "EVENTSIEVE_CONFIG": str(CONFIG),
        "EVENTSIEVE_STACK__DIR": str(tmp_path / "stack"),
        **env,
    }
    return subprocess.run(
        [str(BIN / "eventsieve"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def taken_port(free_ports: Callable[[int], list[int]]):
    """A loopback port another program listens on."""
    (port,) = free_ports(1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        yield port


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_taken_endpoint_port_stops_the_start_before_anything_runs(
    tmp_path: Path, taken_port: int, command: str
):
    result = cli(tmp_path, command, EVENTSIEVE_SERVER__PORT=str(taken_port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"server.port = {taken_port} is taken by another program" in result.stderr
    assert not (tmp_path / "stack").exists()  # no Kafka, no ClickHouse started


def test_a_taken_metrics_port_is_named_too(tmp_path: Path, taken_port: int, free_ports):
    (endpoint,) = free_ports(1)
    result = cli(
        tmp_path,
        "run",
        EVENTSIEVE_SERVER__PORT=str(endpoint),
        EVENTSIEVE_SINK__METRICS_PORT=str(taken_port),
    )
    assert result.returncode == 1
    assert f"sink.metrics_port = {taken_port} is taken" in result.stderr
    assert "server.port" not in result.stderr


def test_stats_without_clickhouse_says_so_in_one_line(tmp_path: Path, free_ports):
    (dead,) = free_ports(1)  # nothing listens there
    result = cli(
        tmp_path, "stats", CLICKHOUSE_URL=f"clickhouse://default:@127.0.0.1:{dead}/default"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ClickHouse")
    assert "is the pipeline running?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("secret", [None, "short-secret"])
def test_serve_with_external_kafka_refuses_a_default_or_weak_secret(
    tmp_path: Path, free_ports, secret: str | None
):
    (dead,) = free_ports(1)
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{dead}"}
    if secret is not None:
        env["EVENTSIEVE_PRIVACY__SALT_SECRET"] = secret
    result = cli(tmp_path, "serve", **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: privacy.salt_secret")
    assert "EVENTSIEVE_PRIVACY__SALT_SECRET" in line


def test_a_strong_secret_or_the_local_stack_passes_the_check(monkeypatch) -> None:
    from eventsieve.config import load_settings
    from ops.cli.serve import secret_problem

    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    local = load_settings(CONFIG)
    assert local.kafka.bootstrap_servers is None
    assert secret_problem(local) is None  # make run: the development default is fine
    external = local.model_copy(
        update={"kafka": local.kafka.model_copy(update={"bootstrap_servers": "kafka:9092"})}
    )
    assert secret_problem(external) is not None
    strong = external.model_copy(
        update={"privacy": external.privacy.model_copy(update={"salt_secret": SecretStr("a" * 64)})}
    )
    assert secret_problem(strong) is None
