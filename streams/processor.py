"""One record in, its outputs out: the whole decision path without Faust or Kafka.

``Processor.on_raw`` handles a record of ``events.raw`` (or of the re-key
topic), ``Processor.on_order`` one of ``events.orders``. Each returns the
records to produce and an ``Outcome`` for metrics and logs. The Faust agents
(streams/app.py) only feed records in, produce what comes out, and acknowledge
the input once every output is acknowledged by Kafka.

Paths of a raw record::

    decode ─fail─▶ dlq
    enrich/validate ─fail─▶ dlq
    on the wrong partition for project:user_key ─▶ rekey (then back here)
    user pipeline (bot, spam, ip class, shields, idempotency, dedup, email opens)
        ─drop─▶ dropped
    order event ─▶ orders (key project:order_id) ─▶ on_order ─▶ clean | dropped
    else ─▶ clean

An order event that takes an order id from a later confirmation
(streams.rules.orders) comes out clean *and* with a new ``duplicate_order``
record for each holder it displaces, rebuilt from the holder's events.orders
record kept in the order state and stamped after that holder's acceptance, so
the sink's latest decision per event id is the re-decision.

Any output too large for Kafka (over ``MAX_OUTPUT_BYTES``: a record published
straight to ``events.raw`` near the broker's limit grows by its derived fields)
goes to the DLQ instead (``too_large``, payload truncated): a send that fails on
every retry would otherwise stop the stream or lose the record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eventsieve.config import Settings
from eventsieve.kafka import Header
from schemas.codecs import decode_raw as _decode_raw
from schemas.codecs import (
    decode_raw_marked,
    encode_clean,
    encode_clean_spliced,
    encode_dlq,
    encode_dropped,
    encode_dropped_spliced,
    encode_raw,
)
from schemas.errors import DecodeError
from schemas.events import (
    RawEvent,
    bounded_dlq_payload,
    clean_event,
    copy_event_id,
    derived_event_id,
    dropped_event,
    now_ms,
)
from schemas.reasons import DropReason, Stage
from streams.decision import Dropped
from streams.enrich import Enriched, Enricher
from streams.errors import InvalidEvent
from streams.partitioning import partition_for
from streams.pipeline import Pipeline, Pipelines, build_pipelines
from streams.rules.orders import RECORD_LIMIT, Member, OrderUniqueness
from streams.state import State
from streams.useragents import UserAgents

# librdkafka refuses messages over message.max.bytes (1,000,000 by default);
# the key, headers and framing need the rest.
MAX_OUTPUT_BYTES = 950_000
# A dropped event's checks passed: none recorded (shared, never changed).
_NO_CHECKS: list[str] = []
# An input this large could not leave as a clean or dropped record (the derived
# fields add about a kilobyte): it goes to the DLQ before any rule sees it, so
# no state is written for an event that is not decided.
MAX_INPUT_BYTES = MAX_OUTPUT_BYTES - 16_384
# What a trimmed order record (one over orders.RECORD_LIMIT) keeps of each text.
TRIMMED_TEXT = 1_024


class Sink(StrEnum):
    """Where an output record goes."""

    CLEAN = "clean"
    DROPPED = "dropped"
    DLQ = "dlq"
    ORDERS = "orders"
    REKEY = "rekey"


# The per-record values below are read-only by convention, not ``frozen``: a
# frozen dataclass costs a call per field to build (see streams.facts.Facts),
# and several are built for every record.


@dataclass(slots=True)
class Record:
    """An input record as Kafka delivered it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: Sequence[Header] = ()


@dataclass(slots=True)
class Output:
    """A record to produce; ``partition`` None lets the partitioner choose by key."""

    sink: Sink
    key: bytes | None
    value: bytes
    partition: int | None = None


@dataclass(slots=True)
class Outcome:
    """What happened to one input record: its outputs, and the drop if any."""

    outputs: list[Output]
    sink: Sink
    event_id: str | None = None
    dropped: Dropped | None = None
    error: str | None = field(default=None)
    event_time: int | None = None  # set when state was consulted: the partition's clock


