"""orderId uniqueness: the earliest confirmation by event time keeps the order id,
whatever the arrival order; every other one is dropped, however late."""

from __future__ import annotations

import itertools
from dataclasses import replace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.reasons import DropReason, Stage
from streams.facts import Facts
from streams.rules.orders import KEPT, RECORD_LIMIT, OrderEvents, OrderUniqueness
from streams.state import InMemoryState

T0 = 1_767_225_600_000
HOUR = 3_600_000
DAY = 86_400_000
RETENTION = 400 * DAY
GRACE = 15 * 60_000


@pytest.fixture
def rule():
    return OrderUniqueness(RETENTION, GRACE)


@pytest.fixture
def state():
    return InMemoryState()


def confirmation(event_id: str, time: int = T0, public: bool = False, **fields) -> Facts:
    base = Facts(
        event_id=event_id,
        project="demo",
        user_key=f"user-of-{event_id}",
        name="confirmation",
        fingerprint=f"fp-{event_id}",
        time=time,
        order_id="o-1",
        public=public,
        source="orders",
    )
    return replace(base, **fields)


def decide_all(rule, arrivals, state=None) -> dict[str, list[str]]:
    """Each event id's decisions, in the order they were made (re-decisions included)."""
    state = state or InMemoryState()
    history: dict[str, list[str]] = {}
    for offset, arrival in enumerate(arrivals):
        facts = replace(arrival, offset=offset)
        claim = rule.claim(facts, state, f"record of {facts.event_id}".encode(), offset)
        if claim.dropped is None:
            history.setdefault(facts.event_id, []).append("accepted")
            for member in claim.displaced:
                history.setdefault(member.event_id, []).append("dropped")
        else:
            assert claim.dropped.reason is DropReason.DUPLICATE_ORDER
            assert claim.displaced == ()
            history.setdefault(facts.event_id, []).append("dropped")
    return history


def final(history: dict[str, list[str]]) -> dict[str, str]:
    return {event_id: decisions[-1] for event_id, decisions in history.items()}


def in_event_time_order(events: list[Facts]) -> dict[str, str]:
    """What a run in event-time order decides: the earliest server confirmation (ties:
    lower id) keeps the order id; with none, the earliest public one."""
    server = [e for e in events if not e.public]
    winner = min(server or events, key=lambda e: (e.time, e.event_id))
    return {e.event_id: "accepted" if e is winner else "dropped" for e in events}


# -- the basics ------------------------------------------------------------------------


def test_second_event_with_the_same_order_id_is_dropped(rule, state, make_facts):
    assert rule(make_facts(order_id="o-1"), state) is None
    result = rule(make_facts(order_id="o-1", time=T0 + 399 * DAY), state)
    assert result is not None
    assert result.reason is DropReason.DUPLICATE_ORDER
    assert result.stage is Stage.ORDERS


def test_retention_boundary(rule, state, make_facts):
    assert rule(make_facts(order_id="o-1", time=T0), state) is None
    assert rule(make_facts(order_id="o-1", time=T0 + RETENTION - 1), state) is not None
    assert rule(make_facts(order_id="o-1", time=T0 + RETENTION), state) is None


def test_retention_counts_from_the_newest_confirmation_whether_or_not_it_expired(rule):
    kept, pruned = InMemoryState(), InMemoryState()
    for state in (kept, pruned):
        assert rule(confirmation("a", T0), state) is None
    pruned.advance(T0 + RETENTION + GRACE + 1)  # expiry ran: the order id is forgotten
    assert len(pruned) == 0
    assert len(kept) == 1
    for state in (kept, pruned):  # the same answer either way
        assert rule(confirmation("b", T0 + RETENTION + GRACE + 1), state) is None


def test_order_ids_are_unique_across_users_but_not_across_projects(rule, state, make_facts):
    assert rule(make_facts(order_id="o-1", user_key="u1"), state) is None
    assert rule(make_facts(order_id="o-1", user_key="u2"), state) is not None
    assert rule(make_facts(order_id="o-1", project="other"), state) is None


def test_events_without_order_id_pass(rule, state, make_facts):
    assert rule(make_facts(order_id=None), state) is None
    assert rule(make_facts(order_id=None), state) is None


# -- event time, not arrival ----------------------------------------------------------------


def test_an_earlier_confirmation_arriving_second_takes_the_order_id_over(rule, state):
    late = rule.claim(confirmation("late", T0 + 23_040_000), state, b"late record", 7)
    assert late.dropped is None
    early = rule.claim(confirmation("early", T0), state, b"early record", 8)
    assert early.dropped is None
    [displaced] = early.displaced
    assert (displaced.event_id, displaced.time) == ("late", T0 + 23_040_000)
    assert displaced.record == b"late record"
    assert displaced.decided_at == 7  # when it was accepted: its re-decision comes after
    # From now on the early one holds it: the late one again, or any later one, is dropped.
    again = rule.claim(confirmation("late", T0 + 23_040_000), state)
    assert again.dropped is not None
    assert again.dropped.detail == f"order taken by early at {T0}"
    assert rule(confirmation("third", T0 + HOUR), state) is not None


