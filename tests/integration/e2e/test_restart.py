"""Stop the pipeline, let records wait in events.raw, start it again: every event lands once.

Records are produced the way the endpoint and most publishers produce them:
confluent-kafka with its default partitioner, so the stream's re-key path is
exercised too. The group has committed offsets when the second worker starts,
as after any deploy.
"""

from __future__ import annotations

import time

import pytest

from eventsieve.config import Settings
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
def settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings


def test_records_waiting_across_a_restart_land_exactly_once(
    settings: Settings, publish_direct, worker_and_sink
):
    first = publish_direct(settings, 60, "a")
    pipeline = worker_and_sink(settings)
    assert landed(settings, 60) == (60, 60), pipeline.log()
    pipeline.stop()
    second = publish_direct(settings, 60, "b")
    pipeline = worker_and_sink(settings)
    assert landed(settings, 120) == (120, 120), pipeline.log()
    pipeline.stop()
    assert len(first | second) == 120