class Processor:
    """The stream's decisions for single records, given the partition's ``State``."""

    def __init__(
        self,
        settings: Settings,
        *,
        user_agents: UserAgents | None = None,
        clock: Callable[[], int] = now_ms,
        pipelines: Pipelines | None = None,
    ) -> None:
        self.partitions = settings.topics.partitions
        self.user_agents = user_agents or UserAgents(settings.streams.ua_cache_size)
        self.enricher = Enricher(settings, self.user_agents)
        self.pipelines = pipelines or build_pipelines(settings, self.user_agents)
        self.checks = list(self.pipelines.user.names)
        self.order_checks = [*self.checks, *self.pipelines.orders.names]
        self.orders = _order_rule(self.pipelines.orders)
        self.clock = clock  # only for decided_at, never inside a decision

    def on_raw(self, record: Record, state: State, *, check_partition: bool = True) -> Outcome:
        """Decide a raw record. ``check_partition`` is off for the re-key topic."""
        return self._bounded(self._on_raw(record, state, check_partition), record)

    def on_order(self, record: Record, state: State) -> Outcome:
        """Decide an order event (from ``events.orders``) on orderId uniqueness."""
        return self._bounded(self._on_order(record, state), record)

    def _bounded(self, outcome: Outcome, record: Record) -> Outcome:
        """The outcome, or a DLQ outcome when one of its outputs is too large for Kafka."""
        for out in outcome.outputs:
            if len(out.value) > MAX_OUTPUT_BYTES:
                size, limit = len(out.value), MAX_OUTPUT_BYTES
                error = f"the {out.sink} record would be {size} bytes (at most {limit})"
                return self._dlq(record, "too_large", error, Stage.DECODE, outcome.event_id)
        return outcome

    def _on_raw(self, record: Record, state: State, check_partition: bool) -> Outcome:
        enriched = self._decode_enrich(record, "raw" if check_partition else "rekey")
        if not isinstance(enriched, Enriched):
            return enriched
        key = enriched.key.encode()
        partition = partition_for(key, self.partitions)
        event_id = enriched.raw["event_id"]
        if check_partition and partition != record.partition:
            # Avro with the event id and visitor id filled in, so the re-keyed
            # copy is the same event whatever offset it gets.
            out = Output(Sink.REKEY, key, encode_raw(enriched.raw), partition)
            return Outcome([out], Sink.REKEY, event_id)
        dropped = self.pipelines.user.decide(enriched.facts, state)
        if dropped is not None:
            return self._dropped(enriched, record, dropped, key)
        order_id = enriched.facts.order_id
        if order_id:
            order_key = f"{enriched.facts.project}:{order_id}".encode()
            out = Output(
                Sink.ORDERS,
                order_key,
                encode_raw(enriched.raw),
                partition_for(order_key, self.partitions),
            )
            return Outcome([out], Sink.ORDERS, event_id, event_time=enriched.facts.time)
        return self._clean(enriched, record, key, self.checks)

    def _on_order(self, record: Record, state: State) -> Outcome:
        enriched = self._decode_enrich(record, "orders")
        if not isinstance(enriched, Enriched):
            return enriched
        key = enriched.key.encode()
        facts = enriched.facts
        decided_at = self.clock()
        kept = kept_order_record(record.value or b"", enriched)
        claim = self.orders.claim(facts, state, kept, decided_at)
        if claim.dropped is not None:
            return self._dropped(enriched, record, claim.dropped, key, decided_at)
        outcome = self._clean(enriched, record, key, self.order_checks, decided_at)
        if not claim.displaced:
            return outcome
        taken = Dropped(
            DropReason.DUPLICATE_ORDER,
            Stage.ORDERS,
            f"order taken by {facts.event_id} at {facts.time}",
        )
        outputs = list(outcome.outputs)
        for member in claim.displaced:
            out = self._redecided(member, record, taken, decided_at)
            if out is not None:
                outputs.append(out)
        return Outcome(outputs, Sink.CLEAN, outcome.event_id, event_time=facts.time)

    def _redecided(
        self, member: Member, record: Record, dropped: Dropped, now: int
    ) -> Output | None:
        """The new ``dropped`` record of a displaced order holder, rebuilt from its kept record.

        Stamped at least 1 ms after the holder's acceptance: the sink's version
        follows ``decided_at``, and a replay (one fixed clock) or a fast worker
        (one millisecond) would otherwise give both decisions the same version.
        None when the holder's record was not kept or no longer enriches (its
        project was removed from the configuration): its decision stands.
        """
        value = member.record
        if not value:
            return None
        held = Record(record.topic, record.partition, member.offset, record.key, value)
        enriched = self._decode_enrich(held, "orders")
        if not isinstance(enriched, Enriched):
            return None
        decided_at = max(now, member.decided_at + 1)
        outcome = self._dropped(enriched, held, dropped, enriched.key.encode(), decided_at)
        return outcome.outputs[0]

    def _decode_enrich(self, record: Record, source: str) -> Enriched | Outcome:
        if record.value is None:
            return self._dlq(record, "tombstone", "record has no value", Stage.DECODE)
        if len(record.value) > MAX_INPUT_BYTES:
            error = f"{len(record.value)} bytes: at most {MAX_INPUT_BYTES} can be carried on"
            return self._dlq(record, "too_large", error, Stage.DECODE)
        try:
            if record.value[:1] == b"\xc3":
                raw, marks = decode_raw_marked(record.value)
            else:
                raw, marks = decode_raw(record), None
        except DecodeError as exc:
            return self._dlq(record, exc.code, str(exc), Stage.DECODE)
        except Exception as exc:  # a poison record must never stop the stream
            return self._dlq(record, type(exc).__name__, str(exc), Stage.DECODE)
        try:
            return self.enricher.enrich(raw, source, record.offset, marks)
        except InvalidEvent as exc:
            return self._dlq(record, "invalid", str(exc), Stage.VALIDATE, raw["event_id"])
        except Exception as exc:
            return self._dlq(record, type(exc).__name__, str(exc), Stage.ENRICH, raw["event_id"])

    def _clean(
        self,
        e: Enriched,
        record: Record,
        key: bytes,
        checks: list[str],
        decided_at: int | None = None,
    ) -> Outcome:
        facts = e.facts
        fields = self._derived(e, record, self.clock() if decided_at is None else decided_at)
        fields["checks"] = checks
        if e.marks is not None and record.value is not None:
            value = encode_clean_spliced(record.value, e.marks, fields)
        else:
            value = encode_clean(clean_event(e.raw, **fields))
        out = Output(Sink.CLEAN, key, value)
        return Outcome([out], Sink.CLEAN, e.raw["event_id"], event_time=facts.time)

    def _dropped(
        self,
        e: Enriched,
        record: Record,
        dropped: Dropped,
        key: bytes,
        decided_at: int | None = None,
    ) -> Outcome:
        event_id = e.raw["event_id"]
        fields = self._derived(e, record, self.clock() if decided_at is None else decided_at)
        fields["reason"] = str(dropped.reason)
        fields["stage"] = str(dropped.stage)
        fields["detail"] = dropped.detail
        if dropped.reuses_id:
            event_id = copy_event_id(event_id, e.facts.time)
            value = encode_dropped(dropped_event(e.raw, event_id=event_id, **fields))
        elif e.marks is not None and record.value is not None:
            value = encode_dropped_spliced(record.value, e.marks, fields)
        else:
            value = encode_dropped(dropped_event(e.raw, **fields))
        out = Output(Sink.DROPPED, key, value)
        return Outcome([out], Sink.DROPPED, event_id, dropped, event_time=e.facts.time)

    @staticmethod
    def _derived(e: Enriched, record: Record, decided_at: int) -> dict[str, Any]:
        """The fields an output adds to its raw event, and the raw fields it restates.

        ``timestamp`` is the event time decided with (schemas: client time only
        within the tolerance), so a forged 2099 or 1971 is never stored as the
        event time; it is given only when it differs from the client's, and
        ``visitor_id`` only when there is one (enrichment may have filled it
        in): the splice copies the raw record's bytes of a field not given.
        """
        facts, agent, raw = e.facts, e.agent, e.raw
        fields = {
            "normalised_name": facts.name,
            "user_key": facts.user_key,
            "fingerprint": facts.fingerprint,
            "browser": agent.browser,
            "browser_version": agent.browser_version,
            "os": agent.os,
            "os_version": agent.os_version,
            "device": agent.device,
            "checks": _NO_CHECKS,
            "decided_at": decided_at,
            "source_topic": record.topic,
            "source_partition": record.partition,
            "source_offset": record.offset,
        }
        if facts.time != raw["timestamp"]:
            fields["timestamp"] = facts.time
        if raw["visitor_id"] is not None:
            fields["visitor_id"] = raw["visitor_id"]
        return fields

    def _dlq(
        self,
        record: Record,
        error_type: str,
        error: str,
        stage: Stage,
        event_id: str | None = None,
    ) -> Outcome:
        key, value, headers, cut = bounded_dlq_payload(
            record.key, record.value, list(record.headers)
        )
        if cut:
            error = f"{cut}: {error}"
        dlq = {
            "key": key,
            "value": value,
            "headers": [{"key": k, "value": v} for k, v in headers],
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "record_timestamp": record.timestamp,
            "error_type": error_type,
            "error": error[:2000],
            "stage": str(stage),
            "failed_at": self.clock(),
        }
        out = Output(Sink.DLQ, record.key, encode_dlq(dlq))
        return Outcome([out], Sink.DLQ, event_id, error=error_type)


