"""The shared shape of the time-window rules (dedup, idempotency key, email opens, orders).

State under a key is a short list of *anchors* ``[[time, event_id, source, offset], ...]``:
the events accepted under this key, with the record position that accepted
them. An event is dropped when an anchor lies less than ``window_ms`` away in
event time, either side (an out-of-order event is judged on its own time, and
"at most one per window" holds both ways). Exactly ``window_ms`` apart is allowed.

Why event ids and positions: at-least-once delivery means a record can be
decided again after a crash, against state that already holds its own effect
and that of later records. So:

- an anchor with the event's own id *and time* means "this very record,
  again": accepted. The same id at another time is another record reusing
  the id (a client re-sending it without a timestamp), judged like any other;
- anchors written by *later* records of the same source partition (same
  ``source``, higher ``offset``) are ignored: they did not exist when the
  record was first decided;
- anchors are kept for ``window + grace`` behind the newest, so a dropped
  event still finds the anchor that dropped it; and never trimmed past what
  the state says is settled (``State.prune_time``): a later record rewriting
  the key must not take away an anchor that an earlier record, decided again
  after a crash, was judged by.

Together these give a re-delivered record the decision it got the first time.

Trust follows credentials (DESIGN.md): an event sent with a public credential
must never cause a server event to be dropped. So anchors live in two lanes:
server events read and write the key itself; public events are judged against
the server lane *and* their own (``key + "|p"``), and write only their own.
A browser can thus be dropped because of a server's event, never the reverse.
"""

from __future__ import annotations

from streams.facts import Facts
from streams.state import State, Value

PUBLIC_LANE = "|p"
_OWN = ("", -1)  # "the event's own anchor": a redelivery of the same event


def _repeat_of(anchors: Value | None, facts: Facts, window_ms: int) -> tuple[str, int] | None:
    """The ``(event_id, time)`` of the anchor this event repeats, ``_OWN``, or None."""
    if not anchors:
        return None
    event_id, source, offset, time = facts.event_id, facts.source, facts.offset, facts.time
    for anchor in anchors:
        if anchor[1] == event_id and anchor[0] == time:
            return _OWN
    for anchor_time, anchor_id, anchor_source, anchor_offset in anchors:
        if anchor_source == source and anchor_offset > offset:
            continue  # written after this record: not part of its history
        if abs(time - anchor_time) < window_ms:
            return anchor_id, anchor_time
    return None


def check_window(
    state: State, key: str, facts: Facts, window_ms: int, grace_ms: int
) -> tuple[str, int] | None:
    """Accept (record an anchor, return None) or return the ``(event_id, time)`` it repeats."""
    if facts.public:
        server = _repeat_of(state.get(key), facts, window_ms)
        if server is _OWN:
            return None
        if server is not None:
            return server
        key += PUBLIC_LANE
    anchors: Value | None = state.get(key)
    hit = _repeat_of(anchors, facts, window_ms)
    if hit is _OWN:
        return None
    if hit is not None:
        return hit
    time = facts.time
    if anchors:
        newest = max(time, *(a[0] for a in anchors))
        horizon = state.prune_time(newest) - window_ms - grace_ms
        kept: Value = [a for a in anchors if a[0] >= horizon]
        kept.append([time, facts.event_id, facts.source, facts.offset])
    else:
        newest = time
        kept = [[time, facts.event_id, facts.source, facts.offset]]
    state.put(key, kept, newest + window_ms + grace_ms)
    return None
