"""Replay: decide a time range of ``events.raw`` again with the current rules. Pure: no I/O.

``eventsieve replay --from T1 [--to T2] [--project P]`` must leave in
ClickHouse, for every event in the range, the decision a *fresh* run over the
whole raw topic with the current rules would make. So the replay is a fresh
run: the same ``Processor`` the live worker uses, with fresh in-memory state,
over every raw record up to a snapshot of the topic's end offsets. Records
before the range only build state (a duplicate of an event accepted just
before T1 is still a duplicate; an order id seen a year before is still a
repeat); only decisions of in-range events are emitted, with ``decided_at``
set to the replay's start, so the sink's ``decision_version`` makes them
replace the old rows. Events outside the range get nothing.

The order a fresh run decides records in (``TimeOrderedMerge``, ``Replayer``):

- each raw partition in offset order, as a worker reads it;
- across partitions, by record timestamp (ties: partition, then offset),
  which is the order a worker that keeps up decides them in. Per-user state
  never spans raw partitions, and orderId uniqueness gives every arrival
  order the same final decisions (the earliest confirmation by event time
  keeps the order id), so this only matters where the live order is itself
  not fixed and decisions depend on it: a user whose records are both on the
  right partition and re-keyed. The replay makes that order deterministic:
  earliest record timestamp first;
- a re-keyed record is decided right after the record that re-keyed it, and
  an order event's uniqueness check right after its user pipeline (the live
  worker does both one topic hop later).

An order event that takes an order id over from a later confirmation decided
before it also re-decides that holder (``duplicate_order``). The re-decision
is emitted when the holder is in the range, stamped 1 ms after the replay's
start (``Processor``), so it outranks the holder's own replayed acceptance;
the replay's final decision of every event id is the one a run in event-time
order gives, as the live worker's is.

State is kept per partition, as in the worker (user state by raw partition,
order state by ``events.orders`` partition), and pruned by each partition's
own event time, so pruning matches the live worker's too.

The range is on the event's ``timestamp`` at second resolution, the value
ClickHouse stores as ``event_time`` and ``eventsieve stats`` filters on: what
``stats --from T1 --to T2`` counts is what the replay decides again.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from eventsieve.config import Settings
from schemas.reasons import COPY_REASONS, DropReason
from streams.processor import Output, Processor, Record, Sink
from streams.state import InMemoryState

ACCEPTED = "accepted"


def label_of(decision: str, reason: str = "") -> str:
    """How a decision reads in reports: ``accepted`` or ``dropped:<reason>``."""
    return ACCEPTED if decision == ACCEPTED else f"dropped:{reason}"


@dataclass(frozen=True, slots=True)
class ReplayRange:
    """Event time ``[start_s, end_s)`` in whole seconds (end None: open), optionally one project."""

    start_s: int
    end_s: int | None = None
    project: str | None = None

    def __post_init__(self) -> None:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("the end of the replay range must be after its start")

    def contains(self, project: str, timestamp_ms: int) -> bool:
        """True for an event of ``project`` whose ``timestamp`` lies in the range."""
        if self.project is not None and project != self.project:
            return False
        second = timestamp_ms // 1000  # ClickHouse's event_time: DateTime, whole seconds
        return second >= self.start_s and (self.end_s is None or second < self.end_s)

    def as_dict(self) -> dict[str, object]:
        return {"start_s": self.start_s, "end_s": self.end_s, "project": self.project}


@dataclass(frozen=True, slots=True)
class Decided:
    """The new decision of one in-range event, and the record that carries it."""

    event_id: str
    label: str
    output: Output


class TimeOrderedMerge:
    """Raw records of several partitions, merged into the order a fresh run decides them.

    Each partition's records must be pushed in offset order. ``pop`` returns
    the next record only when every unfinished partition has one buffered
    (otherwise the next might still come from the empty one), so the order is
    the same however the reads interleave.
    """

    def __init__(self, partitions: Iterable[int]) -> None:
        self.buffers: dict[int, deque[Record]] = {p: deque() for p in partitions}
        self.open: set[int] = set(self.buffers)

    def push(self, record: Record) -> None:
        self.buffers[record.partition].append(record)

    def finish(self, partition: int) -> None:
        """No more records will come for ``partition``."""
        self.open.discard(partition)

    def buffered(self, partition: int) -> int:
        return len(self.buffers[partition])

    def waiting_for(self) -> list[int]:
        """Unfinished partitions with nothing buffered: read these before ``pop`` can go on."""
        return [p for p in self.open if not self.buffers[p]]

    def pop(self) -> Record | None:
        """The next record in order, or None until more are pushed (or all are done)."""
        best: Record | None = None
        for partition, buffer in self.buffers.items():
            if not buffer:
                if partition in self.open:
                    return None
                continue
            head = buffer[0]
            if best is None or _order_key(head) < _order_key(best):
                best = head
        if best is not None:
            self.buffers[best.partition].popleft()
        return best

    def drain(self) -> Iterator[Record]:
        while (record := self.pop()) is not None:
            yield record


def _order_key(record: Record) -> tuple[int, int, int]:
    return (record.timestamp or 0, record.partition, record.offset)


@dataclass
class ReplayCounts:
    """What the replay saw, for its report."""

    records: int = 0  # raw records read
    context: int = 0  # decided only to build state (outside the range)
    in_range: int = 0  # in-range records decided (one decision emitted each)
    redecided: int = 0  # decisions emitted again for in-range order holders displaced later
    dlq: int = 0  # raw records that do not decode or validate (left to the DLQ)
    labels: Counter[str] = field(default_factory=Counter)


class Replayer:
    """A fresh run of the stream's rules over raw records, emitting in-range decisions.

    ``decided_at`` is the replay's start (ms): every emitted decision carries
    it, so a resumed replay emits byte-identical records.
    """

    def __init__(
        self,
        settings: Settings,
        span: ReplayRange,
        decided_at: int,
        *,
        rekey_topic: str,
        processor: Processor | None = None,
    ) -> None:
        self.settings = settings
        self.span = span
        self.processor = processor or Processor(settings, clock=lambda: decided_at)
        self.rekey_topic = rekey_topic
        self.user_states: dict[int, InMemoryState] = {}
        self.order_states: dict[int, InMemoryState] = {}
        # Positions the re-key and orders records would get: rising per
        # partition, so the window rules' "written by a later record" test
        # never hides an anchor from a record decided after it.
        self.next_offset: dict[tuple[str, int], int] = {}
        self.counts = ReplayCounts()

    def feed(self, record: Record) -> list[Decided]:
        """Decide one raw record: its new decision if its event is in the range, then
        the re-decisions of in-range order holders it displaced (if it is an order event)."""
        self.counts.records += 1
        outcome = self.processor.on_raw(record, self._user_state(record.partition))
        self._advance(self.user_states, record.partition, outcome.event_time)
        if outcome.sink is Sink.REKEY:
            [out] = outcome.outputs
            partition = out.partition or 0
            rekeyed = self._derived(self.rekey_topic, partition, out)
            outcome = self.processor.on_raw(
                rekeyed, self._user_state(partition), check_partition=False
            )
            self._advance(self.user_states, partition, outcome.event_time)
        if outcome.sink is Sink.ORDERS:
            [out] = outcome.outputs
            partition = out.partition or 0
            order = self._derived(self.settings.topics.orders, partition, out)
            outcome = self.processor.on_order(order, self._order_state(partition))
            self._advance(self.order_states, partition, outcome.event_time)
        if outcome.sink is Sink.DLQ:
            self.counts.dlq += 1
            return []
        out, *redecided = outcome.outputs
        decided: list[Decided] = []
        event_id, project, timestamp = output_head(out.value)
        if self.span.contains(project, timestamp):
            dropped = outcome.dropped
            label = ACCEPTED if dropped is None else label_of("dropped", dropped.reason.value)
            self.counts.in_range += 1
            self.counts.labels[label] += 1
            decided.append(Decided(event_id, label, out))
        else:
            self.counts.context += 1
        for again in redecided:  # displaced order holders: dropped as duplicate_order
            event_id, project, timestamp = output_head(again.value)
            if self.span.contains(project, timestamp):
                self.counts.redecided += 1
                decided.append(Decided(event_id, _REDECIDED, again))
        return decided

    def _user_state(self, partition: int) -> InMemoryState:
        state = self.user_states.get(partition)
        if state is None:
            state = self.user_states[partition] = InMemoryState()
        return state

    def _order_state(self, partition: int) -> InMemoryState:
        state = self.order_states.get(partition)
        if state is None:
            state = self.order_states[partition] = InMemoryState()
        return state

    @staticmethod
    def _advance(states: dict[int, InMemoryState], partition: int, time: int | None) -> None:
        if time is not None:
            states[partition].advance(time)

    def _derived(self, topic: str, partition: int, out: Output) -> Record:
        slot = (topic, partition)
        offset = self.next_offset.get(slot, 0)
        self.next_offset[slot] = offset + 1
        return Record(topic, partition, offset, out.key, out.value)


_REDECIDED = label_of("dropped", DropReason.DUPLICATE_ORDER.value)


def output_head(value: bytes) -> tuple[str, str, int]:
    """``(event_id, project, timestamp)`` of an encoded CleanEvent or DroppedEvent.

    Reads only the first four fields of the Avro body (after the 10-byte
    single-object header): both schemas start ``event_id, project, name,
    timestamp``. A full decode of every output cost the replay about a sixth
    of its time, only to learn these three values.
    """
    pos = 10
    fields: list[str] = []
    for _ in range(3):
        length, pos = _varint(value, pos)
        fields.append(value[pos : pos + length].decode())
        pos += length
    timestamp, _ = _varint(value, pos)
    return fields[0], fields[1], timestamp


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """An Avro zig-zag varint at ``pos``: (value, next position)."""
    shift = result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


# Drops of a repeated delivery of the same event id (schemas.reasons.COPY_REASONS):
# in ClickHouse they rank below any other decision of that event id.
COPY_LABELS = frozenset(label_of("dropped", r) for r in COPY_REASONS)


def record_label(labels: dict[str, str], event_id: str, label: str) -> None:
    """Note ``event_id``'s new decision as the sink will rank it.

    An event id published twice is decided twice; a copy-drop of the second
    delivery does not replace the first delivery's decision in ClickHouse
    (``decision_version``), so it does not replace it here either.
    """
    if label in COPY_LABELS and labels.get(event_id, label) != label:
        return
    labels[event_id] = label


def changes(
    before: dict[str, str], after: dict[str, str], missing: str = "(none)"
) -> list[tuple[str, str, int]]:
    """How many decisions move from what to what: ``[(old, new, count)]``, largest first.

    ``before`` is the latest decision per event id in ClickHouse, ``after`` the
    replay's; an event the sink has not stored yet reads as ``missing``.
    """
    moved: Counter[tuple[str, str]] = Counter()
    for event_id, new in after.items():
        old = before.get(event_id, missing)
        if old != new:
            moved[(old, new)] += 1
    return sorted(((a, b, n) for (a, b), n in moved.items()), key=lambda x: (-x[2], x[0], x[1]))


def rules_fingerprint(settings: Settings) -> str:
    """A digest of everything a decision depends on: a checkpoint is only valid for the same.

    The streams section, the projects (shields, domains) and the partition
    count (re-keying). Visitor ids are not derived by the stream, so the
    privacy secret plays no part.
    """
    doc = {
        "streams": settings.streams.model_dump(
            mode="json", exclude={"app_id", "data_dir", "metrics_port", "store", "batch_size"}
        ),
        "projects": [p.model_dump(mode="json") for p in settings.projects],
        "partitions": settings.topics.partitions,
    }
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class Checkpoint:
    """How far a replay got, so a re-run continues it (stored as JSON by the CLI side).

    ``acked`` counts the replay's outputs, in emission order, that Kafka has
    acknowledged — all of them, with no gap before that number. The emission
    order is deterministic (same snapshot, same rules, same ``decided_at``),
    so a resumed run recomputes the same outputs and skips the first
    ``acked``; any output after that may have been produced already and is
    produced again, identical, which the sink stores once (same ``event_id``
    and version).
    """

    key: str
    span: dict[str, object]
    raw_topic: str
    rules: str
    snapshot: dict[int, tuple[int, int]]  # partition → (first offset, end offset)
    decided_at: int
    acked: int = 0
    done: bool = False

    def to_json(self) -> bytes:
        doc = {
            "key": self.key,
            "span": self.span,
            "raw_topic": self.raw_topic,
            "rules": self.rules,
            "snapshot": {str(p): list(v) for p, v in self.snapshot.items()},
            "decided_at": self.decided_at,
            "acked": self.acked,
            "done": self.done,
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        doc = orjson.loads(data)
        return cls(
            key=doc["key"],
            span=doc["span"],
            raw_topic=doc["raw_topic"],
            rules=doc["rules"],
            snapshot={int(p): (int(v[0]), int(v[1])) for p, v in doc["snapshot"].items()},
            decided_at=int(doc["decided_at"]),
            acked=int(doc["acked"]),
            done=bool(doc["done"]),
        )


def checkpoint_key(span: ReplayRange, raw_topic: str, rules: str) -> str:
    """The name a replay's checkpoint goes by: same parameters and rules, same key."""
    doc = orjson.dumps([span.as_dict(), raw_topic, rules], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(doc).hexdigest()[:16]


class AckTracker:
    """The longest prefix of outputs (by emission index) that Kafka acknowledged.

    Deliveries across partitions complete out of order; only an unbroken
    prefix may be checkpointed.
    """

    def __init__(self, start: int = 0) -> None:
        self.prefix = start
        self._ahead: set[int] = set()
        self.failed: list[tuple[int, str]] = []

    def ack(self, index: int) -> None:
        if index < self.prefix:
            return
        self._ahead.add(index)
        while self.prefix in self._ahead:
            self._ahead.remove(self.prefix)
            self.prefix += 1

    def fail(self, index: int, error: str) -> None:
        self.failed.append((index, error))

    def callback(self, index: int) -> Callable[[object, object], None]:
        """A confluent-kafka delivery callback for output ``index``."""

        def delivered(err: object, _msg: object) -> None:
            if err is None:
                self.ack(index)
            else:
                self.fail(index, str(err))

        return delivered
