"""A scripted traffic mix through the compatible APIs, with the decisions it must produce.

The same script drives ``eventsieve demo`` (a newcomer's showcase) and the
end-to-end tests: every request says which HTTP status it must get, and the
script as a whole says how many events must land in ClickHouse as accepted,
by name, and as dropped, by reason. Everything a run sends is unique to that
run (users, visitors, order ids), so runs never dedup against each other.

Pure: building the script touches nothing; :func:`send` (HTTP) and
:func:`wait_for_counts` (ClickHouse) are the only I/O.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from eventsieve.config import Settings
from sinks import queries
from sinks.service import connect

# Credentials of the "demo" project in the shipped eventsieve.toml.
PUBLIC_TOKEN = "demo-public-token"
SERVER_KEY = "demo-secret-key"
VERO_TOKEN = "demo-vero-token"
VTCDN_KEY = "demo-vtcdn-key"
DOMAIN = "example.com"

_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36"
)
_GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
_HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/128.0.0.0 Safari/537.36"
)


@dataclass(frozen=True)
class Call:
    """One HTTP request of the script and the status it must get."""

    label: str
    method: str
    path: str
    status: int
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Script:
    """The calls of one run and the decisions they must produce."""

    run_id: str
    calls: tuple[Call, ...]
    accepted: Counter[str]  # event name -> count
    dropped: Counter[str]  # drop reason -> count

    @property
    def events(self) -> int:
        return sum(self.accepted.values()) + sum(self.dropped.values())


def script(run_id: str) -> Script:
    """The traffic mix of one demo run; ``run_id`` makes its users and visitors unique."""
    r = run_id
    calls: list[Call] = []
    accepted: Counter[str] = Counter()
    dropped: Counter[str] = Counter()

    def plausible(
        label: str, name: str, path: str, ua: str, status: int = 202, **extra: Any
    ) -> None:
        body = {"n": name, "u": f"https://{DOMAIN}{path}?run={r}", "d": DOMAIN, **extra}
        # A run-unique user agent gives each run its own anonymous visitors.
        headers = {"User-Agent": f"{ua} demo/{r}", "Content-Type": "text/plain"}
        calls.append(Call(label, "POST", "/api/event", status, json=body, headers=headers))

    # Pageviews from three visitors (Plausible-style script), one bot, one headless
    # browser and one spam referral.
    for i, (path, ua) in enumerate([("/", _FIREFOX), ("/pricing", _SAFARI), ("/docs", _CHROME)]):
        plausible(f"plausible pageview {i + 1}", "pageview", path, ua)
    accepted["$pageview"] += 3
    plausible("plausible pageview from Googlebot", "pageview", "/", _GOOGLEBOT)
    plausible("plausible pageview from a headless browser", "pageview", "/", _HEADLESS)
    dropped["bot"] += 2
    plausible("plausible pageview from a spam referrer", "pageview", "/", _FIREFOX + " spam",
              r="https://semalt.com/")  # fmt: skip
    dropped["spam_referrer"] += 1
    plausible("plausible custom event", "Signup", "/signup", _FIREFOX, p={"plan": "pro"})
    accepted["Signup"] += 1

    # Vemetric: an identified user's pageview, identify and profile update.
    vemetric = {"Token": PUBLIC_TOKEN, "User-Agent": _FIREFOX}
    user = f"demo-{r}-ada"
    calls += [
        Call("vemetric pageview", "POST", "/e", 200, headers=vemetric,
             json={"name": "$$pageView", "url": f"https://{DOMAIN}/app", "identifier": user}),
        Call("vemetric identify", "POST", "/i", 200, headers=vemetric,
             json={"identifier": user, "displayName": "Ada", "data": {"set": {"plan": "pro"}}}),
        Call("vemetric update user", "POST", "/u", 200, headers=vemetric,
             json={"identifier": user, "data": {"set": {"plan": "team"}}}),
    ]  # fmt: skip
    accepted.update({"$pageview": 1, "$identify": 1, "$update_user": 1})

    # Vero: a custom event, its duplicate (name spelt differently, same data),
    # the same event with other data, and a user profile.
    vero_q = {"auth_token": VERO_TOKEN}
    buyer = {"id": f"demo-{r}-bo", "email": f"bo-{r}@example.com"}

    def vero(label: str, name: str, sku: str) -> Call:
        body = {"identity": buyer, "event_name": name, "data": {"sku": sku}}
        return Call(label, "POST", "/api/v2/events/track", 200, json=body, params=vero_q)

    calls += [
        vero("vero event", "Viewed Product", "A1"),
        vero("vero duplicate (other spelling)", "viewed_product", "A1"),
        vero("vero event, other data", "Viewed Product", "B2"),
    ]
    accepted["Viewed Product"] += 2
    dropped["duplicate"] += 1
    profile = {"auth_token": VERO_TOKEN, **buyer, "data": {"first_name": "Bo"}}
    calls.append(Call("vero user", "POST", "/api/v2/users/track", 200, json=profile))
    accepted["$identify"] += 1

    # vtcdn: a burst of four opens of one email (one counts), an open of another
    # campaign, and an order confirmed twice (from two users) plus another order.
    reader = {"_id": f"demo-{r}-cy"}

    def vtcdn(label: str, user: dict[str, str], event: dict[str, Any], status: int = 200) -> None:
        body = {"user": user, "event": event}
        calls.append(Call(label, "POST", "/v1/event/", status, json=body, headers=vtcdn_auth))

    vtcdn_auth = {"Authorization": VTCDN_KEY}
    # The opens differ (mail client), so they are not plain duplicates: the
    # email-open throttle is what drops them.
    for i, client in enumerate(["gmail", "apple-mail", "outlook", "thunderbird"]):
        opened = {"emailOpen": {"messageId": "m-1", "campaignId": "spring", "client": client}}
        vtcdn(f"vtcdn email open {i + 1}", reader, opened)
    vtcdn("vtcdn email open, other campaign", reader,
          {"emailOpen": {"messageId": "m-2", "campaignId": "summer"}})  # fmt: skip
    accepted["email_open"] += 2
    dropped["email_open_throttled"] += 3
    for label, who, order in [
        ("vtcdn order", reader, f"demo-{r}-o1"),
        ("vtcdn same order again, other user", {"_id": f"demo-{r}-dee"}, f"demo-{r}-o1"),
        ("vtcdn another order", reader, f"demo-{r}-o2"),
    ]:
        vtcdn(label, who, {"confirmation": {"orderId": order, "total": "49.00"}})
    accepted["confirmation"] += 2
    dropped["duplicate_order"] += 1

    # VibeFollow and the native API (server keys).
    server = {"Authorization": f"Bearer {SERVER_KEY}"}
    calls += [
        Call("vibefollow event", "POST", "/api/v1/events", 202, headers=server,
             json={"external_user_id": f"demo-{r}-eve", "name": "Plan Upgraded",
                   "properties": {"plan": "pro"}}),
        Call("native batch", "POST", "/v1/events", 202, headers=server,
             json={"events": [{"name": "Report Exported", "user_id": f"demo-{r}-fay"},
                              {"name": "Report Exported", "user_id": f"demo-{r}-gus"}]}),
    ]  # fmt: skip
    accepted.update({"Plan Upgraded": 1, "Report Exported": 2})

    # Malformed requests: each gets its API's documented error, and nothing lands.
    calls += [
        Call("malformed: plausible data: URL", "POST", "/api/event", 400,
             json={"n": "pageview", "u": "data:text/html,hi", "d": DOMAIN}),
        Call("malformed: vemetric bad token", "POST", "/e", 401,
             headers={"Token": "wrong"}, json={"name": "signup"}),
        Call("malformed: vtcdn without event", "POST", "/v1/event/", 400, headers=vtcdn_auth,
             json={"user": reader}),
        Call("malformed: vero invalid email", "POST", "/api/v2/events/track", 400, params=vero_q,
             json={"identity": {"email": "not-an-email"}, "event_name": "x"}),
        Call("malformed: native body not JSON", "POST", "/v1/events", 400, headers=server,
             content=b"{not json"),
    ]  # fmt: skip
    return Script(run_id, tuple(calls), accepted, dropped)


@dataclass(frozen=True)
class CallResult:
    call: Call
    status: int
    body: str

    @property
    def ok(self) -> bool:
        return self.status == self.call.status


def send(base_url: str, calls: Sequence[Call], timeout: float = 10.0) -> list[CallResult]:
    """Send the calls in order (order matters: duplicates follow their originals)."""
    results = []
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        for call in calls:
            response = client.request(
                call.method,
                call.path,
                json=call.json if call.content is None else None,
                content=call.content,
                headers=call.headers,
                params=call.params,
            )
            results.append(CallResult(call, response.status_code, response.text[:200]))
    return results


def differences(
    expected: Counter[str], actual: Sequence[tuple[str, int]] | dict[str, int]
) -> dict[str, tuple[int, int]]:
    """Keys whose counts differ: key -> (expected, actual)."""
    got = Counter(dict(actual))
    keys = sorted(set(expected) | set(got))
    return {k: (expected[k], got[k]) for k in keys if expected[k] != got[k]}


def wait_for_counts(
    settings: Settings, project: str, traffic: Script, since: dt.datetime, timeout: float
) -> tuple[Counter[str], Counter[str]]:
    """Poll ClickHouse until the counts match (or stop changing at the deadline)."""
    ch = connect(settings)
    deadline = time.monotonic() + timeout
    try:
        while True:
            span = queries.TimeRange(since, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5))
            accepted = Counter(dict(queries.accepted_by_name(ch, project, span)))
            dropped = Counter(dict(queries.dropped_by_reason(ch, project, span)))
            done = not differences(traffic.accepted, accepted) and not differences(
                traffic.dropped, dropped
            )
            if done or time.monotonic() > deadline:
                return accepted, dropped
            time.sleep(0.5)
    finally:
        ch.close()
