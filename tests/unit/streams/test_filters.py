"""Bots, spam referrers, IP classification and per-project shields: every reason."""

import pytest

from eventsieve.config import ProjectSettings, ShieldSettings
from schemas.reasons import DropReason, Stage
from streams.rules.filters import BotFilter, IpClassificationFilter, SpamReferrerFilter
from streams.rules.shields import ShieldFilter
from streams.state import InMemoryState
from streams.useragents import UserAgents

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
]

STATE = InMemoryState()


@pytest.fixture(scope="module")
def user_agents():
    return UserAgents(cache_size=100)


@pytest.mark.parametrize("ua", BOTS)
def test_bots_crawlers_and_headless_browsers_are_dropped(user_agents, make_facts, ua):
    result = BotFilter(user_agents)(make_facts(user_agent=ua), STATE)
    assert result is not None
    assert result.reason is DropReason.BOT
    assert result.stage is Stage.BOT
    assert result.detail


@pytest.mark.parametrize("ua", [CHROME, IPHONE, None, ""])
def test_people_and_server_side_events_pass(user_agents, make_facts, ua):
    assert BotFilter(user_agents)(make_facts(user_agent=ua), STATE) is None


def test_user_agent_parse(user_agents):
    info = user_agents.info(IPHONE)
    assert info.bot is None
    assert info.browser == "Mobile Safari"
    assert info.os == "iOS"
    assert info.device == "iPhone"
    desktop = user_agents.info(CHROME)
    assert (desktop.browser, desktop.browser_version, desktop.os) == ("Chrome", "120.0", "Windows")
    assert desktop.device == "Desktop"


def test_user_agent_results_are_cached(user_agents):
    assert user_agents.info(CHROME) is user_agents.info(CHROME)


class TestSpamReferrers:
    @pytest.fixture
    def rule(self):
        return SpamReferrerFilter(["semalt.com", "Spam.Example "])

    @pytest.mark.parametrize(
        "host", ["semalt.com", "www.semalt.com", "a.b.semalt.com", "spam.example"]
    )
    def test_listed_hosts_and_their_subdomains(self, rule, make_facts, host):
        result = rule(make_facts(referrer_host=host), STATE)
        assert result is not None
        assert result.reason is DropReason.SPAM_REFERRER
        assert result.stage is Stage.SPAM

    @pytest.mark.parametrize("host", [None, "google.com", "notsemalt.com", "semalt.com.evil"])
    def test_other_referrers_pass(self, rule, make_facts, host):
        assert rule(make_facts(referrer_host=host), STATE) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("dc_ip", DropReason.DC_IP),
        ("threat_ip", DropReason.THREAT_IP),
        ("DC_IP", DropReason.DC_IP),
        ("anonymous_vpn_ip", None),
        (None, None),
        ("", None),
    ],
)
def test_ip_classification(make_facts, value, reason):
    result = IpClassificationFilter()(make_facts(ip_classification=value), STATE)
    assert (result.reason if result else None) is reason


class TestShields:
    @pytest.fixture
    def rule(self):
        shields = ShieldSettings(
            ip_blocklist=("203.0.113.0/24", "2001:db8::/32", "198.51.100.7"),
            country_blocklist=("xx",),
            page_blocklist=("/admin/*", "/internal"),
            hostname_allowlist=("example.com", "*.example.com"),
        )
        return ShieldFilter(
            [
                ProjectSettings(id="demo", shields=shields),
                ProjectSettings(id="open"),
            ]
        )

    def check(self, rule, make_facts, **kw):
        base = {"hostname": "example.com", "path": "/", "ip": "192.0.2.1", "country": "DE"}
        return rule(make_facts(**{**base, **kw}), STATE)

    def test_clean_event_passes(self, rule, make_facts):
        assert self.check(rule, make_facts) is None

    @pytest.mark.parametrize(
        ("fields", "reason"),
        [
            ({"ip": "203.0.113.9"}, DropReason.SITE_IP_BLOCKLIST),
            ({"ip": "2001:db8::1"}, DropReason.SITE_IP_BLOCKLIST),
            ({"ip": "198.51.100.7"}, DropReason.SITE_IP_BLOCKLIST),
            ({"country": "XX"}, DropReason.SITE_COUNTRY_BLOCKLIST),
            ({"path": "/admin/users"}, DropReason.SITE_PAGE_BLOCKLIST),
            ({"path": "/internal"}, DropReason.SITE_PAGE_BLOCKLIST),
            ({"hostname": "evil.com"}, DropReason.SITE_HOSTNAME_ALLOWLIST),
        ],
    )
    def test_each_shield(self, rule, make_facts, fields, reason):
        result = self.check(rule, make_facts, **fields)
        assert result is not None
        assert result.reason is reason
        assert result.stage is Stage.SHIELDS

    @pytest.mark.parametrize(
        "fields",
        [
            {"ip": "203.0.114.1"},
            {"ip": "not-an-ip"},
            {"ip": None},
            {"country": None},
            {"path": "/administrator"},
            {"path": "/internal/x"},
            {"hostname": "www.example.com"},
            {"hostname": None, "path": None},
        ],
    )
    def test_near_misses_pass(self, rule, make_facts, fields):
        assert self.check(rule, make_facts, **fields) is None

    def test_other_projects_have_their_own_shields(self, rule, make_facts):
        assert self.check(rule, make_facts, project="open", ip="203.0.113.9") is None
        assert self.check(rule, make_facts, project="unknown", country="XX") is None


def test_a_hostile_user_agent_is_judged_in_bounded_time() -> None:
    """crawlerdetect is quadratic in length: 16,000 letters took about 40 s."""
    import time

    from streams.useragents import MAX_USER_AGENT_CHARS, OVERSIZED, UserAgents

    agents = UserAgents(cache_size=0)
    started = time.perf_counter()
    assert agents.info("x" * 16_000).bot == OVERSIZED
    assert agents.info("y" * (MAX_USER_AGENT_CHARS + 1)).bot == OVERSIZED
    assert agents.info("z" * MAX_USER_AGENT_CHARS).bot is None
    assert time.perf_counter() - started < 5  # generous: about 10 ms on this machine
    chrome = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36"
    )
    assert agents.info(chrome).bot is None
    assert agents.info(chrome).browser == "Chrome"
    assert agents.info("Mozilla/5.0 (compatible; Googlebot/2.1)").bot is not None
