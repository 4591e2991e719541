from __future__ import annotations

from datetime import UTC, datetime

import pytest

from producers.edge import client_ip, edge_context, parse_networks

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PROXIES = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.5", "1.2.3.4", ("203.0.113.5", False)),  # untrusted peer: XFF ignored
        ("10.0.0.1", "198.51.100.7", ("198.51.100.7", True)),
        ("10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.2", ("198.51.100.7", True)),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", ("10.0.0.3", True)),  # all trusted: leftmost
        ("10.0.0.1", "junk, 198.51.100.7", ("198.51.100.7", True)),
        ("10.0.0.1", None, ("10.0.0.1", True)),
        ("2001:db8::1", "[2001:db9::5]:443", ("2001:db9::5", True)),
        ("::ffff:10.0.0.1", "198.51.100.9:5555", ("198.51.100.9", True)),
    ],
)
def test_client_ip(peer, xff, expected):
    assert client_ip(peer, xff, PROXIES) == expected


def test_no_trusted_proxies_means_peer():
    assert client_ip("10.0.0.1", "1.1.1.1", ()) == ("10.0.0.1", False)


def test_edge_context_headers():
    headers = {
        "user-agent": "UA/1",
        "x-plausible-ip-type": "DC_IP",
        "v-sdk": "python",
        "v-sdk-version": "0.2.0",
        "cf-ipcountry": "de",
        "x-forwarded-for": "198.51.100.1",
    }
    edge = edge_context("10.1.1.1", headers, NOW, PROXIES)
    assert (edge.ip, edge.user_agent, edge.ip_classification) == ("198.51.100.1", "UA/1", "dc_ip")
    assert (edge.sdk_name, edge.sdk_version, edge.country) == ("python", "0.2.0", "DE")
    assert edge.received_at == NOW


def test_country_only_from_trusted_proxies_and_unknown_ip_types_ignored():
    edge = edge_context(
        "203.0.113.1", {"cf-ipcountry": "DE", "x-plausible-ip-type": "evil"}, NOW, PROXIES
    )
    assert (edge.country, edge.ip_classification) == (None, None)


def test_a_backend_request_tells_nothing_about_the_visitor():
    edge = edge_context(
        "198.51.100.7:40000",
        {"user-agent": "python-requests/2.32", "x-plausible-ip-type": "dc_ip"},
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    server = edge.of_server()
    assert (server.ip, server.user_agent, server.ip_classification) == (None, None, None)
    assert server.sdk_name == "python-requests/2.32"  # kept, as what sent it
    assert server.received_at == edge.received_at
