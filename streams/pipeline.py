"""An ordered list of named rules, run until the first drop (Plausible's ``event.ex`` shape).

The stream runs two pipelines: the per-user one on ``events.raw`` (filters,
deduplication, email-open throttling) and the per-order one on
``events.orders``. ``build_pipelines`` assembles both from the settings, so a
replay and a live worker with the same configuration decide alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from eventsieve.config import Settings
from schemas.reasons import Stage
from streams.decision import Dropped
from streams.facts import Facts
from streams.rules.dedup import ContentDedup, IdempotencyDedup
from streams.rules.filters import (
    DEFAULT_SPAM_REFERRERS,
    BotFilter,
    IpClassificationFilter,
    SpamReferrerFilter,
)
from streams.rules.orders import OrderUniqueness
from streams.rules.shields import ShieldFilter
from streams.rules.throttle import EmailOpenThrottle
from streams.state import State, Value
from streams.useragents import UserAgents


class Rule(Protocol):
    """One named step: accepted (None) or Dropped. Reads/writes only ``state``."""

    name: str
    stage: Stage

    def __call__(self, facts: Facts, state: State) -> Dropped | None: ...


class Pipeline:
    """Runs its rules in order and stops at the first drop.

    State writes of the rules are staged and applied only when the event is
    accepted by every rule: "anchored at the last *accepted* event" holds for
    each window, and a dropped event leaves no trace in state.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)

    def decide(self, facts: Facts, state: State) -> Dropped | None:
        staged = _Staged(state)
        for rule in self.rules:
            dropped = rule(facts, staged)
            if dropped is not None:
                return dropped
        staged.apply()
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)


class _Staged:
    """Reads through to ``base``; holds writes until ``apply``."""

    __slots__ = ("base", "pending")

    def __init__(self, base: State) -> None:
        self.base = base
        self.pending: dict[str, tuple[Value, int]] = {}

    def get(self, key: str) -> Value | None:
        staged = self.pending.get(key)
        return staged[0] if staged is not None else self.base.get(key)

    def put(self, key: str, value: Value, expires_at: int) -> None:
        self.pending[key] = (value, expires_at)

    def prune_time(self, newest: int) -> int:
        return self.base.prune_time(newest)

    def apply(self) -> None:
        for key, (value, expires_at) in self.pending.items():
            self.base.put(key, value, expires_at)


@dataclass(frozen=True)
class Pipelines:
    """The per-user pipeline (on events.raw) and the per-order one (on events.orders)."""

    user: Pipeline
    orders: Pipeline


def build_pipelines(settings: Settings, user_agents: UserAgents) -> Pipelines:
    """Both pipelines, every rule on, in the order DESIGN.md gives."""
    s = settings.streams
    grace = int(s.late_grace_s * 1000)
    user = Pipeline(
        [
            BotFilter(user_agents),
            SpamReferrerFilter((*DEFAULT_SPAM_REFERRERS, *s.spam_referrers)),
            IpClassificationFilter(),
            ShieldFilter(settings.projects),
            IdempotencyDedup(int(s.idempotency_window_s * 1000), grace),
            ContentDedup(int(s.dedup_window_s * 1000), grace),
            EmailOpenThrottle(s.email_open_events, int(s.email_open_window_s * 1000), grace),
        ]
    )
    orders = Pipeline([OrderUniqueness(int(s.order_retention_days * 86_400_000), grace)])
    return Pipelines(user=user, orders=orders)
