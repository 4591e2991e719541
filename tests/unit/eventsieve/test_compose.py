"""docker-compose.yml stays valid and agrees with the local stack's defaults."""

from __future__ import annotations

from pathlib import Path

import yaml

from eventsieve.config import StackSettings

COMPOSE = Path(__file__).resolve().parents[3] / "docker-compose.yml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_service_has_a_healthcheck_and_named_volumes_are_declared():
    compose = load()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        assert "healthcheck" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name}: volume {source!r} not declared"


def test_host_ports_match_the_local_stack_defaults():
    stack = StackSettings()
    services = load()["services"]
    published = {p.split(":")[0] for s in services.values() for p in s.get("ports", [])}
    assert str(stack.kafka_port) in published
    assert str(stack.clickhouse_port) in published
    assert str(stack.clickhouse_http_port) in published
    assert services["kafka"]["image"].endswith(stack.kafka_version)
