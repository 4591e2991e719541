"""A realistic, reproducible mix of raw events, for benchmarks and end-to-end tests.

About 5% bots (crawler and headless user agents), 3% exact re-sends of a
recent event (client retries: duplicates, with the original client time),
bursts of email opens from one mail client, purchases with some repeated order
ids (always by the same user, so every copy of an order id starts on one raw
partition), a little referrer spam and datacenter traffic. ``received_at``
rises with the stream, as it does at the edge; client times scatter a little
around it, so events run slightly out of order. The same ``seed`` gives the
same events, ids included.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from schemas.events import RawEvent, new_raw_event

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
)
BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "python-requests/2.31.0",
)
NAMES = ("$pageview", "Viewed product", "added_to_cart", "signup", "search")


def synthetic_events(n: int, *, seed: int = 0, users: int | None = None) -> Iterator[RawEvent]:
    """``n`` raw events of project ``demo`` in publishing order."""
    rng = random.Random(seed)
    users = users or max(10, n // 20)
    recent: list[RawEvent] = []
    orders: dict[str, list[str]] = {}
    t = T0
    made = 0
    while made < n:
        t += rng.randint(0, 40)
        user = f"user-{rng.randrange(users)}"
        roll = rng.random()
        if roll < 0.03 and recent:
            base = rng.choice(recent)
            event = _copy(base, rng, t)
        elif roll < 0.08:
            event = _event(rng, t, user, rng.choice(NAMES), user_agent=rng.choice(BOTS))
        elif roll < 0.10:
            campaign = f"c{rng.randrange(3)}"
            for _ in range(rng.randint(3, 8)):  # a burst of opens from one mail client
                if made >= n:
                    break
                t += rng.randint(200, 3_000)
                # Each fetch of the tracking pixel differs (proxy, client id),
                # so these are not content duplicates: only the throttle stops them.
                props = {"campaign_id": campaign, "fetch": f"{rng.getrandbits(32):08x}"}
                yield _event(rng, t, user, "email open", properties=props)
                made += 1
            continue
        elif roll < 0.12:
            mine = orders.setdefault(user, [])
            if mine and rng.random() < 0.3:
                order_id = rng.choice(mine)
            else:
                order_id = f"{user}-o{len(mine)}"
                mine.append(order_id)
            event = _event(
                rng,
                t,
                user,
                "purchase",
                order_id=order_id,
                properties={"amount": str(rng.randint(5, 500))},
            )
        elif roll < 0.125:
            event = _event(rng, t, user, "$pageview", referrer="https://semalt.com/")
        elif roll < 0.13:
            event = _event(rng, t, user, "$pageview", ip_classification="dc_ip")
        else:
            event = _event(rng, t, user, rng.choice(NAMES))
        recent.append(event)
        if len(recent) > 200:
            recent.pop(0)
        made += 1
        yield event


def _event(rng: random.Random, t: int, user: str, name: str, **fields: object) -> RawEvent:
    fields.setdefault("user_agent", rng.choice(BROWSERS))
    fields.setdefault("properties", {"page": f"/p/{rng.randrange(50)}"})
    jitter = rng.randint(-2_000, 2_000)  # client clocks and batching: slightly out of order
    return new_raw_event(
        project="demo",
        name=name,
        event_id=f"{rng.getrandbits(64):016x}",
        user_id=user,
        timestamp=t + jitter,
        received_at=t,
        ip=f"198.51.100.{rng.randrange(256)}",
        url=f"https://example.com/p/{rng.randrange(50)}",
        domain="example.com",
        **fields,
    )


def _copy(base: RawEvent, rng: random.Random, t: int) -> RawEvent:
    """A client retry: the same event (and client time) under a new id, received now."""
    event = dict(base)
    event["event_id"] = f"{rng.getrandbits(64):016x}"
    event["received_at"] = t
    return event  # type: ignore[return-value]
