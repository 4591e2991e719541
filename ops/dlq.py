"""The dead-letter queue, read back: ``eventsieve dlq list`` and ``eventsieve dlq redrive``.

``events.dlq`` holds records the stream could not decode or validate, and
records the sink could not turn into rows, each kept byte for byte with its
source position and error (schemas/avro/dlq_record.avsc). After a fix (a new
schema version released, a project configured, a bug fixed), ``redrive``
publishes them again to the topic they came from, with their key.

Processed once, however often it runs: every re-published event carries a
stable ``event_id``. A raw record that had none gets the id the stream would
have derived from its *original* topic, partition and offset
(``derived_event_id``), and is re-published as Avro with it, so the stream
decides it as that same event each time and ClickHouse keeps one row for it.
Records of the sink's inputs (``events.clean``/``events.dropped``) already
carry their id and are re-published as they are.

The decisions (``plan``, ``matches``, ``summarise``, ``group_id_for``) are
pure functions; ``read_dlq`` and ``Redriver`` are the thin Kafka I/O around
them. The order of one re-drive batch, written down once:

1. read a batch of DLQ records (from the group's committed offsets);
2. plan each: re-drive, still failing (never published) or filtered out;
3. publish the re-drives and wait until Kafka acknowledged every one;
4. only then commit the batch's DLQ offsets to the re-drive consumer group.

A crash between 3 and 4 re-publishes that batch on resume: harmless, as the
event ids are stable and the stream accepts a known event id again as the
same event.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from eventsieve.config import Settings
from eventsieve.errors import EventsieveError, ServiceUnavailableError
from eventsieve.kafka import (
    Header,
    durable_producer_config,
    produce_when_room,
    reader_config,
    record_offset,
    record_partition,
)
from eventsieve.services import kafka_bootstrap
from schemas.codecs import decode_dlq, decode_raw, encode_raw
from schemas.errors import DecodeError
from schemas.events import DlqRecord, RawEvent, derived_event_id
from streams.enrich import Enricher
from streams.errors import InvalidEvent
from streams.useragents import UserAgents

REDRIVE_HEADER = "eventsieve-redriven-from"
"""Header added to every re-published record: ``<dlq topic>/<partition>/<offset>``."""

Check = Callable[[RawEvent], "tuple[str, str] | None"]
"""Validates a decoded event with the current rules: ``(error code, message)`` or None."""


class DlqError(EventsieveError):
    """Reading or re-driving the DLQ failed; nothing was committed past the failure."""


class Action(StrEnum):
    """What a re-drive does with one DLQ record."""

    REDRIVE = "redrive"  # published again to its source topic
    STILL_FAILING = "still_failing"  # fails with the current codecs/rules: left in the DLQ
    REPEAT = "repeat"  # the same event was already re-driven earlier in this run
    FILTERED = "filtered"  # not selected by --source/--error


@dataclass(frozen=True, slots=True)
class Entry:
    """One DLQ record with its own position in the DLQ topic."""

    partition: int
    offset: int
    record: DlqRecord

    @property
    def position(self) -> str:
        return f"{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one DLQ record; ``value`` is set only for ``REDRIVE``."""

    action: Action
    entry: Entry
    topic: str
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[Header, ...] = ()
    event_id: str | None = None
    error_type: str | None = None  # why it still fails (STILL_FAILING only)
    error: str | None = None
    identity: str | None = None  # what "the same event" means for REPEAT


# -- pure decisions -----------------------------------------------------------------


def sink_sources(settings: Settings) -> frozenset[str]:
    """Topics the sink reads: their DLQ records are re-published byte for byte."""
    return frozenset({settings.topics.clean, settings.topics.dropped})


def matches(record: DlqRecord, sources: Sequence[str], errors: Sequence[str]) -> bool:
    """True when the record passes the ``--source``/``--error`` filters (empty: any)."""
    if sources and record["topic"] not in sources:
        return False
    return not errors or record["error_type"] in errors


