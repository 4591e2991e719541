"""Configuration: the example validates, env overrides win, and bad keys are named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventsieve.config import load_settings, settings_environment
from eventsieve.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "eventsieve.toml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """These tests are about the file: no override from the caller's environment."""
    for var in list(os.environ):
        if var.startswith("EVENTSIEVE_") or var in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL"):
            monkeypatch.delenv(var)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eventsieve.toml"
    path.write_text(text)
    return path


def test_shipped_example_is_valid():
    settings = load_settings(EXAMPLE)
    assert settings.topics.raw == "events.raw"
    assert settings.project("demo") is not None
    assert settings.kafka.bootstrap_servers is None  # local stack by default


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "[topics]\npartitions = 6\n")
    monkeypatch.setenv("EVENTSIEVE_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.internal:9092")
    settings = load_settings(path)
    assert settings.topics.partitions == 12
    assert settings.kafka.bootstrap_servers == "kafka.internal:9092"


def test_config_path_from_environment(tmp_path, monkeypatch):
    path = write(tmp_path, '[topics]\nraw = "custom.raw"\n')
    monkeypatch.setenv("EVENTSIEVE_CONFIG", str(path))
    assert load_settings().topics.raw == "custom.raw"


@pytest.mark.parametrize(
    ("text", "bad_key"),
    [
        ("[topics]\npartitons = 3\n", "topics.partitons"),  # typo: unknown key
        ("[topics]\npartitions = 0\n", "topics.partitions"),
        ('[topics]\nraw = "bad topic!"\n', "topics.raw"),
        ('[stack]\nkafka_port = "x"\n', "stack.kafka_port"),
        ('[[projects]]\nid = "a b"\n', "projects.0.id"),
        ('[[projects]]\nid = "p"\nserver_keys = ["plain-secret"]\n', "projects.0.server_keys"),
        ('[[projects]]\nid = "p"\n[projects.shields]\nip_blocklist = ["1.2.3"]\n',
         "projects.0.shields.ip_blocklist"),
        ('[[projects]]\nid = "p"\n[[projects]]\nid = "p"\n', "projects"),
    ],
)  # fmt: skip
def test_invalid_values_name_the_key(tmp_path, text, bad_key):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert bad_key in caught.value.problems
    assert bad_key in str(caught.value)


def test_syntax_error_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="syntax"):
        load_settings(write(tmp_path, "[topics\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_settings_are_frozen_and_secrets_masked():
    settings = load_settings(EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        settings.topics.raw = "x"  # type: ignore[misc]
    assert "change-me" not in repr(settings)


def test_settings_travel_to_a_child_process_through_the_environment(tmp_path, monkeypatch):
    original = load_settings(EXAMPLE)
    changed = original.model_copy(
        update={
            "topics": original.topics.model_copy(update={"raw": "t1.raw", "partitions": 3}),
            "kafka": original.kafka.model_copy(update={"bootstrap_servers": "10.1.2.3:9092"}),
        }
    )
    for key, value in settings_environment(changed).items():
        monkeypatch.setenv(key, value)
    other_file = write(tmp_path, '[topics]\nraw = "from.file"\n')
    assert load_settings(other_file) == changed
