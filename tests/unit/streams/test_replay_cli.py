"""``eventsieve replay``'s options: refused before anything connects to Kafka or ClickHouse."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.cli.sink import UsageError

CONFIG = Path(__file__).resolve().parents[3] / "eventsieve.toml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-01-02", "--to", "2026-01-01"], "--to must be after --from"),
        (["--from", "2026-01-01", "--to", "2026-01-01"], "--to must be after --from"),
        (["--from", "yesterday"], "is not an ISO 8601 date/time"),
        (["--from", "2026-01-01", "--project", "nope"], "unknown project 'nope'"),
    ],
)
def test_bad_options_are_one_clear_error(args, message):
    result = CliRunner().invoke(app, ["--config", str(CONFIG), "replay", *args])
    assert isinstance(result.exception, UsageError)
    assert message in str(result.exception)


def test_from_is_required():
    result = CliRunner().invoke(app, ["--config", str(CONFIG), "replay"])
    assert result.exit_code == 2
    assert "--from" in result.output