def plan(
    entry: Entry,
    *,
    dlq_topic: str,
    sink_topics: frozenset[str],
    check: Check | None = None,
    sources: Sequence[str] = (),
    errors: Sequence[str] = (),
) -> Plan:
    """Decide what to do with one DLQ record (no I/O).

    Stream inputs (the raw topic, the orders and re-key topics) are decoded
    with the current codecs; when that fails, or ``check`` (the current
    validation rules) refuses the event, the record is still failing and is
    never published. Otherwise it is re-encoded as Avro with its event id
    fixed: its own, or the one derived from its original position.
    """
    record = entry.record
    topic = record["topic"]
    if not matches(record, sources, errors):
        return Plan(Action.FILTERED, entry, topic)
    headers = (
        *((h["key"], h["value"]) for h in record["headers"] if h["key"] != REDRIVE_HEADER),
        (REDRIVE_HEADER, f"{dlq_topic}/{entry.position}".encode()),
    )
    value = record["value"]
    if value is None:
        return Plan(Action.STILL_FAILING, entry, topic, error_type="tombstone", error="no value")
    if topic in sink_topics:
        identity = "sha256:" + hashlib.sha256(value).hexdigest()
        return Plan(Action.REDRIVE, entry, topic, record["key"], value, headers, identity=identity)
    try:
        raw = decode_raw(
            value,
            event_id=derived_event_id(topic, record["partition"], record["offset"]),
            received_at=record["record_timestamp"],
        )
    except DecodeError as exc:
        return Plan(Action.STILL_FAILING, entry, topic, error_type=exc.code, error=str(exc))
    if check is not None and (problem := check(raw)) is not None:
        return Plan(Action.STILL_FAILING, entry, topic, error_type=problem[0], error=problem[1])
    event_id = raw["event_id"]
    return Plan(
        Action.REDRIVE,
        entry,
        topic,
        record["key"],
        encode_raw(raw),
        headers,
        event_id=event_id,
        identity=event_id,
    )


def drop_repeats(plans: Iterable[Plan], seen: set[str]) -> list[Plan]:
    """Turn re-drives of an event already re-driven in this run into ``REPEAT``.

    The DLQ can hold one event several times (it failed, was re-driven and
    failed again). Publishing it twice would be harmless; once is enough.
    """
    out = []
    for p in plans:
        if p.action is Action.REDRIVE and p.identity is not None:
            if p.identity in seen:
                out.append(Plan(Action.REPEAT, p.entry, p.topic, event_id=p.event_id))
                continue
            seen.add(p.identity)
        out.append(p)
    return out


def group_id_for(base: str, sources: Sequence[str], errors: Sequence[str]) -> str:
    """The consumer group that remembers a re-drive's progress.

    A filtered re-drive gets a group of its own (suffixed with a digest of the
    filters), so it never moves the unfiltered re-drive past records it did
    not select.
    """
    if not sources and not errors:
        return base
    spec = "|".join(sorted(f"s:{s}" for s in sources) + sorted(f"e:{e}" for e in errors))
    return f"{base}.{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


@dataclass
class Group:
    """DLQ records of one source topic and error code: count and a few examples."""

    topic: str
    error_type: str
    stage: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    first_failed_at: int | None = None
    last_failed_at: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "error_type": self.error_type,
            "stage": self.stage,
            "count": self.count,
            "examples": self.examples,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
        }


def summarise(records: Iterable[DlqRecord], examples: int = 3) -> list[Group]:
    """Group records by (source topic, error code), largest group first.

    Messages differ per record (they name the field and value), so the code
    groups and up to ``examples`` distinct messages illustrate each group.
    """
    groups: dict[tuple[str, str], Group] = {}
    for r in records:
        key = (r["topic"], r["error_type"])
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(r["topic"], r["error_type"], r["stage"])
        g.count += 1
        if len(g.examples) < examples and r["error"] not in g.examples:
            g.examples.append(r["error"])
        at = r["failed_at"]
        g.first_failed_at = at if g.first_failed_at is None else min(g.first_failed_at, at)
        g.last_failed_at = at if g.last_failed_at is None else max(g.last_failed_at, at)
    return sorted(groups.values(), key=lambda g: (-g.count, g.topic, g.error_type))


