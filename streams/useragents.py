"""User agents: bot detection (crawlerdetect) and browser/OS/device parsing (ua-parser).

Both are regex-heavy (about 200 µs and 50 µs for a new string) while user
agents repeat heavily, so results are cached per user-agent string in a
bounded LRU. The cache only remembers pure results: it never changes one.

crawlerdetect's time grows with the square of a string's length (16,000
letters: about 40 s; 512: 25 ms): a hostile user agent must not hold the
stream. No browser sends more than a few hundred characters, so a user agent
over ``MAX_USER_AGENT_CHARS`` is a bot by its length alone, and only the first
``DETECTED_CHARS`` of the others are matched (where every crawler names itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import ua_parser
from crawlerdetect import CrawlerDetect

# Automation that crawlerdetect may miss: headless and scripted browsers.
_HEADLESS = re.compile(
    r"HeadlessChrome|PhantomJS|Puppeteer|Playwright|Selenium|webdriver|SlimerJS|Nightmare",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    """What a user agent says: ``bot`` is the matched pattern, or None for a person."""

    bot: str | None
    browser: str | None
    browser_version: str | None
    os: str | None
    os_version: str | None
    device: str | None


_EMPTY = UserAgentInfo(None, None, None, None, None, None)
MAX_USER_AGENT_CHARS = 512
DETECTED_CHARS = 256
OVERSIZED = "oversized user agent"


class UserAgents:
    """Classifies and parses user agents, with an LRU cache of ``cache_size`` strings."""

    def __init__(self, cache_size: int = 50_000) -> None:
        self._crawlers = CrawlerDetect()
        self.info = lru_cache(maxsize=cache_size or None)(self._info) if cache_size else self._info

    def _info(self, user_agent: str) -> UserAgentInfo:
        if not user_agent:
            return _EMPTY
        if len(user_agent) > MAX_USER_AGENT_CHARS:
            return UserAgentInfo(OVERSIZED, None, None, None, None, None)
        head = user_agent[:DETECTED_CHARS]
        bot: str | None = None
        headless = _HEADLESS.search(head)
        if headless:
            bot = headless.group(0)
        elif self._crawlers.isCrawler(head):
            bot = (self._crawlers.getMatches() or "crawler").strip() or "crawler"
        parsed = ua_parser.parse(head)
        agent, os_, device = parsed.user_agent, parsed.os, parsed.device
        return UserAgentInfo(
            bot=bot,
            browser=agent.family if agent else None,
            browser_version=_version(agent.major, agent.minor) if agent else None,
            os=os_.family if os_ else None,
            os_version=_version(os_.major, os_.minor) if os_ else None,
            device=_device(device.family if device else None, agent.family if agent else None),
        )


def _version(major: str | None, minor: str | None) -> str | None:
    if not major:
        return None
    return f"{major}.{minor}" if minor else major


def _device(family: str | None, browser: str | None) -> str | None:
    if family and family != "Other":
        return family
    return "Desktop" if browser and browser != "Other" else None
