"""Vero's 3-minute rule and the 24 h idempotency key: every boundary."""

import pytest

from schemas.reasons import DropReason, Stage
from streams.rules.dedup import ContentDedup, IdempotencyDedup
from streams.state import InMemoryState

T0 = 1_767_225_600_000
MIN = 60_000
WINDOW = 3 * MIN
GRACE = 15 * MIN


@pytest.fixture
def dedup():
    return ContentDedup(WINDOW, GRACE)


@pytest.fixture
def state():
    return InMemoryState()


def test_first_event_is_accepted(dedup, state, make_facts):
    assert dedup(make_facts(), state) is None


@pytest.mark.parametrize(
    ("delta", "duplicate"),
    [(0, True), (1, True), (WINDOW - 1, True), (WINDOW, False), (WINDOW + 1, False)],
)
def test_window_boundary(dedup, state, make_facts, delta, duplicate):
    assert dedup(make_facts(time=T0), state) is None
    result = dedup(make_facts(time=T0 + delta), state)
    if duplicate:
        assert result is not None
        assert result.reason is DropReason.DUPLICATE
        assert result.stage is Stage.DEDUP
    else:
        assert result is None


@pytest.mark.parametrize(("delta", "duplicate"), [(WINDOW - 1, True), (WINDOW, False)])
def test_out_of_order_event_is_judged_on_its_own_time(dedup, state, make_facts, delta, duplicate):
    assert dedup(make_facts(time=T0), state) is None
    late = dedup(make_facts(time=T0 - delta), state)
    assert (late is not None) is duplicate


def test_window_slides_from_the_last_accepted_event_not_from_drops(dedup, state, make_facts):
    assert dedup(make_facts(time=T0), state) is None
    # Dropped at +2 min: does not move the anchor.
    assert dedup(make_facts(time=T0 + 2 * MIN), state) is not None
    # +3 min from the accepted one: accepted, and it becomes the new anchor.
    assert dedup(make_facts(time=T0 + WINDOW), state) is None
    assert dedup(make_facts(time=T0 + WINDOW + WINDOW - 1), state) is not None
    assert dedup(make_facts(time=T0 + 2 * WINDOW), state) is None


def test_different_fingerprints_do_not_collide(dedup, state, make_facts):
    # The fingerprint covers project, user, normalised name and properties.
    assert dedup(make_facts(fingerprint="user1-props-a"), state) is None
    assert dedup(make_facts(fingerprint="user2-props-a"), state) is None
    assert dedup(make_facts(fingerprint="user1-props-b"), state) is None


def test_redelivered_event_gets_the_same_decision(dedup, state, make_facts):
    first = make_facts(time=T0, event_id="a")
    second = make_facts(time=T0 + MIN, event_id="b")
    third = make_facts(time=T0 + WINDOW + 30_000, event_id="c")
    decisions = [dedup(f, state) for f in (first, second, third)]
    assert [d is None for d in decisions] == [True, False, True]
    # A crash before the offsets were committed: the same records again, against
    # state that already holds their effect (and that of `third`).
    replay = [dedup(f, state) for f in (first, second, third)]
    assert [d is None for d in replay] == [True, False, True]


class _Unsettled(InMemoryState):
    """State ahead of the committed offsets, settled up to ``settled`` (the faust tables)."""

    def __init__(self, settled: int) -> None:
        super().__init__()
        self.settled = settled

    def prune_time(self, newest: int) -> int:
        return min(newest, self.settled)


def test_a_later_rewrite_keeps_the_anchors_an_unsettled_record_was_judged_by(dedup, make_facts):
    state = _Unsettled(settled=T0)  # only `first` is committed
    first = make_facts(time=T0, event_id="a", offset=0)
    repeat = make_facts(time=T0 + 10_000, event_id="b", offset=1)
    later = make_facts(time=T0 + 2 * 86_400_000, event_id="c", offset=2)
    assert [dedup(f, state) is None for f in (first, repeat, later)] == [True, False, True]
    # A crash before `repeat` was committed: decided again after `later` rewrote the key.
    assert dedup(repeat, state) is not None


def test_a_rewrite_trims_what_lies_behind_the_newest_where_state_is_settled(dedup, make_facts):
    state = InMemoryState()
    first = make_facts(time=T0, event_id="a", offset=0)
    later = make_facts(time=T0 + 2 * 86_400_000, event_id="c", offset=2)
    assert dedup(first, state) is None
    assert dedup(later, state) is None
    [(_, anchors)] = state.data.values()
    assert [a[1] for a in anchors] == ["c"]


def test_state_is_written_only_on_accept_and_expires(dedup, state, make_facts):
    dedup(make_facts(time=T0), state)
    dedup(make_facts(time=T0 + MIN), state)
    assert len(state) == 1
    assert state.advance(T0 + WINDOW + GRACE) == 0
    assert state.advance(T0 + WINDOW + GRACE + 1) == 1


def test_old_anchors_beyond_window_and_grace_are_trimmed(dedup, state, make_facts):
    for i in range(10):
        assert dedup(make_facts(time=T0 + i * (WINDOW + GRACE + 1)), state) is None
    [anchors] = [value for _, value in state.data.values()]
    assert len(anchors) == 1


class TestIdempotencyKey:
    WINDOW = 24 * 60 * MIN

    @pytest.fixture
    def rule(self):
        return IdempotencyDedup(self.WINDOW, GRACE)

    def test_no_key_is_never_a_duplicate(self, rule, state, make_facts):
        assert rule(make_facts(idempotency_key=None), state) is None
        assert rule(make_facts(idempotency_key=None), state) is None
        assert len(state) == 0

    @pytest.mark.parametrize(("delta", "duplicate"), [(WINDOW - 1, True), (WINDOW, False)])
    def test_24h_boundary(self, rule, state, make_facts, delta, duplicate):
        assert rule(make_facts(idempotency_key="k1", time=T0), state) is None
        again = rule(make_facts(idempotency_key="k1", time=T0 + delta), state)
        if duplicate:
            assert again is not None
            assert again.reason is DropReason.DUPLICATE_IDEMPOTENCY_KEY
        else:
            assert again is None

    def test_same_event_id_is_a_redelivery_not_a_duplicate(self, rule, state, make_facts):
        event = make_facts(idempotency_key="k1", event_id="same")
        assert rule(event, state) is None
        assert rule(event, state) is None

    def test_keys_are_per_user_and_project(self, rule, state, make_facts):
        assert rule(make_facts(idempotency_key="k1", user_key="u1"), state) is None
        assert rule(make_facts(idempotency_key="k1", user_key="u2"), state) is None
        assert rule(make_facts(idempotency_key="k1", project="other"), state) is None
        assert rule(make_facts(idempotency_key="k2", user_key="u1"), state) is None


def test_an_event_id_sent_again_at_another_time_is_a_copy_not_a_redelivery(make_facts):
    """A redelivered record has its own id *and* time; a client re-sending the id
    without a timestamp gets another time and is a copy (dropped, ranked below)."""
    rule, state = IdempotencyDedup(24 * 60 * MIN, GRACE), InMemoryState()
    first = make_facts(event_id="client-1", idempotency_key="client-1", time=T0)
    assert rule(first, state) is None
    assert rule(first, state) is None  # the same record again: its first decision
    resent = make_facts(event_id="client-1", idempotency_key="client-1", time=T0 + 2_000)
    dropped = rule(resent, state)
    assert dropped is not None
    assert dropped.reason is DropReason.DUPLICATE_IDEMPOTENCY_KEY
