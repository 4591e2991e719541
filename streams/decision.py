"""What a rule answers: accepted (``None``) or ``Dropped`` — a drop is data, not an exception."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.reasons import DropReason, Stage


@dataclass(frozen=True, slots=True)
class Dropped:
    """An event a rule dropped: why (closed ``DropReason``), where, and a short detail."""

    reason: DropReason
    stage: Stage
    detail: str = ""


Decision = Dropped | None
"""``None`` means accepted by this rule (and, after the whole pipeline, clean)."""
