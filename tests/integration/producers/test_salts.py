"""Visitor ids from random daily salts kept in Kafka for 48 hours, shared by every process."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from pathlib import Path

import httpx
import orjson
from confluent_kafka.admin import ConfigResource
from typer.testing import CliRunner

from eventsieve.kafka import admin_client
from ops.cli import app
from producers.salts import RETENTION_MS, KafkaDailySalts
from schemas.canonical import visitor_id_with
from schemas.topology import salts_topic

ROOT = Path(__file__).resolve().parents[3]

BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Content-Type": "text/plain",
}
PAGE = {"n": "pageview", "u": "https://example.com/a", "d": "example.com"}


def secret_only_visitor_id(secret: str, day: dt.date, ip: str, agent: str, domain: str) -> str:
    """A visitor id under a salt derived from the secret and the day alone: anyone
    holding the secret could recompute it for every past day, so nothing may use it."""
    salt = hmac.new(secret.encode(), day.isoformat().encode(), hashlib.sha256).digest()
    return visitor_id_with(salt, ip, agent, domain)


def test_two_endpoints_give_a_browser_one_visitor_id_not_derivable_from_the_secret(
    make_settings, serve, read_raw
):
    settings = make_settings()
    first, second = serve(settings), serve(settings)
    for ep in (first, second):
        with httpx.Client(base_url=ep.url, timeout=10) as http:
            assert http.post("/api/event", headers=BROWSER, json=PAGE).status_code == 202
    (_, one), (_, two) = read_raw(first.topic)
    assert one["visitor_id"]
    assert one["visitor_id"] == two["visitor_id"]
    secret = settings.privacy.salt_secret.get_secret_value()
    today = dt.datetime.now(dt.UTC).date()
    derived = secret_only_visitor_id(
        secret, today, "127.0.0.1", BROWSER["User-Agent"], "example.com"
    )
    assert one["visitor_id"] != derived  # the secret alone does not give the salt


def test_the_nonces_are_deleted_by_kafka_after_48_hours(make_settings, serve, kafka_bootstrap):
    settings = make_settings()
    ep = serve(settings)
    topic = salts_topic(ep.topic)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = admin_client(kafka_bootstrap)  # kept alive until the answer is in
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == str(RETENTION_MS) == "172800000"
    assert configs["cleanup.policy"].value == "delete"
    assert int(configs["segment.ms"].value) <= 3_600_000


def test_processes_racing_for_the_first_nonce_settle_on_one_salt(kafka_bootstrap, new_topic):
    topic = salts_topic(new_topic(1))
    stores = [KafkaDailySalts(kafka_bootstrap, topic, "s" * 32) for _ in range(3)]
    starters = [threading.Thread(target=store.start) for store in stores]
    for starter in starters:
        starter.start()
    try:
        assert all(store.wait_ready(30) for store in stores)
        today = dt.datetime.now(dt.UTC).date()
        assert len({store.salt(today) for store in stores}) == 1
    finally:
        for store in stores:
            store.close()


def test_old_days_leave_memory_and_tomorrow_is_prepared_before_midnight(kafka_bootstrap, new_topic):
    now = [dt.datetime(2026, 12, 3, 22, 30, tzinfo=dt.UTC)]
    topic = salts_topic(new_topic(1))
    store = KafkaDailySalts(kafka_bootstrap, topic, "s" * 32, now=lambda: now[0], refresh_s=0.2)
    store.start()
    try:
        assert store.wait_ready(30)
        today, tomorrow = dt.date(2026, 12, 3), dt.date(2026, 12, 4)
        assert store.salt(today) is not None
        assert store.salt(tomorrow) is not None  # proposed in the last hours of today
        assert store.salt(today) != store.salt(tomorrow)
        now[0] = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
        day_after = dt.date(2026, 12, 5)
        while dt.datetime.now(dt.UTC) < deadline and (
            store.salt(today) is not None or store.salt(day_after) is None
        ):
            threading.Event().wait(0.2)
        assert store.salt(today) is None  # before yesterday: forgotten
        assert store.salt(day_after) is not None
    finally:
        store.close()


def test_eventsieve_publish_gives_a_browser_the_endpoints_visitor_id_of_the_day(
    make_settings, serve, read_raw, kafka_bootstrap
):
    """A direct publisher's anonymous event gets its visitor id where the salt lives
    (the salts topic), the same the endpoint gives the same browser today."""
    settings = make_settings()
    endpoint = serve(settings)
    with httpx.Client(base_url=endpoint.url, timeout=10) as http:
        assert http.post("/api/event", headers=BROWSER, json=PAGE).status_code == 202
    line = {
        "project": "demo",
        "name": "pageview",
        "ip": "127.0.0.1",
        "user_agent": BROWSER["User-Agent"],
        "domain": "example.com",
    }
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "EVENTSIEVE_TOPICS__RAW": endpoint.topic}
    published = CliRunner().invoke(
        app,
        ["--config", str(ROOT / "eventsieve.toml"), "publish", "-"],
        input=orjson.dumps(line) + b"\n",
        env=env,
    )
    assert published.exit_code == 0, published.output
    (_, by_endpoint), (key, by_cli) = read_raw(endpoint.topic)
    assert by_cli["visitor_id"] == by_endpoint["visitor_id"]
    assert key == f"demo:{by_endpoint['visitor_id']}".encode()
    secret = settings.privacy.salt_secret.get_secret_value()
    today = dt.datetime.now(dt.UTC).date()
    derived = secret_only_visitor_id(secret, today, "127.0.0.1", line["user_agent"], "example.com")
    assert by_cli["visitor_id"] != derived