def test_equal_event_times_go_to_the_lower_event_id(rule):
    for order in (["a", "b"], ["b", "a"]):
        got = final(decide_all(rule, [confirmation(eid, T0) for eid in order]))
        assert got == {"a": "accepted", "b": "dropped"}


def test_three_confirmations_give_the_same_decisions_in_every_arrival_order(rule):
    events = [confirmation("c1", T0), confirmation("c2", T0 + HOUR), confirmation("c3", T0)]
    expected = {"c1": "accepted", "c2": "dropped", "c3": "dropped"}
    for arrivals in itertools.permutations(events):
        history = decide_all(rule, list(arrivals))
        assert final(history) == expected, [e.event_id for e in arrivals]
        # Re-decided at most once, and only from accepted to dropped.
        for decisions in history.values():
            assert decisions in (["accepted"], ["dropped"], ["accepted", "dropped"])


def test_a_new_holder_re_decides_the_one_it_displaces_and_again_all_it_outranks(rule, state):
    rule.claim(confirmation("b", T0 + 2), state, b"B", 100)
    rule.claim(confirmation("a", T0 + 1), state, b"A", 200)
    z = confirmation("z", T0)
    claim = rule.claim(z, state, b"Z", 300)
    assert [(m.event_id, m.record, m.decided_at) for m in claim.displaced] == [("a", b"A", 200)]
    # Read again after a crash: the re-decision of b (made when a took over)
    # may be the one that was lost, so z re-decides every member it outranks.
    again = rule.claim(z, state, b"Z", 400)
    assert again.dropped is None
    assert [(m.event_id, m.record, m.decided_at) for m in again.displaced] == [
        ("b", b"B", 100),
        ("a", b"A", 200),
    ]


# -- redelivery ------------------------------------------------------------------------------


def test_redelivered_first_event_is_accepted_again(rule, state, make_facts):
    first = make_facts(order_id="o-1", event_id="a")
    second = make_facts(order_id="o-1", event_id="b")
    assert rule(first, state) is None
    assert rule(second, state) is not None
    assert rule(first, state) is None
    assert rule(second, state) is not None


def test_a_redelivery_gives_the_same_outputs_again(rule, state):
    late, early = confirmation("late", T0 + HOUR), confirmation("early", T0)
    first_late = rule.claim(late, state, b"L", 1)
    first_early = rule.claim(early, state, b"E", 2)
    before = dict(state.data)
    # Re-read after a crash: the holder re-decides the one it displaced, the
    # displaced one is dropped again, and the state does not change.
    assert rule.claim(early, state, b"E", 3) == first_early
    assert rule.claim(early, state, b"E", 3) == first_early
    dropped_again = rule.claim(late, state, b"L", 4)
    assert dropped_again.dropped is not None
    assert dropped_again.displaced == ()
    assert first_late.dropped is None
    assert state.data == before


def test_a_public_record_with_the_server_holders_id_is_that_event_again(rule, state):
    assert rule(confirmation("s", T0), state) is None
    assert rule.claim(confirmation("s", T0, public=True), state).dropped is None
    assert rule(confirmation("p", T0 - 1, public=True), state) is not None


# -- trust lanes ---------------------------------------------------------------------------


def test_a_server_confirmation_takes_the_order_id_from_a_public_one_whatever_the_time(rule):
    state = InMemoryState()
    assert rule.claim(confirmation("p", T0, public=True), state, b"P", 1).dropped is None
    server = rule.claim(confirmation("s", T0 + HOUR), state, b"S", 2)
    assert server.dropped is None
    assert [m.event_id for m in server.displaced] == ["p"]
    # A public one is dropped while a server one holds it, even when earlier.
    assert rule(confirmation("p0", T0 - HOUR, public=True), state) is not None


def test_an_earlier_public_confirmation_displaces_a_later_public_one(rule):
    state = InMemoryState()
    rule.claim(confirmation("p2", T0 + 1, public=True), state, b"P2", 1)
    claim = rule.claim(confirmation("p1", T0, public=True), state, b"P1", 2)
    assert claim.dropped is None
    assert [m.event_id for m in claim.displaced] == ["p2"]


