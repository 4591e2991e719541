"""What a rule answers: accepted (``None``) or ``Dropped`` — a drop is data, not an exception."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.reasons import DropReason, Stage


@dataclass(slots=True)  # read-only by convention (not frozen: see streams.facts.Facts)
class Dropped:
    """An event a rule dropped: why (closed ``DropReason``), where, and a short detail.

    ``reuses_id``: the event repeats an earlier record that carries its very
    event id at another time (a client re-sending the id). Its drop is stored
    under an id derived from the id and its time (``schemas.events.copy_event_id``),
    so the earlier record's row stays the only one with that event id.
    """

    reason: DropReason
    stage: Stage
    detail: str = ""
    reuses_id: bool = False


Decision = Dropped | None
"""``None`` means accepted by this rule (and, after the whole pipeline, clean)."""
