"""Email opens: one per user (and message) per 20 minutes of event time."""

import pytest

from schemas.reasons import DropReason, Stage
from streams.rules.throttle import EmailOpenThrottle
from streams.state import InMemoryState

T0 = 1_767_225_600_000
MIN = 60_000
WINDOW = 20 * MIN


@pytest.fixture
def throttle():
    return EmailOpenThrottle(["Email Open", "email_opened"], WINDOW, 15 * MIN)


@pytest.fixture
def state():
    return InMemoryState()


def opened(make_facts, **kw):
    return make_facts(name="email_open", **kw)


@pytest.mark.parametrize(
    ("delta", "throttled"), [(0, True), (WINDOW - 1, True), (WINDOW, False), (WINDOW + 1, False)]
)
def test_20_minute_boundary(throttle, state, make_facts, delta, throttled):
    assert throttle(opened(make_facts, time=T0), state) is None
    result = throttle(opened(make_facts, time=T0 + delta), state)
    if throttled:
        assert result is not None
        assert result.reason is DropReason.EMAIL_OPEN_THROTTLED
        assert result.stage is Stage.THROTTLE
    else:
        assert result is None


def test_burst_keeps_only_the_first_then_one_per_window(throttle, state, make_facts):
    times = [T0 + i * MIN for i in range(45)]  # one open a minute for 45 minutes
    accepted = [t for t in times if throttle(opened(make_facts, time=t), state) is None]
    assert accepted == [T0, T0 + WINDOW, T0 + 2 * WINDOW]


@pytest.mark.parametrize(("delta", "throttled"), [(WINDOW - 1, True), (WINDOW, False)])
def test_out_of_order_open(throttle, state, make_facts, delta, throttled):
    assert throttle(opened(make_facts, time=T0), state) is None
    assert (throttle(opened(make_facts, time=T0 - delta), state) is not None) is throttled


def test_other_users_and_messages_are_independent(throttle, state, make_facts):
    assert throttle(opened(make_facts, user_key="u1"), state) is None
    assert throttle(opened(make_facts, user_key="u2"), state) is None
    assert throttle(opened(make_facts, user_key="u1", message_id="m1"), state) is None
    assert throttle(opened(make_facts, user_key="u1", message_id="m2"), state) is None
    assert throttle(opened(make_facts, user_key="u1", message_id="m1"), state) is not None
    assert throttle(opened(make_facts, user_key="u1"), state) is not None


def test_only_configured_names_are_throttled(throttle, state, make_facts):
    # "Email Open" and "email_opened" were configured; names are normalised.
    assert throttle(make_facts(name="email_opened"), state) is None
    assert throttle(make_facts(name="email_opened"), state) is not None
    for _ in range(3):
        assert throttle(make_facts(name="email_clicked"), state) is None


def test_redelivery_gets_the_same_decision(throttle, state, make_facts):
    events = [opened(make_facts, time=T0 + i * 7 * MIN, event_id=f"o{i}") for i in range(6)]
    first = [throttle(e, state) is None for e in events]
    assert first == [True, False, False, True, False, False]
    assert [throttle(e, state) is None for e in events] == first