@dataclass
class Report:
    """What one re-drive did (or would do, on a dry run)."""

    redriven: Counter[tuple[str, str]] = field(default_factory=Counter)
    still_failing: list[Group] = field(default_factory=list)
    repeats: int = 0
    filtered: int = 0
    read: int = 0
    samples: list[Plan] = field(default_factory=list)
    _failing: dict[tuple[str, str], Group] = field(default_factory=dict, repr=False)

    def add(self, plans: Sequence[Plan], keep_samples: int = 0) -> None:
        """Count a batch of plans (pure bookkeeping)."""
        for p in plans:
            self.read += 1
            record = p.entry.record
            if p.action is Action.REDRIVE:
                self.redriven[(p.topic, record["error_type"])] += 1
                if len(self.samples) < keep_samples:
                    self.samples.append(p)
            elif p.action is Action.REPEAT:
                self.repeats += 1
            elif p.action is Action.FILTERED:
                self.filtered += 1
            else:
                key = (p.topic, p.error_type or "")
                g = self._failing.get(key)
                if g is None:
                    g = self._failing[key] = Group(p.topic, p.error_type or "", record["stage"])
                    self.still_failing.append(g)
                g.count += 1
                if len(g.examples) < 3 and p.error and p.error not in g.examples:
                    g.examples.append(p.error)
                at = record["failed_at"]
                g.first_failed_at = at if g.first_failed_at is None else min(g.first_failed_at, at)
                g.last_failed_at = at if g.last_failed_at is None else max(g.last_failed_at, at)

    @property
    def redriven_total(self) -> int:
        return sum(self.redriven.values())

    @property
    def still_failing_total(self) -> int:
        return sum(g.count for g in self.still_failing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "redriven": self.redriven_total,
            "redriven_by": [
                {"topic": t, "error_type": e, "count": n}
                for (t, e), n in sorted(self.redriven.items())
            ],
            "still_failing": self.still_failing_total,
            "still_failing_by": [g.as_dict() for g in self.still_failing],
            "repeats": self.repeats,
            "filtered": self.filtered,
        }


def settings_check(settings: Settings) -> Check:
    """The stream's own validation (streams.enrich) under ``settings``, as a ``Check``.

    So a record the worker would send straight back to the DLQ (an unknown
    project, no user and no IP) is reported as still failing instead of being
    published again.
    """
    enricher = Enricher(settings, UserAgents(0))

    def check(raw: RawEvent) -> tuple[str, str] | None:
        try:
            enricher.enrich(dict(raw), "redrive", -1)  # type: ignore[arg-type]  # a copy: enrich fills in fields
        except InvalidEvent as exc:
            return "invalid", str(exc)
        return None

    return check


# -- Kafka I/O ------------------------------------------------------------------------


def _consumer(settings: Settings, group_id: str) -> Consumer:
    # A command, not a daemon: failures surface as one DlqError/ServiceError
    # line, not as librdkafka's per-connection log lines.
    return Consumer(reader_config(kafka_bootstrap(settings), group_id, log_level=0))


@dataclass(frozen=True)
class Span:
    """Where reading starts and ends, per partition of the DLQ topic."""

    starts: dict[int, int]
    ends: dict[int, int]  # high watermarks when the run started: records after it wait

    @property
    def pending(self) -> int:
        return sum(max(0, self.ends[p] - self.starts[p]) for p in self.starts)


def span_of(consumer: Consumer, topic: str, *, committed: bool, timeout: float = 10.0) -> Span:
    """From the group's committed offsets (or the beginning) to the current end."""
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"Kafka does not answer: {exc}") from exc
    if meta is None or meta.error is not None or not meta.partitions:
        raise DlqError(f"topic {topic!r} does not exist")
    partitions = sorted(meta.partitions)
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    done = (
        consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
        if committed
        else []
    )
    done_at = {tp.partition: tp.offset for tp in done}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        start = done_at.get(p, -1)
        starts[p] = max(start, low) if start >= 0 else low
        ends[p] = high
    return Span(starts, ends)


