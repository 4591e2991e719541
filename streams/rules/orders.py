"""orderId uniqueness (vtcdn): the second purchase with an order id is dropped, however late.

Runs on ``events.orders``, keyed ``project:order_id``, so every event of one
order meets on one partition whichever users sent them. The first event to
arrive there holds the order id for ``retention`` (400 days by default);
a later one with another event id → ``duplicate_order``. The same event id
again is a redelivery and is accepted again.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.canonical import normalise_event_name
from schemas.reasons import DropReason, Stage
from streams.decision import Dropped
from streams.facts import Facts
from streams.rules.windows import check_window
from streams.state import State


class OrderUniqueness:
    """One accepted purchase/confirmation per ``(project, order_id)``."""

    name = "order_uniqueness"
    stage = Stage.ORDERS

    def __init__(self, retention_ms: int, grace_ms: int) -> None:
        self.retention_ms = retention_ms
        self.grace_ms = grace_ms

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        if not facts.order_id:
            return None
        key = f"r|{facts.project}|{facts.order_id}"
        hit = check_window(state, key, facts, self.retention_ms, self.grace_ms)
        if hit is None:
            return None
        return Dropped(
            DropReason.DUPLICATE_ORDER, Stage.ORDERS, f"order taken by {hit[0]} at {hit[1]}"
        )


class OrderEvents:
    """Which events take part in orderId uniqueness, and their order id."""

    def __init__(self, event_names: Iterable[str], id_properties: Iterable[str]) -> None:
        self.event_names = frozenset(normalise_event_name(n) for n in event_names)
        self.id_properties = tuple(id_properties)

    def order_id(self, name: str, order_id: str | None, properties: dict[str, str]) -> str | None:
        """The order id of a (normalised) event name, or None when it is not an order."""
        if name not in self.event_names:
            return None
        if order_id:
            return order_id
        for prop in self.id_properties:
            value = properties.get(prop)
            if value:
                return value
        return None
