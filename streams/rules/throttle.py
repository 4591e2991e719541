"""Email-open throttling (vtcdn): one open per user per 20 minutes of event time.

When the event names its message or campaign, the limit is per user *and*
message, so opening two different newsletters both count. Which event names
are email opens is configuration (``streams.email_open_events``), compared
after name normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.canonical import normalise_event_name
from schemas.reasons import DropReason, Stage
from streams.decision import Dropped
from streams.facts import Facts
from streams.rules.windows import check_window
from streams.state import State


class EmailOpenThrottle:
    """At most one accepted email open per (user, message) per ``window``."""

    name = "email_open_throttle"
    stage = Stage.THROTTLE

    def __init__(self, event_names: Iterable[str], window_ms: int, grace_ms: int) -> None:
        self.event_names = frozenset(normalise_event_name(n) for n in event_names)
        self.window_ms = window_ms
        self.grace_ms = grace_ms

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        if facts.name not in self.event_names:
            return None
        key = f"o|{facts.project}|{facts.user_key}|{facts.message_id or ''}"
        hit = check_window(state, key, facts, self.window_ms, self.grace_ms)
        if hit is None:
            return None
        return Dropped(
            DropReason.EMAIL_OPEN_THROTTLED,
            Stage.THROTTLE,
            f"open {hit[0]} at {hit[1]}",
            reuses_id=hit[0] == facts.event_id,
        )
