"""A client's clock is believed only within the tolerance, in what is stored too."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import httpx

from eventsieve.config import Settings
from ops.pipeline import endpoint_url
from sinks.service import connect

PUBLIC = {"Authorization": "Bearer demo-public-token"}


def test_forged_client_times_are_stored_as_the_receive_time(pipeline: Settings):
    ids = {
        f"t-{uuid.uuid4().hex[:8]}": stamp
        for stamp in ("2099-12-31T00:00:00Z", "1971-01-01T00:00:00Z")
    }
    sent_at = dt.datetime.now(dt.UTC)
    with httpx.Client(base_url=endpoint_url(pipeline), timeout=30) as http:
        for event_id, stamp in ids.items():
            event = {"event_id": event_id, "name": "clock", "user_id": event_id, "timestamp": stamp}
            assert http.post("/v1/events", headers=PUBLIC, json=event).status_code == 202
    ch = connect(pipeline)
    try:
        deadline = time.monotonic() + 90
        while True:
            rows = ch.execute(
                f"SELECT event_id, event_time, timestamp_ms, received_at_ms "
                f"FROM {ch.database}.events WHERE event_id IN %(ids)s",
                {"ids": tuple(ids)},
            )
            if len(rows) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        ch.close()
    assert len(rows) == len(ids)
    for _event_id, event_time, timestamp_ms, received_at_ms in rows:
        assert timestamp_ms == received_at_ms
        stored = event_time.replace(tzinfo=dt.UTC) if event_time.tzinfo is None else event_time
        assert abs((stored - sent_at).total_seconds()) < 120
