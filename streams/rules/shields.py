"""Per-project shields (Plausible): IP/CIDR and country blocklists, page blocklist,
hostname allowlist, from ``[projects.shields]`` in the configuration."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from fnmatch import fnmatchcase

from eventsieve.config import ProjectSettings, ShieldSettings
from schemas.reasons import DropReason, Stage
from streams.decision import Dropped
from streams.facts import Facts
from streams.state import State


class ProjectShields:
    """One project's shields, compiled once."""

    def __init__(self, shields: ShieldSettings) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in shields.ip_blocklist)
        self.countries = frozenset(c.upper() for c in shields.country_blocklist)
        self.pages = tuple(shields.page_blocklist)
        self.hostnames = tuple(h.strip().lower() for h in shields.hostname_allowlist)

    def check(self, facts: Facts) -> Dropped | None:
        if self.networks and facts.ip:
            blocked = _blocked_network(facts.ip, self.networks)
            if blocked:
                return Dropped(DropReason.SITE_IP_BLOCKLIST, Stage.SHIELDS, blocked)
        if self.countries and facts.country in self.countries:
            return Dropped(DropReason.SITE_COUNTRY_BLOCKLIST, Stage.SHIELDS, facts.country or "")
        if self.pages and facts.path is not None:
            for pattern in self.pages:
                if _page_matches(pattern, facts.path):
                    return Dropped(DropReason.SITE_PAGE_BLOCKLIST, Stage.SHIELDS, pattern)
        if self.hostnames and facts.hostname is not None:
            host = facts.hostname.lower()
            if not any(fnmatchcase(host, pattern) for pattern in self.hostnames):
                return Dropped(DropReason.SITE_HOSTNAME_ALLOWLIST, Stage.SHIELDS, host)
        return None


class ShieldFilter:
    """Applies the event's project's shields; projects without shields cost nothing."""

    name = "shields"
    stage = Stage.SHIELDS

    def __init__(self, projects: Iterable[ProjectSettings]) -> None:
        self.by_project = {
            p.id: ProjectShields(p.shields) for p in projects if _has_shields(p.shields)
        }

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        shields = self.by_project.get(facts.project)
        return shields.check(facts) if shields else None


def _has_shields(s: ShieldSettings) -> bool:
    return bool(s.ip_blocklist or s.country_blocklist or s.page_blocklist or s.hostname_allowlist)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _blocked_network(ip: str, networks: tuple[Network, ...]) -> str | None:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None  # not an address: nothing to match (validation is not this rule's job)
    for network in networks:
        if address.version == network.version and address in network:
            return str(network)
    return None


def _page_matches(pattern: str, path: str) -> bool:
    """Glob page patterns (``/admin/*``); ``*`` also matches across ``/`` here."""
    return fnmatchcase(path, pattern)
