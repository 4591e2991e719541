"""Stop the pipeline, let records wait in events.raw, start it again: every event lands once.

Records are produced the way the endpoint and most publishers produce them:
confluent-kafka with its default partitioner, so the stream's re-key path is
exercised too. The group has committed offsets when the second worker starts,
as after any deploy.
"""

from __future__ import annotations

import time
import uuid

import pytest

from eventsieve.config import Settings, settings_environment
from eventsieve.pipeline import programs
from eventsieve.supervisor import Supervisor
from sinks import queries
from sinks.errors import ClickHouseUnavailableError
from sinks.service import connect


def landed(settings: Settings, want: int, timeout: float = 90.0) -> tuple[int, int]:
    """(distinct event ids, rows after collapsing) once ``want`` landed or time ran out."""
    ch = connect(settings)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:  # the sink creates the tables when it starts
                if queries.event_count(ch, "demo") >= want:
                    break
            except ClickHouseUnavailableError:
                pass
            time.sleep(0.5)
        time.sleep(2)  # anything beyond `want` (a double) would show up now
        collapsed = f"SELECT count() FROM (SELECT event_id FROM {ch.database}.events FINAL)"
        return queries.event_count(ch, "demo"), ch.scalar(collapsed)
    finally:
        ch.close()


@pytest.fixture
def settings(test_settings: Settings, tmp_path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return test_settings.model_copy(
        update={
            "streams": test_settings.streams.model_copy(
                update={"app_id": f"test-restart-{tag}", "data_dir": tmp_path / "streams"}
            ),
            "sink": test_settings.sink.model_copy(
                update={"group_id": f"test-restart-sink-{tag}", "batch_max_interval_s": 0.5}
            ),
        }
    )


def run_worker_and_sink(settings: Settings, log) -> Supervisor:
    worker_and_sink = [p for p in programs(None) if p.name != "producer"]
    supervisor = Supervisor(worker_and_sink, out=log, env=settings_environment(settings))
    supervisor.start()
    return supervisor


def test_records_waiting_across_a_restart_land_exactly_once(
    settings: Settings, tmp_path, publish_direct
):
    log = (tmp_path / "pipeline.log").open("w")
    first = publish_direct(settings, 60, "a")
    pipeline = run_worker_and_sink(settings, log)
    try:
        assert landed(settings, 60) == (60, 60), (tmp_path / "pipeline.log").read_text()[-3000:]
    finally:
        pipeline.stop_all()
    second = publish_direct(settings, 60, "b")
    pipeline = run_worker_and_sink(settings, log)
    try:
        assert landed(settings, 120) == (120, 120), (tmp_path / "pipeline.log").read_text()[-3000:]
    finally:
        pipeline.stop_all()
        log.close()
    assert len(first | second) == 120