def decode_raw(record: Record) -> RawEvent:
    """The record's RawEvent; a JSON record without an id gets one from its position."""
    value = record.value or b""
    if value[:1] == b"\xc3":  # Avro: event_id and received_at are required fields
        return _decode_raw(value)
    return _decode_raw(
        value,
        event_id=derived_event_id(record.topic, record.partition, record.offset),
        received_at=record.timestamp,
    )


def _order_rule(orders: Pipeline) -> OrderUniqueness:
    """The orders pipeline's one rule: ``on_order`` calls its ``claim`` (decision and
    displaced holders), which the ``Rule`` protocol has no room for."""
    match orders.rules:
        case [OrderUniqueness() as rule]:
            return rule
    raise ValueError("the orders pipeline must be exactly one OrderUniqueness rule")


def kept_order_record(value: bytes, enriched: Enriched) -> bytes:
    """What the order state keeps of an order event's record, to rebuild it if displaced.

    The record itself, unless it is over ``orders.RECORD_LIMIT`` (a publisher's
    oversized properties): then the event without its property maps and with
    every other text cut to ``TRIMMED_TEXT`` characters (ids, project, name and
    order id and the user's ids whole, so it enriches to the same keys). Its
    re-decision then lands in ClickHouse without those properties.
    """
    if len(value) <= RECORD_LIMIT:
        return value
    trimmed: dict[str, object] = dict(enriched.raw)
    for name, field_value in trimmed.items():
        if isinstance(field_value, str) and name not in _WHOLE:
            trimmed[name] = field_value[:TRIMMED_TEXT]
    trimmed.update(
        properties={},
        user_properties={},
        user_properties_once={},
        user_properties_unset=[],
        order_id=enriched.facts.order_id,
    )
    return encode_raw(trimmed)


# Fields a trimmed order record keeps whole: they identify the event and its order.
_WHOLE = frozenset(
    {
        *("event_id", "project", "name", "order_id", "credential", "kind", "source"),
        *("user_id", "email", "anonymous_id", "visitor_id"),  # the user key
    }
)
