"""docker-compose.yml stays valid, agrees with the docs and with the local stack.

Validity is checked against the Compose Specification's JSON schema, vendored
from compose-spec/compose-go (tests/data/compose-spec.json, Apache-2.0), the
schema `docker compose` itself validates with — so no Docker is needed here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from eventsieve.config import StackSettings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
OPERATING = ROOT / "docs" / "operating.md"
DOCKERFILE = ROOT / "Dockerfile"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def documented_services() -> dict[str, set[str]]:
    """The service table of docs/operating.md: service name → host ports it names."""
    table = re.search(r"^\| service +\| what it runs.*?\n\n", OPERATING.read_text(), re.M | re.S)
    assert table, "docs/operating.md lost its table of compose services"
    rows = re.findall(r"^\| `([a-z-]+)` +\|[^|]*\|([^|]*)\|$", table.group(0), re.M)
    return {name: set(re.findall(r"\d+", ports)) for name, ports in rows}


def published_ports(service: dict) -> set[str]:
    return {str(p).rsplit(":", 1)[0].split(":")[-1] for p in service.get("ports", [])}


def test_the_compose_file_is_valid_compose():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(load(), schema)


def test_the_schema_check_catches_a_broken_compose_file():
    schema = json.loads(SCHEMA.read_text())
    broken = load()
    broken["services"]["sink"]["depends_on"] = {"kafka": {"condition": "when_it_feels_like_it"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_every_documented_service_and_port_is_in_the_compose_file_and_back():
    services = load()["services"]
    documented = documented_services()
    assert set(documented) == set(services)
    for name, ports in documented.items():
        assert ports == published_ports(services[name]), name


def test_every_service_has_a_healthcheck_and_named_volumes_are_declared():
    compose = load()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        assert "healthcheck" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name}: volume {source!r} not declared"


def test_the_pipeline_services_run_the_cli_commands_against_the_compose_services():
    services = load()["services"]
    commands = {name: services[name]["command"][0] for name in ("endpoint", "worker", "sink")}
    assert commands == {"endpoint": "serve", "worker": "worker", "sink": "sink"}
    for name in commands:
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["CLICKHOUSE_URL"].startswith("clickhouse://default:@clickhouse:9000/")
        assert services[name]["build"] == "."
    assert services["sink"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    # The endpoint must listen beyond the container's loopback to be reachable.
    assert "0.0.0.0" in services["endpoint"]["command"]


def test_the_dockerfile_copies_every_package_and_runs_the_cli():
    dockerfile = DOCKERFILE.read_text()
    for package in ("eventsieve", "producers", "streams", "sinks", "schemas"):
        assert f"COPY {package}/ {package}/" in dockerfile
    assert "-c requirements.lock" in dockerfile
    assert 'ENTRYPOINT ["eventsieve"]' in dockerfile


def test_host_ports_match_the_local_stack_defaults():
    stack = StackSettings()
    services = load()["services"]
    assert published_ports(services["kafka"]) == {str(stack.kafka_port)}
    assert published_ports(services["clickhouse"]) == {
        str(stack.clickhouse_port),
        str(stack.clickhouse_http_port),
    }
    assert services["kafka"]["image"].endswith(stack.kafka_version)
