"""Trust follows credentials, end to end: what a browser's public token sends can add
events, never replace or drop what a server sent with its secret key."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import httpx

from eventsieve.config import Settings
from ops.pipeline import endpoint_url
from sinks.clickhouse import ClickHouse
from sinks.service import connect

SERVER = {"Authorization": "Bearer demo-secret-key"}
PUBLIC = {"Authorization": "Bearer demo-public-token"}


def _rows(ch: ClickHouse, event_ids: list[str], wanted: int, timeout: float = 90) -> list[tuple]:
    """(event_id, name, credential-less view) of the latest decision per id, once ``wanted``
    rows (by event id) have landed."""
    deadline = time.monotonic() + timeout
    db = ch.database
    while True:
        rows = ch.execute(
            f"SELECT event_id, argMax(name, version), argMax(decision, version), count() "
            f"FROM {db}.events WHERE event_id IN %(ids)s GROUP BY event_id ORDER BY event_id",
            {"ids": tuple(event_ids)},
        )
        if sum(r[3] for r in rows) >= wanted or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_a_public_token_reusing_a_server_events_id_cannot_replace_it(pipeline: Settings):
    url = endpoint_url(pipeline)
    event_id = f"order-{uuid.uuid4().hex[:8]}"
    # A time within the tolerance, so it is the event time of both (a forged
    # far time would be replaced by each one's receive time: two rows apart).
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).isoformat()
    real = {"event_id": event_id, "name": "purchase", "user_id": "u1", "timestamp": stamp}
    forged = {**real, "name": "refund", "user_id": "u2"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/v1/events", headers=SERVER, json=real).status_code == 202
        time.sleep(1.0)  # the forgery decides later: newest would win without ranks
        assert http.post("/v1/events", headers=PUBLIC, json=forged).status_code == 202
    ch = connect(pipeline)
    try:
        rows = _rows(ch, [event_id], wanted=2)
        ch.execute(f"OPTIMIZE TABLE {ch.database}.events FINAL")
        final = ch.execute(
            f"SELECT name, user_id FROM {ch.database}.events FINAL WHERE event_id = %(id)s",
            {"id": event_id},
        )
    finally:
        ch.close()
    assert rows == [(event_id, "purchase", "accepted", 2)]
    assert final == [("purchase", "u1")]


def test_an_unauthenticated_purchase_cannot_claim_a_merchants_order_id(pipeline: Settings):
    """The hostile case: anyone can post a Plausible purchase with an orderId; the
    merchant's later confirmation (secret vtcdn key) must not be dropped because of it."""
    url = endpoint_url(pipeline)
    order = f"A-{uuid.uuid4().hex[:8]}"
    forged = {"n": "purchase", "u": "https://example.com/thanks", "p": {"orderId": order}}
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0 Safari/537.36"}
    merchant = {"Authorization": "Bearer demo-vtcdn-key"}
    confirmation = {
        "user": {"email": "buyer@example.com"},
        "event": {"confirmation": {"orderId": order}},
    }
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/api/event", headers=browser, json=forged).status_code == 202
        time.sleep(1.0)  # the forgery is first, by arrival and by event time
        assert http.post("/v1/event/", headers=merchant, json=confirmation).status_code == 200
        time.sleep(1.0)
        again = {**forged, "u": "https://example.com/thanks?again"}
        assert http.post("/api/event", headers=browser, json=again).status_code == 202
    ch = connect(pipeline)
    try:
        deadline = time.monotonic() + 90
        while True:
            rows = ch.execute(
                "SELECT argMax(source, version), argMax(decision, version), "
                "argMax(drop_reason, version) "
                f"FROM {ch.database}.events "
                "WHERE order_id = %(order)s OR has(property_values, %(order)s) "
                "GROUP BY event_id",
                {"order": order},
            )
            if len(rows) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        ch.close()
    assert len(rows) == 3
    # The merchant's confirmation is never dropped because of a browser's event.
    assert ("vtcdn", "accepted", "") in rows
    # A browser's purchase may add an event while the order id is free (the
    # forgery, if it reached events.orders first), never after: whichever way
    # the records met on events.orders, at most one browser purchase is kept.
    browsers = sorted(row for row in rows if row[0] == "plausible")
    assert browsers in (
        [("plausible", "accepted", ""), ("plausible", "dropped", "duplicate_order")],
        [("plausible", "dropped", "duplicate_order")] * 2,
    )


def test_an_event_id_sent_twice_without_a_timestamp_counts_once(pipeline: Settings):
    url = endpoint_url(pipeline)
    event_id = f"client-{uuid.uuid4().hex[:8]}"
    event = {"event_id": event_id, "name": "signup", "user_id": "u-resend"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/v1/events", headers=SERVER, json=event).status_code == 202
        time.sleep(2.0)  # another receive time: no timestamp, so another event time
        assert http.post("/v1/events", headers=SERVER, json=event).status_code == 202
    ch = connect(pipeline)
    try:
        copies = _copies_of(ch, event_id)
        rows = _rows(ch, [event_id], wanted=1)
        time.sleep(1.0)  # a second row under the id would have landed with the copy
        rows = _rows(ch, [event_id], wanted=1)
    finally:
        ch.close()
    # One row under the client's id: the event, accepted, counted once. The
    # copy is kept as a drop under an id of its own that names the original.
    assert rows == [(event_id, "signup", "accepted", 1)]
    [(copy_id, decision, reason)] = copies
    assert copy_id != event_id
    assert (decision, reason) == ("dropped", "duplicate_idempotency_key")


def _copies_of(ch: ClickHouse, event_id: str, timeout: float = 90) -> list[tuple]:
    """(event_id, decision, drop_reason) of the dropped copies whose detail names ``event_id``."""
    deadline = time.monotonic() + timeout
    while True:
        rows = ch.execute(
            f"SELECT event_id, toString(decision), drop_reason FROM {ch.database}.events "
            "WHERE position(drop_detail, %(id)s) > 0 AND event_id != %(id)s",
            {"id": event_id},
        )
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)
