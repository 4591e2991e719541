"""Stateless filters: bots, spam referrers, IP classification (Plausible's reasons).

Shields configured per project live in rules/shields.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from schemas.reasons import DropReason, Stage
from streams.decision import Dropped
from streams.facts import Facts
from streams.state import State
from streams.useragents import UserAgents

# A seed of long-known referrer-spam hosts (from the public referrer-spam
# blocklists that analytics tools share); projects add their own in
# ``streams.spam_referrers``. Subdomains match too.
DEFAULT_SPAM_REFERRERS: tuple[str, ...] = (
    "semalt.com",
    "semalt.semalt.com",
    "buttons-for-website.com",
    "buttons-for-your-website.com",
    "darodar.com",
    "ilovevitaly.com",
    "ilovevitaly.ru",
    "priceg.com",
    "blackhatworth.com",
    "hulfingtonpost.com",
    "best-seo-offer.com",
    "best-seo-solution.com",
    "free-share-buttons.com",
    "social-buttons.com",
    "simple-share-buttons.com",
    "get-free-traffic-now.com",
    "floating-share-buttons.com",
    "trafficmonetize.org",
    "4webmasters.org",
    "event-tracking.com",
)


class BotFilter:
    """User agents of bots, crawlers, spiders and headless browsers → ``bot``."""

    name = "bot"
    stage = Stage.BOT

    def __init__(self, user_agents: UserAgents) -> None:
        self.user_agents = user_agents

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        if not facts.user_agent:
            return None  # server-side publishers send none: not evidence of a bot
        bot = self.user_agents.info(facts.user_agent).bot
        return Dropped(DropReason.BOT, Stage.BOT, bot) if bot else None


class SpamReferrerFilter:
    """A referrer host on the spam list (or a subdomain of one) → ``spam_referrer``."""

    name = "spam_referrer"
    stage = Stage.SPAM

    def __init__(self, hosts: Iterable[str]) -> None:
        self.hosts = frozenset(h.strip().lower().removeprefix("www.") for h in hosts if h.strip())

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        host = facts.referrer_host
        if not host:
            return None
        host = host.removeprefix("www.")
        while True:
            if host in self.hosts:
                return Dropped(DropReason.SPAM_REFERRER, Stage.SPAM, host)
            dot = host.find(".")
            if dot < 0:
                return None
            host = host[dot + 1 :]


class IpClassificationFilter:
    """The trusted proxy's IP classification: ``dc_ip``, ``threat_ip`` dropped; VPNs kept."""

    name = "ip_classification"
    stage = Stage.IP_CLASSIFICATION
    _DROPPED: ClassVar[dict[str, DropReason]] = {
        "dc_ip": DropReason.DC_IP,
        "threat_ip": DropReason.THREAT_IP,
    }

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        if not facts.ip_classification:
            return None
        reason = self._DROPPED.get(facts.ip_classification.strip().lower())
        return Dropped(reason, Stage.IP_CLASSIFICATION) if reason else None
