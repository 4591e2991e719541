"""A private local stack: `up` twice runs one of each, `status` shows versions, `down` stops all.

Runs on its own directory and ports, so the shared test stack is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
CONFIG = Path(__file__).resolve().parents[3] / "eventsieve.toml"


def ours(stack_dir: Path) -> list[str]:
    """Command lines of running processes that belong to this stack directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if str(stack_dir) in cmd and state != "Z":
            found.append(cmd)
    return found


def test_up_is_idempotent_status_shows_versions_down_stops_everything(tmp_path, free_ports):
    stack_dir = tmp_path / "stack"
    kafka, controller, ch_tcp, ch_http = free_ports(4)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")
    } | {
        "EVENTSIEVE_CONFIG": str(CONFIG),
        "EVENTSIEVE_STACK__DIR": str(stack_dir),
        "EVENTSIEVE_STACK__KAFKA_PORT": str(kafka),
        "EVENTSIEVE_STACK__KAFKA_CONTROLLER_PORT": str(controller),
        "EVENTSIEVE_STACK__CLICKHOUSE_PORT": str(ch_tcp),
        "EVENTSIEVE_STACK__CLICKHOUSE_HTTP_PORT": str(ch_http),
        "EVENTSIEVE_STACK__KAFKA_HEAP": "384m",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "eventsieve"), *args],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    try:
        first = cli("stack", "up")
        assert "kafka: started" in first.stdout
        assert "clickhouse: started" in first.stdout
        second = cli("stack", "up")
        assert "kafka: already running" in second.stdout
        assert "clickhouse: already running" in second.stdout
        running = ours(stack_dir)
        assert len([c for c in running if "kafka.Kafka" in c]) == 1, running
        assert len([c for c in running if "clickhouse" in c and "config" in c]) == 1, running
        assert len(running) == 2, running

        status = cli("stack", "status").stdout
        assert status.count("running") == 2, status
        assert "4.1.1" in status  # Kafka version
        assert f"127.0.0.1:{ch_tcp}" in status
        clickhouse_row = next(line for line in status.splitlines() if "clickhouse" in line)
        assert any(ch.isdigit() for ch in clickhouse_row.split("│")[4]), status  # its version
    finally:
        down = cli("stack", "down")
    assert "kafka" in down.stdout
    assert "clickhouse" in down.stdout
    assert ours(stack_dir) == []
    assert "stopped" in cli("stack", "status").stdout
