"""The shared shape of the time-window rules (dedup, idempotency key, email opens, orders).

State under a key is a short list of *anchors* ``[[time, event_id, source, offset], ...]``:
the events accepted under this key, with the record position that accepted
them. An event is dropped when an anchor lies less than ``window_ms`` away in
event time, either side (an out-of-order event is judged on its own time, and
"at most one per window" holds both ways). Exactly ``window_ms`` apart is allowed.

Why event ids and positions: at-least-once delivery means a record can be
decided again after a crash, against state that already holds its own effect
and that of later records. So:

- an anchor with the event's own id means "this very event, again": accepted;
- anchors written by *later* records of the same source partition (same
  ``source``, higher ``offset``) are ignored: they did not exist when the
  record was first decided;
- anchors are kept for ``window + grace`` behind the newest, so a dropped
  event still finds the anchor that dropped it.

Together these give a re-delivered record the decision it got the first time.
"""

from __future__ import annotations

from streams.facts import Facts
from streams.state import State, Value


def check_window(
    state: State, key: str, facts: Facts, window_ms: int, grace_ms: int
) -> tuple[str, int] | None:
    """Accept (record an anchor, return None) or return the ``(event_id, time)`` it repeats."""
    time = facts.time
    anchors: Value | None = state.get(key)
    if anchors:
        event_id, source, offset = facts.event_id, facts.source, facts.offset
        for anchor in anchors:
            if anchor[1] == event_id:
                return None
        for anchor_time, anchor_id, anchor_source, anchor_offset in anchors:
            if anchor_source == source and anchor_offset > offset:
                continue  # written after this record: not part of its history
            if abs(time - anchor_time) < window_ms:
                return anchor_id, anchor_time
        newest = max(time, *(a[0] for a in anchors))
        horizon = newest - window_ms - grace_ms
        kept: Value = [a for a in anchors if a[0] >= horizon]
        kept.append([time, facts.event_id, facts.source, facts.offset])
    else:
        newest = time
        kept = [[time, facts.event_id, facts.source, facts.offset]]
    state.put(key, kept, newest + window_ms + grace_ms)
    return None
