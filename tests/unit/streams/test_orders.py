"""orderId uniqueness: the second event with an order id is dropped, however late."""

import pytest

from schemas.reasons import DropReason, Stage
from streams.rules.orders import OrderEvents, OrderUniqueness
from streams.state import InMemoryState

T0 = 1_767_225_600_000
DAY = 86_400_000
RETENTION = 400 * DAY


@pytest.fixture
def rule():
    return OrderUniqueness(RETENTION, 15 * 60_000)


@pytest.fixture
def state():
    return InMemoryState()


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


def test_order_ids_are_unique_across_users_but_not_across_projects(rule, state, make_facts):
    assert rule(make_facts(order_id="o-1", user_key="u1"), state) is None
    assert rule(make_facts(order_id="o-1", user_key="u2"), state) is not None
    assert rule(make_facts(order_id="o-1", project="other"), state) is None


def test_earlier_event_time_arriving_second_is_still_the_duplicate(rule, state, make_facts):
    assert rule(make_facts(order_id="o-1", time=T0), state) is None
    assert rule(make_facts(order_id="o-1", time=T0 - DAY), state) is not None


def test_redelivered_first_event_is_accepted_again(rule, state, make_facts):
    first = make_facts(order_id="o-1", event_id="a")
    second = make_facts(order_id="o-1", event_id="b")
    assert rule(first, state) is None
    assert rule(second, state) is not None
    assert rule(first, state) is None
    assert rule(second, state) is not None


def test_events_without_order_id_pass(rule, state, make_facts):
    assert rule(make_facts(order_id=None), state) is None
    assert rule(make_facts(order_id=None), state) is None


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
