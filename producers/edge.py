"""Edge context: what the endpoint knows of a request besides its body.

Client IP (``X-Forwarded-For`` believed only from configured trusted proxies),
user agent, IP classification, country, SDK name/version and the receive
time. All pure functions of the peer address and headers, so tests need no
server.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The values Plausible documents for X-Plausible-IP-Type; anything else is ignored.
IP_CLASSIFICATIONS = frozenset({"dc_ip", "threat_ip", "anonymous_vpn_ip"})
_IP_TYPE_HEADERS = ("x-plausible-ip-type", "x-ip-type")
# Country headers of common CDNs; believed only from a trusted proxy (else a
# client could dodge a country shield by claiming another country).
_COUNTRY_HEADERS = ("cf-ipcountry", "cloudfront-viewer-country", "x-country-code")
_SDK_HEADERS = (("v-sdk", "v-sdk-version"), ("x-sdk-name", "x-sdk-version"))


@dataclass(frozen=True, slots=True)
class EdgeContext:
    """Per-request facts stored in every RawEvent of the request."""

    received_at: datetime
    ip: str | None = None
    user_agent: str | None = None
    ip_classification: str | None = None
    country: str | None = None
    sdk_name: str | None = None
    sdk_version: str | None = None

    def of_server(self) -> EdgeContext:
        """The context of a server-to-server request, stripped of visitor facts.

        A backend calling a secret-key API (Vero, vtcdn, VibeFollow, the native
        API with a server key) is not the visitor: its address and user agent
        (``python-requests``, ``curl``, ...) must not become the visitor's IP,
        feed the visitor id, trip the bot filter or the IP shields. Its user
        agent is kept as the SDK name when no SDK header named one.
        """
        return EdgeContext(
            received_at=self.received_at,
            sdk_name=self.sdk_name or self.user_agent,
            sdk_version=self.sdk_version if self.sdk_name else None,
        )


def parse_networks(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Trusted proxy addresses/ranges (already validated by the config)."""
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


@functools.lru_cache(maxsize=65_536)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in a peer or X-Forwarded-For entry (port stripped), or None.

    Cached: peers and proxies repeat from request to request, and parsing an
    address cost about as much as the rest of the edge context together.
    """
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.9:51234"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=65_536)
def _ip_text(text: str) -> str | None:
    """The address of ``_ip(text)`` as text (cached: ``str()`` of an address is slow)."""
    address = _ip(text)
    return str(address) if address is not None else None


def _trusted(address: object, networks: tuple[IpNetwork, ...]) -> bool:
    return any(address in net for net in networks)


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IpNetwork, ...]
) -> tuple[str | None, bool]:
    """The client's IP and whether the peer is a trusted proxy.

    From a trusted peer, ``X-Forwarded-For`` is read right to left, skipping
    further trusted proxies; the first untrusted address is the client (the
    leftmost entries are whatever the client wrote, so they are not believed).
    """
    if not trusted:
        return (_ip_text(peer) or peer) if peer else peer, False
    peer_ip = _ip(peer) if peer else None
    if peer_ip is None or not _trusted(peer_ip, trusted):
        return (str(peer_ip) if peer_ip else peer), False
    if not forwarded_for:
        return str(peer_ip), True
    client = peer_ip
    for hop in reversed(forwarded_for.split(",")):
        address = _ip(hop)
        if address is None:
            break  # garbage: stop at the last address we could check
        client = address
        if not _trusted(address, trusted):
            break
    return str(client), True


def edge_context(
    peer: str | None,
    headers: Mapping[str, str],
    received_at: datetime,
    trusted: tuple[IpNetwork, ...] = (),
    *,
    client: tuple[str | None, bool] | None = None,
) -> EdgeContext:
    """Everything the edge records about a request, from its peer and lower-case headers.

    ``client`` is ``client_ip(peer, X-Forwarded-For, trusted)`` when the caller
    already has it.
    """
    if client is None:
        client = client_ip(peer, headers.get("x-forwarded-for"), trusted)
    ip, via_proxy = client
    classification = next(
        (v.strip().lower() for h in _IP_TYPE_HEADERS if (v := headers.get(h))), None
    )
    country = None
    if via_proxy:
        country = next((v.strip().upper() for h in _COUNTRY_HEADERS if (v := headers.get(h))), None)
        if country is not None and (len(country) != 2 or not country.isalpha()):
            country = None  # "XX"-style unknowns pass; "T1" (Tor) and junk do not
    sdk_name = sdk_version = None
    for name_header, version_header in _SDK_HEADERS:
        if headers.get(name_header):
            sdk_name, sdk_version = headers[name_header], headers.get(version_header)
            break
    return EdgeContext(
        received_at=received_at,
        ip=ip,
        user_agent=headers.get("user-agent") or None,
        ip_classification=classification if classification in IP_CLASSIFICATIONS else None,
        country=country,
        sdk_name=sdk_name,
        sdk_version=sdk_version,
    )
