"""Event time: the one clock every rule's window is measured on.

A client's own timestamp is trusted only within ``tolerance_ms`` of when the
event was received; a skewed or forged client clock falls back to
``received_at``. Nothing here reads the wall clock, so a replay of the same
records yields the same times and therefore the same decisions.
"""

from __future__ import annotations


def event_time_ms(timestamp: int, received_at: int, tolerance_ms: int) -> int:
    """The event's time in ms: ``timestamp`` if within tolerance of ``received_at``."""
    if abs(timestamp - received_at) <= tolerance_ms:
        return timestamp
    return received_at
