"""The official Python SDKs, unchanged but for their base URL, land events in Kafka."""

from __future__ import annotations

import pytest
import vero
from vemetric import VemetricClient
from vero.client import Endpoint, VeroEndpoints

# A hung broker or server fails the test instead of stalling the suite.
pytestmark = pytest.mark.timeout(120)


def test_vemetric_python_sdk(make_settings, serve, read_raw, caplog):
    ep = serve(make_settings())
    client = VemetricClient(token="demo-public-token", host=ep.url, timeout=10)
    client.track_event(
        "Purchase Completed",
        user_identifier="user-123",
        user_display_name="Ann Example",
        event_data={"amount": 49.5, "currency": "EUR", "items": ["a", "b"]},
        user_data={"set": {"plan": "pro"}, "setOnce": {"signup": "2026-01-01"}, "unset": ["trial"]},
    )
    client.update_user(
        "user-123",
        user_display_name="Ann E.",
        user_avatar_url="https://img.example/a.png",
        user_data={"set": {"plan": "team"}},
    )
    # The SDK only logs HTTP errors; none may have happened.
    assert not [r for r in caplog.records if r.name == "Vemetric"]
    records = read_raw(ep.topic)
    assert [event["name"] for _, event in records] == ["Purchase Completed", "$update_user"]
    (key, track), (_, update) = records
    assert key == b"demo:user-123"
    assert (track["source"], track["kind"], track["user_id"], track["display_name"]) == (
        "vemetric",
        "track",
        "user-123",
        "Ann Example",
    )
    assert track["properties"] == {"amount": "49.5", "currency": "EUR", "items": '["a","b"]'}
    assert (
        track["user_properties"],
        track["user_properties_once"],
        track["user_properties_unset"],
    ) == ({"plan": "pro"}, {"signup": "2026-01-01"}, ["trial"])
    # A server SDK is a backend: its address and user agent are not the visitor's.
    assert (track["sdk_name"], track["user_agent"], track["ip"]) == ("python", None, None)
    assert (update["kind"], update["display_name"], update["user_properties"]) == (
        "update_user",
        "Ann E.",
        {"plan": "team", "avatarUrl": "https://img.example/a.png"},
    )


@pytest.fixture
def vero_at(monkeypatch):
    """Point the vero package's endpoint table (it has no host option) at a base URL."""

    def point(base_url: str) -> None:
        for name, endpoint in vars(VeroEndpoints).items():
            if isinstance(endpoint, Endpoint):
                path = endpoint.url.removeprefix("https://api.getvero.com")
                monkeypatch.setattr(VeroEndpoints, name, Endpoint(endpoint.method, base_url + path))

    return point


def test_vero_python_sdk(make_settings, serve, read_raw, vero_at):
    ep = serve(make_settings())
    vero_at(ep.url)
    logger = vero.VeroEventLogger("demo-vero-token")
    assert logger.heartbeat()
    calls = [
        logger.add_event(
            "Viewed product",
            {"product_name": "Red T-shirt", "price": 10},
            user_id=1000,
            user_email="test@example.com",
        ),
        logger.add_event("Viewed product", {"product_name": "Blue"}, user_id="u2"),
        logger.add_user("u2", {"first_name": "Bo"}, user_email="bo@example.com"),
        logger.edit_user("u2", {"first_name": "Bob"}),
        logger.add_tags("u2", ["vip"]),
        logger.remove_tags("u2", ["trial"]),
        logger.reidentify_user("u2", "u3"),
        logger.unsubscribe_user("u3"),
        logger.resubscribe_user("u3"),
        logger.delete_user("u3"),
    ]
    for response in calls:
        assert response.status_code == 200, response.text
        assert response.json() == {"status": 200, "message": "Success."}
    bad = vero.VeroEventLogger("wrong-token").add_event("x", {}, user_id="u")
    assert bad.status_code == 401
    records = read_raw(ep.topic)
    names = [event["name"] for _, event in records]
    assert sorted(names) == sorted(
        [
            "Viewed product",
            "Viewed product",
            "$identify",
            "$update_user",
            "$tags",
            "$tags",
            "$reidentify",
            "$unsubscribe",
            "$resubscribe",
            "$delete_user",
        ]
    )
    first = next(e for k, e in records if e["user_id"] == "1000")
    assert (first["email"], first["properties"], first["source"]) == (
        "test@example.com",
        {"product_name": "Red T-shirt", "price": "10"},
        "vero",
    )
    assert {k for k, _ in records} <= {b"demo:1000", b"demo:u2", b"demo:u3"}
