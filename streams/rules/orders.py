"""orderId uniqueness (vtcdn): one confirmation per order id, the earliest in event time.

Runs on ``events.orders``, keyed ``project:order_id``, so every event of one
order meets on one partition whichever users sent them, but in whatever order
the raw partitions interleave. The decision must not depend on that order, so
the order id belongs to its *earliest* confirmation by event time (ties: the
lower event id), and every other one is ``duplicate_order``, however late it
comes:

- a confirmation earlier than the current holder takes the order id over; the
  displaced holder is *re-decided*: the engine emits a new ``duplicate_order``
  decision for its event id (``Claim.displaced``), which replaces its accepted
  row in ClickHouse (the sink keeps the latest decision per event id);
- a confirmation that is not earlier is dropped;
- the same event id again (a redelivery after a crash, or a publisher's
  re-send) is that event again: dropped again if it was displaced; accepted
  again if it holds the order id, and then it re-decides *every* confirmation
  it outranks that is still kept, not only the one it displaced: a
  re-decision that a crash lost before it reached Kafka is made again when
  the holder's record is read again (the faust engine re-reads every record
  after the last committed offset, the holder's included).

So the final decision of every event id is the one a run in event-time order
gives, for every arrival order; without redeliveries an event is re-decided
at most once (accepted, then dropped), and never from dropped to accepted.

Trust follows credentials (streams.rules.windows): server events hold the key
``r|project|order_id``, public ones (a browser's token) ``...|p``. A public
confirmation is dropped while a server one holds the order id; a server
confirmation takes it from any public one, and displaces the public holder.
Among public confirmations the earliest wins, as among server ones.

State per lane: ``[newest, member, ...]``, members in arrival order, each
``[time, event_id, offset, decided_at, record]``: the event time and id that
rank it, its offset on ``events.orders`` and the ``decided_at`` of its
acceptance (the re-decision is stamped later, so it outranks the accepted row
even within one millisecond or in a replay, whose clock stands still), and its
``events.orders`` record (Avro, base64) to rebuild its dropped record. At most
``KEPT`` members are kept: the holder and the latest ones it displaced (older
ones were re-decided long before; only a redelivery reaching that far back
would miss re-emitting them). A record over ``RECORD_LIMIT`` bytes is kept
without its maps and long texts (see ``streams.processor``), so a value stays
well under Kafka's 1 MB message limit on the changelog.

Memory per order id: one key per lane in use. For a typical confirmation
(measured over 20,000 purchases with three properties, Avro records of 375
bytes) about 630 bytes on disk and in the changelog (the record grows by a
third in base64; ~80 bytes of key and ranking fields), against ~100 bytes for
the bare anchor kept before, and about 1.2 KiB in a memory store (CPython
3.11: key, lists, strings, dict slot, expiry heap entry). An order id whose
holder was displaced holds one such member per kept confirmation. Orders are
a small share of traffic: a million order ids within ``order_retention_days``
take about 0.6 GB on disk.

Retention: a lane is forgotten once the partition's event time passes
``retention + grace`` beyond its newest member, and a confirmation
``retention`` or more after the newest member starts the order id afresh
(the old members keep their decisions), whether or not the lane was
forgotten yet. So the decisions do not depend on arrival order among
confirmations of an order id that lie within ``retention`` (400 days by
default) of each other.

State written before this shape (anchors ``[time, event_id, source, offset]``,
no record) is read as holders that cannot be displaced: they keep the order
id as before, until they expire.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from schemas.canonical import normalise_event_name
from schemas.reasons import DropReason, Stage
from streams.decision import Dropped
from streams.facts import Facts
from streams.rules.windows import PUBLIC_LANE
from streams.state import State, Value

# The holder and the three confirmations it displaced most recently: enough
# for any redelivery in practice (a displacement needs a confirmation of the
# same order id arriving out of event-time order), and a bound on the value.
KEPT = 4
# Records above this are kept trimmed: KEPT members in base64 stay far below
# the 1 MB a changelog record may have.
RECORD_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Member:
    """A confirmation that held an order id (and may still): what ranks and rebuilds it."""

    time: int
    event_id: str
    offset: int = -1
    decided_at: int = 0
    encoded: str | None = None  # base64 of its events.orders record; None: written before

    @property
    def rank(self) -> tuple[int, str]:
        return (self.time, self.event_id)

    @property
    def record(self) -> bytes:
        """Its ``events.orders`` record (empty when it was not kept)."""
        return base64.b64decode(self.encoded) if self.encoded else b""

    @property
    def fixed(self) -> bool:
        """Written before holders carried their record: it cannot be displaced."""
        return self.encoded is None

    def value(self) -> list[object]:
        return [self.time, self.event_id, self.offset, self.decided_at, self.encoded or ""]


@dataclass(frozen=True, slots=True)
class Claim:
    """The decision on one order event and the holders it re-decides.

    ``displaced``: members that must be (re-)decided ``duplicate_order`` now,
    because the event is accepted and outranks them (empty when dropped).
    """

    dropped: Dropped | None
    displaced: tuple[Member, ...] = ()


class OrderUniqueness:
    """One accepted purchase/confirmation per ``(project, order_id)``: the earliest."""

    name = "order_uniqueness"
    stage = Stage.ORDERS

    def __init__(self, retention_ms: int, grace_ms: int) -> None:
        self.retention_ms = retention_ms
        self.grace_ms = grace_ms

    def __call__(self, facts: Facts, state: State) -> Dropped | None:
        """The ``Rule`` form: the decision only (the engine calls ``claim``)."""
        return self.claim(facts, state).dropped

    def claim(self, facts: Facts, state: State, record: bytes = b"", decided_at: int = 0) -> Claim:
        """Decide ``facts``; when accepted, record it (with ``record``, its events.orders
        value, and ``decided_at``, its acceptance's) and return whom it displaces."""
        if not facts.order_id:
            return Claim(None)
        key = f"r|{facts.project}|{facts.order_id}"
        server = self._lane(state.get(key), facts.time)
        if facts.public:
            holder = _holder(server[1])
            if holder is not None:
                if holder.event_id == facts.event_id:
                    return Claim(None)  # the server holder's own id: that event again
                return Claim(_taken(holder))
            key += PUBLIC_LANE
            lane = self._lane(state.get(key), facts.time)
            return self._decide(state, key, lane, (), facts, record, decided_at)
        public = self._lane(state.get(key + PUBLIC_LANE), facts.time)[1]
        return self._decide(state, key, server, public, facts, record, decided_at)

    def _decide(
        self,
        state: State,
        key: str,
        lane: tuple[int, list[Member]],
        outranked: Sequence[Member],
        facts: Facts,
        record: bytes,
        decided_at: int,
    ) -> Claim:
        """Decide within one lane; ``outranked``: the other lane's members, displaced too."""
        newest, members = lane
        holder = _holder(members)
        event_id = facts.event_id
        again = any(m.event_id == event_id for m in members)
        displaced: list[Member | None]
        if (
            holder is not None
            and holder.event_id != event_id
            and (again or holder.fixed or holder.rank < (facts.time, event_id))
        ):
            return Claim(_taken(holder))  # another holds it: earlier, or written before
        if again:  # every member it outranks, in case a crash lost a re-decision
            displaced = [*members, *outranked]
        else:  # the holder it takes over from; the first server one, the public holder
            displaced = [holder] if holder is not None else [_holder(outranked)]
            me = Member(
                facts.time,
                event_id,
                facts.offset,
                decided_at,
                base64.b64encode(record).decode("ascii"),
            )
            members = [*members, me][-KEPT:]
            newest = max(newest, facts.time)
            value: Value = [newest, *(m.value() for m in members)]
            state.put(key, value, newest + self.retention_ms + self.grace_ms)
        return Claim(
            None,
            tuple(m for m in displaced if m is not None and m.event_id != event_id and not m.fixed),
        )

    def _lane(self, value: Value | None, time: int) -> tuple[int, list[Member]]:
        """``(newest, members)`` of a stored lane as seen at event time ``time``.

        Empty when nothing is stored or when ``time`` lies ``retention`` or more
        past its newest member: the order id starts afresh (whether or not
        expiry has removed the value yet, so pruning never changes a decision).
        """
        if not value:
            return 0, []
        if isinstance(value[0], list):  # anchors written before: [time, id, source, offset]
            members = [Member(a[0], a[1]) for a in value]
            newest = max(m.time for m in members)
        else:
            newest = value[0]
            members = [Member(m[0], m[1], m[2], m[3], m[4]) for m in value[1:]]
        if time - newest >= self.retention_ms:
            return 0, []
        return newest, members


def _holder(members: Iterable[Member]) -> Member | None:
    """Who holds the order id: a member written before (fixed), else the earliest."""
    kept = list(members)
    fixed = [m for m in kept if m.fixed]
    return min(fixed or kept, key=lambda m: m.rank, default=None)


def _taken(holder: Member) -> Dropped:
    return Dropped(
        DropReason.DUPLICATE_ORDER,
        Stage.ORDERS,
        f"order taken by {holder.event_id} at {holder.time}",
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
