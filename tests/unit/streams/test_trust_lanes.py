"""Trust follows credentials: a public event can be dropped because of a server event,
never the reverse, in every window rule."""

from __future__ import annotations

import pytest

from schemas.reasons import DropReason
from streams.rules.dedup import ContentDedup, IdempotencyDedup
from streams.rules.orders import OrderUniqueness
from streams.rules.throttle import EmailOpenThrottle
from streams.state import InMemoryState

T0 = 1_767_225_600_000
MIN = 60_000

RULES = {
    "dedup": (lambda: ContentDedup(3 * MIN, 15 * MIN), {}, DropReason.DUPLICATE),
    "idempotency": (
        lambda: IdempotencyDedup(24 * 60 * MIN, 15 * MIN),
        {"idempotency_key": "k1"},
        DropReason.DUPLICATE_IDEMPOTENCY_KEY,
    ),
    "orders": (
        lambda: OrderUniqueness(400 * 24 * 60 * MIN, 15 * MIN),
        {"order_id": "A-1"},
        DropReason.DUPLICATE_ORDER,
    ),
    "email_opens": (
        lambda: EmailOpenThrottle(["email_open"], 20 * MIN, 15 * MIN),
        {"name": "email_open"},
        DropReason.EMAIL_OPEN_THROTTLED,
    ),
}


@pytest.mark.parametrize("rule_name", RULES)
def test_a_public_event_never_drops_a_server_event(make_facts, rule_name):
    make_rule, fields, _ = RULES[rule_name]
    rule, state = make_rule(), InMemoryState()
    assert rule(make_facts(time=T0, public=True, **fields), state) is None
    # The server's event comes second, and is accepted all the same.
    assert rule(make_facts(time=T0 + 1, **fields), state) is None


@pytest.mark.parametrize("rule_name", RULES)
def test_a_public_event_is_dropped_because_of_a_server_event_or_another_public_one(
    make_facts, rule_name
):
    make_rule, fields, reason = RULES[rule_name]
    rule, state = make_rule(), InMemoryState()
    assert rule(make_facts(time=T0, **fields), state) is None
    late_browser = rule(make_facts(time=T0 + 1, public=True, **fields), state)
    assert late_browser is not None
    assert late_browser.reason is reason
    other = make_rule(), InMemoryState()
    assert other[0](make_facts(time=T0, public=True, **fields), other[1]) is None
    again = other[0](make_facts(time=T0 + 1, public=True, **fields), other[1])
    assert again is not None
    assert again.reason is reason


def test_server_events_still_drop_each_other(make_facts):
    rule, state = ContentDedup(3 * MIN, 15 * MIN), InMemoryState()
    assert rule(make_facts(time=T0), state) is None
    assert rule(make_facts(time=T0 + 1), state) is not None


def test_a_redelivered_public_event_gets_its_first_decision(make_facts):
    rule, state = ContentDedup(3 * MIN, 15 * MIN), InMemoryState()
    first = make_facts(time=T0, public=True)
    assert rule(first, state) is None
    assert rule(first, state) is None  # the same event again: accepted again
