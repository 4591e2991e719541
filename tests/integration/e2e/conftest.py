"""The whole pipeline as real processes, for the end-to-end tests."""

from __future__ import annotations

import pytest

from eventsieve.config import Settings, settings_environment
from ops.pipeline import programs, wait_for_endpoint
from ops.supervisor import Supervisor
from sinks.migrate import migrate
from sinks.service import connect


@pytest.fixture
def pipeline(pipeline_settings: Settings, tmp_path, free_ports):
    """The three pipeline processes on this test's topics and database.

    The schema is migrated first, as ``eventsieve run`` does: a test may
    query ClickHouse before the sink process has started.
    """
    server = pipeline_settings.server.model_copy(update={"port": free_ports(1)[0]})
    settings = pipeline_settings.model_copy(update={"server": server})
    ch = connect(settings)
    try:
        migrate(ch, settings.sink.dedup_window, settings.clickhouse.cluster)
    finally:
        ch.close()
    log_path = tmp_path / "pipeline.log"
    with log_path.open("w") as log:
        supervisor = Supervisor(programs(None), out=log, env=settings_environment(settings))
        supervisor.start()
        try:
            wait_for_endpoint(settings, timeout=90)
            yield settings
            assert supervisor.exited() is None, log_path.read_text()[-5000:]
        finally:
            supervisor.stop_all()