def _event(draw_time: int, index: int, public: bool) -> Facts:
    return confirmation(f"e{index}", T0 + draw_time * HOUR, public=public)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
    redeliveries=st.lists(st.integers(0, 20), max_size=4),
)
def test_final_decisions_do_not_depend_on_arrival_order_or_redelivery(data, order, redeliveries):
    """Any arrival order, with any records read again: the decisions of a run in
    event-time order, exactly one accepted, and nothing goes from dropped to accepted."""
    rule = OrderUniqueness(RETENTION, GRACE)
    events = [_event(t, i, public) for i, (t, public) in enumerate(data)]
    arrivals = list(events)
    order.shuffle(arrivals)
    for at in redeliveries:  # a record read again after a crash, later in the stream
        arrivals.insert(min(at, len(arrivals)), arrivals[at % len(arrivals)])
    history = decide_all(rule, arrivals)
    assert final(history) == in_event_time_order(events)
    for decisions in history.values():
        if "dropped" in decisions:
            assert "accepted" not in decisions[decisions.index("dropped") :]


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
    crash=st.integers(0, 6),
    committed=st.integers(0, 6),
    lost=st.sets(st.integers(0, 12)),
)
def test_outputs_lost_in_a_crash_are_made_again_by_the_records_read_again(
    data, order, crash, committed, lost
):
    """At-least-once (faust engine): records up to ``crash`` were decided and their state
    kept, but outputs of those after the committed offset may never have reached Kafka;
    every record from the committed offset is then read again. The latest output per
    event id is still the decision of a run in event-time order."""
    rule, state = OrderUniqueness(RETENTION, GRACE), InMemoryState()
    events = [_event(t, i, public) for i, (t, public) in enumerate(data)]
    arrivals = list(events)
    order.shuffle(arrivals)
    crash = min(crash, len(arrivals))
    committed = min(committed, crash)
    latest: dict[str, str] = {}
    emitted = 0

    def decide(offset: int, facts: Facts, losing: bool) -> None:
        nonlocal emitted
        claim = rule.claim(replace(facts, offset=offset), state, b"r", offset)
        outputs = [(facts.event_id, "dropped" if claim.dropped else "accepted")]
        outputs += [(m.event_id, "dropped") for m in claim.displaced]
        for event_id, decision in outputs:
            if not (losing and emitted in lost):
                latest[event_id] = decision
            emitted += 1

    for offset in range(crash):
        decide(offset, arrivals[offset], losing=offset >= committed)
    for offset in range(committed, len(arrivals)):
        decide(offset, arrivals[offset], losing=False)
    assert latest == in_event_time_order(events)


# -- what is kept ------------------------------------------------------------------------------


def test_at_most_kept_members_and_the_holder_is_always_among_them(rule, state):
    for i in range(10):  # each confirmation earlier than the last: ten displacements
        claim = rule.claim(confirmation(f"e{i}", T0 - i * HOUR), state, b"r", i)
        assert claim.dropped is None
    [value] = [v for _, v in state.data.values()]
    newest, *members = value
    assert newest == T0  # retention counts from the newest, though it was displaced
    assert [m[1] for m in members] == [f"e{i}" for i in range(10 - KEPT, 10)]
    assert rule(confirmation("e9", T0 - 9 * HOUR), state) is None


def test_a_lane_of_records_at_the_limit_fits_one_changelog_record(rule, state):
    for i in range(KEPT):
        rule.claim(confirmation(f"e{i}", T0 - i), state, b"x" * RECORD_LIMIT, i)
    [(expires_at, value)] = state.data.values()
    assert len(orjson.dumps([expires_at, value])) < 500_000  # Kafka's default limit: 1 MB


def test_state_written_before_keeps_its_holder(rule, state):
    """Anchors ``[time, event_id, source, offset]`` of the earlier shape hold the order id
    as they did: without a record they cannot be displaced."""
    state.put("r|demo|o-1", [[T0, "old", "orders", 5]], T0 + RETENTION)
    assert rule(confirmation("old", T0), state) is None
    earlier = rule.claim(confirmation("earlier", T0 - HOUR), state)
    assert earlier.dropped is not None
    assert earlier.dropped.detail == f"order taken by old at {T0}"
    assert rule(confirmation("new", T0 + RETENTION), state) is None  # expired: afresh


class TestOrderEvents:
    @pytest.fixture
    def orders(self):
        return OrderEvents(["Confirmation", "purchase"], ["orderId", "order_id"])

    def test_field_wins_then_properties_in_order(self, orders):
        assert orders.order_id("confirmation", "f", {"orderId": "p"}) == "f"
        assert orders.order_id("confirmation", None, {"order_id": "b", "orderId": "a"}) == "a"
        assert orders.order_id("purchase", None, {"order_id": "b"}) == "b"

    def test_other_events_are_not_orders(self, orders):
        assert orders.order_id("viewed_product", "f", {"orderId": "p"}) is None
        assert orders.order_id("purchase", None, {}) is None
        assert orders.order_id("purchase", None, {"orderId": ""}) is None