def read_dlq(
    consumer: Consumer,
    topic: str,
    span: Span,
    *,
    batch_size: int = 500,
    max_records: int | None = None,
    idle_timeout_s: float = 10.0,
    clock: Callable[[], float] | None = None,
) -> Iterator[list[Entry]]:
    """Batches of DLQ entries from ``span.starts`` up to ``span.ends``.

    Ends when every partition reached the end of the span, after
    ``max_records``, or when nothing arrived for ``idle_timeout_s`` (a broker
    that stopped answering must not hang the command). A DLQ record that is
    not a DlqRecord at all is an error: it cannot be skipped silently.
    """
    now = clock or time.monotonic
    pending = {p for p in span.starts if span.starts[p] < span.ends[p]}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, span.starts[p]) for p in sorted(pending)])
    remaining = max_records
    last_seen = now()
    while pending and (remaining is None or remaining > 0):
        want = batch_size if remaining is None else min(batch_size, remaining)
        batch: list[Entry] = []
        for message in consumer.consume(want, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise DlqError(f"reading {topic}: {error}")
            p, offset = record_partition(message), record_offset(message)
            if p not in pending or offset >= span.ends[p]:
                continue
            try:
                record = decode_dlq(message.value())
            except DecodeError as exc:
                raise DlqError(f"{topic} {p}/{offset} is not a DLQ record: {exc}") from exc
            batch.append(Entry(p, offset, record))
            if offset + 1 >= span.ends[p]:
                pending.discard(p)
        if batch:
            last_seen = now()
            if remaining is not None:
                remaining -= len(batch)
            yield batch
        elif now() - last_seen > idle_timeout_s:
            return


class Redriver:
    """Publishes planned re-drives and commits DLQ progress after they are acknowledged."""

    def __init__(self, settings: Settings, consumer: Consumer, dlq_topic: str) -> None:
        self.consumer = consumer
        self.dlq_topic = dlq_topic
        # Kafka's Java partitioner (the durable config's): keyed records of the
        # orders and re-key topics land on the partition they came from.
        self.producer = Producer(
            durable_producer_config(kafka_bootstrap(settings), log_level=0)  # see _consumer
        )

    def publish(self, plans: Sequence[Plan], timeout: float = 30.0) -> None:
        """Publish every ``REDRIVE`` plan; return only when Kafka acknowledged all of them."""
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for p in plans:
            if p.action is not Action.REDRIVE:
                continue
            assert p.value is not None  # REDRIVE plans always carry a value
            self._produce(p, delivered)
        remaining = self.producer.flush(timeout)
        if failures or remaining:
            raise DlqError(
                f"{len(failures) + remaining} re-driven record(s) not acknowledged "
                f"({failures[0] if failures else 'timeout'}); DLQ progress not committed"
            )

    def _produce(self, p: Plan, delivered: Callable[..., None]) -> None:
        produce_when_room(
            self.producer,
            p.topic,
            key=p.key,
            value=p.value,
            headers=list(p.headers),
            on_delivery=delivered,
        )
        self.producer.poll(0)

    def commit(self, batch: Sequence[Entry]) -> None:
        """Remember that ``batch`` is handled: the next offset of each partition."""
        last: dict[int, int] = {}
        for e in batch:
            last[e.partition] = max(last.get(e.partition, -1), e.offset)
        offsets = [TopicPartition(self.dlq_topic, p, o + 1) for p, o in sorted(last.items())]
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                raise DlqError(f"committing DLQ progress failed: {exc}") from exc


def list_dlq(
    settings: Settings, *, max_records: int | None = None, idle_timeout_s: float | None = None
) -> tuple[list[Group], int]:
    """Read the DLQ from the beginning (no group offsets touched); ``(groups, records read)``."""
    topic = settings.topics.dlq
    consumer = _consumer(settings, f"{settings.dlq.group_id}.list")
    try:
        span = span_of(consumer, topic, committed=False)
        records: list[DlqRecord] = []
        for batch in read_dlq(
            consumer,
            topic,
            span,
            max_records=max_records,
            idle_timeout_s=idle_timeout_s or settings.dlq.idle_timeout_s,
        ):
            records.extend(e.record for e in batch)
        return summarise(records), len(records)
    finally:
        consumer.close()


def redrive(
    settings: Settings,
    *,
    sources: Sequence[str] = (),
    errors: Sequence[str] = (),
    from_beginning: bool = False,
    dry_run: bool = False,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
    check: Check | None = None,
    samples: int = 0,
    on_batch: Callable[[Report, Span], None] | None = None,
) -> Report:
    """Re-drive the DLQ records not handled yet (all of them with ``from_beginning``).

    ``check`` defaults to the stream's validation under ``settings``. A dry
    run plans and counts, publishes nothing and commits nothing.
    """
    topic = settings.topics.dlq
    group_id = group_id_for(settings.dlq.group_id, sources, errors)
    consumer = _consumer(settings, group_id)
    report = Report()
    seen: set[str] = set()
    rules = check if check is not None else settings_check(settings)
    sinks = sink_sources(settings)
    try:
        span = span_of(consumer, topic, committed=not from_beginning)
        redriver = None if dry_run else Redriver(settings, consumer, topic)
        for batch in read_dlq(
            consumer,
            topic,
            span,
            max_records=max_records,
            idle_timeout_s=idle_timeout_s or settings.dlq.idle_timeout_s,
        ):
            plans = drop_repeats(
                (
                    plan(
                        e,
                        dlq_topic=topic,
                        sink_topics=sinks,
                        check=rules,
                        sources=sources,
                        errors=errors,
                    )
                    for e in batch
                ),
                seen,
            )
            if redriver is not None:
                redriver.publish(plans)
                redriver.commit(batch)
            report.add(plans, keep_samples=samples)
            if on_batch is not None:
                on_batch(report, span)
        return report
    finally:
        consumer.close()
