"""`eventsieve stack up` without its prerequisites: one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_missing_java_gives_one_clear_message(tmp_path):
    env = {
        "PATH": str(tmp_path / "empty-bin"),  # no java, no mvn, no clickhouse
        "HOME": str(tmp_path),
        "EVENTSIEVE_CONFIG": str(Path(__file__).resolve().parents[3] / "eventsieve.toml"),
        "EVENTSIEVE_STACK__DIR": str(tmp_path / "stack"),
        "EVENTSIEVE_STACK__KAFKA_PORT": "1",  # never bound: the check fails before
        "EVENTSIEVE_STACK__KAFKA_CONTROLLER_PORT": "2",
    }
    result = subprocess.run(
        [str(BIN / "eventsieve"), "stack", "up"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Java not found" in result.stderr
    assert "docker compose up" in result.stderr
    assert os.path.exists(tmp_path / "stack") is False or not any(
        (tmp_path / "stack").rglob("*.pid")
    )


def test_bad_config_names_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[topics]\npartitions = -1\n")
    result = subprocess.run(
        [str(BIN / "eventsieve"), "--config", str(config), "stack", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "topics.partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_kraft_cluster_ids_never_start_with_a_dash() -> None:
    """kafka-storage took such an id for an option: one first start in 64 failed."""
    from ops.stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5_000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)
