"""The shared shape of the time-window rules (dedup, idempotency key, email opens, orders).

State under a key is a short list of *anchors* ``[[event_time, event_id], ...]``:
the events this rule accepted. An event is dropped when an anchor other than
itself lies less than ``window_ms`` away in event time, either side (so an
out-of-order event is judged on its own time, and "at most one per window"
holds both ways). Exactly ``window_ms`` apart is allowed.

Why keep event ids and more than one anchor: at-least-once delivery means a
record can be processed again after a crash, against state that already holds
its own effect and that of later records. An event whose id is an anchor is
the same event again and is accepted again; a dropped one still finds the
anchor that dropped it, because anchors are kept for ``window + grace`` behind
the newest. The decision for a redelivered record is therefore the same as the
first time.
"""

from __future__ import annotations

from streams.state import State, Value


def check_window(
    state: State,
    key: str,
    time: int,
    event_id: str,
    window_ms: int,
    grace_ms: int,
) -> tuple[str, int] | None:
    """Accept (record an anchor, return None) or return the ``(event_id, time)`` it repeats."""
    anchors: Value | None = state.get(key)
    if anchors:
        for _, anchor_id in anchors:
            if anchor_id == event_id:
                return None
        for anchor_time, anchor_id in anchors:
            if abs(time - anchor_time) < window_ms:
                return anchor_id, anchor_time
        newest = max(time, *(a[0] for a in anchors))
        horizon = newest - window_ms - grace_ms
        kept: Value = [a for a in anchors if a[0] >= horizon]
        kept.append([time, event_id])
    else:
        newest = time
        kept = [[time, event_id]]
    state.put(key, kept, newest + window_ms + grace_ms)
    return None
