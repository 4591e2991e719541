"""The ordered pipeline: first drop wins, state only from accepted events, replays agree."""

import pytest

from eventsieve.config import ProjectSettings, Settings
from schemas.reasons import DropReason
from streams.pipeline import build_pipelines
from streams.state import InMemoryState
from streams.useragents import UserAgents

T0 = 1_767_225_600_000
MIN = 60_000


@pytest.fixture(scope="module")
def pipeline():
    settings = Settings(projects=(ProjectSettings(id="demo"),))
    return build_pipelines(settings, UserAgents(100)).user


def opened(make_facts, t, offset, eid):
    return make_facts(
        name="email_open",
        fingerprint="open-u1",
        time=t,
        source="raw",
        offset=offset,
        event_id=eid,
    )


def test_rules_run_in_documented_order(pipeline):
    assert pipeline.names == (
        "bot",
        "spam_referrer",
        "ip_classification",
        "shields",
        "idempotency_key",
        "dedup",
        "email_open_throttle",
    )


def test_first_drop_wins(pipeline, make_facts):
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    dropped = pipeline.decide(
        make_facts(user_agent=bot, ip_classification="dc_ip"), InMemoryState()
    )
    assert dropped is not None
    assert dropped.reason is DropReason.BOT


def test_a_dropped_event_does_not_anchor_any_window(pipeline, make_facts):
    state = InMemoryState()
    assert pipeline.decide(opened(make_facts, T0, 0, "m1"), state) is None
    # Passes dedup (20 min after m1) but is throttled: it must not become a dedup anchor.
    m2 = pipeline.decide(opened(make_facts, T0 + 20 * MIN - 1, 1, "m2"), state)
    assert m2 is not None
    assert m2.reason is DropReason.EMAIL_OPEN_THROTTLED
    # 1 ms after m2, 20 min after m1: accepted (no accepted identical event within 3 min).
    assert pipeline.decide(opened(make_facts, T0 + 20 * MIN, 2, "m3"), state) is None


def test_replay_after_crash_gives_every_record_its_first_decision(pipeline, make_facts):
    events = [
        opened(make_facts, T0, 0, "o"),
        opened(make_facts, T0 + 19 * MIN, 1, "x"),  # throttled by o
        opened(make_facts, T0 + 20 * MIN, 2, "y"),  # accepted; within 3 min of x
        opened(make_facts, T0 + 21 * MIN, 3, "z"),  # duplicate of y
    ]
    state = InMemoryState()
    first = [pipeline.decide(e, state) for e in events]
    reasons = [d.reason if d else None for d in first]
    assert reasons == [None, DropReason.EMAIL_OPEN_THROTTLED, None, DropReason.DUPLICATE]
    # Offsets were not committed: every record again, against the state that
    # already holds y's anchor. x must not become a "duplicate" of y.
    again = [pipeline.decide(e, state) for e in events]
    assert [d.reason if d else None for d in again] == reasons
