"""Deduplication: Vero's content rule and the client's idempotency key.

- ``ContentDedup``: same project, user, normalised name and properties (the
  event fingerprint) less than ``window`` (3 min) from the last accepted
  identical event → ``duplicate``. Sliding: each accepted event is a new anchor.
- ``IdempotencyDedup``: the same ``idempotency_key`` for the same user within
  ``window`` (24 h) under a *different* event id → ``duplicate_idempotency_key``.
  The same event id again, at the same time, is a redelivery of the same
  event, accepted again (ClickHouse keeps one row per event id, so it is
  never counted twice); at another time it is a client re-sending the id, a
  copy: dropped, and stored under a derived id (``Dropped.reuses_id``).
  Keys are scoped to the user because state is partitioned by user.
"""

from __future__ import annotations

from schemas.reasons import DropReason, Stage
from streams.decision import Dropped
from streams.facts import Facts
from streams.rules.windows import check_window
from streams.state import State


class ContentDedup:
    """Vero's 3-minute rule on the event fingerprint."""

    name = "dedup"
    stage = Stage.DEDUP

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        hit = check_window(state, f"d|{facts.fingerprint}", facts, self.window_ms, self.grace_ms)
        if hit is None:
            return None
        return Dropped(
            DropReason.DUPLICATE,
            Stage.DEDUP,
            f"same as {hit[0]} at {hit[1]}",
            reuses_id=hit[0] == facts.event_id,
        )


class IdempotencyDedup:
    """A client-supplied idempotency key, remembered for 24 h of event time."""

    name = "idempotency_key"
    stage = Stage.DEDUP

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        if not facts.idempotency_key:
            return None
        key = f"i|{facts.project}|{facts.user_key}|{facts.idempotency_key}"
        hit = check_window(state, key, facts, self.window_ms, self.grace_ms)
        if hit is None:
            return None
        return Dropped(
            DropReason.DUPLICATE_IDEMPOTENCY_KEY,
            Stage.DEDUP,
            f"key seen on {hit[0]} at {hit[1]}",
            reuses_id=hit[0] == facts.event_id,
        )
