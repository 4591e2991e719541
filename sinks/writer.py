"""The sink's loop: ``events.clean`` + ``events.dropped`` → ClickHouse, in batches.

Commit order — the one place it is written down
-----------------------------------------------
A batch is made durable in this order, and each step starts only after the
previous one was acknowledged:

1. insert the batch's rows into ClickHouse, table by table (``events``, then
   ``user_updates``, ``user_property_updates`` and ``user_deletions``), each
   as one columnar block carrying an insert deduplication token;
2. flush the DLQ producer: the batch's records that could not become rows are
   acknowledged by Kafka on ``events.dlq``;
3. commit the batch's Kafka offsets, synchronously.

When ClickHouse refuses the data itself (``ClickHouseRejectedError``: a type
or range error that no retry can cure), step 1 inserts the batch in halves,
and halves of halves, until each refused record stands alone; those records
go to the DLQ (``clickhouse_rejected``) and everything else is written. A
record too large for a DLQ record is kept truncated (``sinks.dlq``).

A crash anywhere before 3 makes Kafka re-deliver the batch, and writing it
again is harmless: rows with the same ``event_id`` and ``version`` collapse in
the ReplacingMergeTree (and readers collapse them before the merge), profile
states are ``argMax`` (idempotent), and on modern servers the token drops an
identical retried block outright. A crash after 3 loses nothing.

Outages
-------
When step 1 or 2 fails, every assigned partition is paused (no more records
are fetched: memory stays bounded by one batch), the loop waits with
exponential backoff while still polling (so the consumer keeps its group
membership and serves rebalances), and retries the same batch until it goes
through. The sink never exits because ClickHouse is down. When partitions are
revoked meanwhile, the batch is discarded: it was not committed, so the new
owner reads it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from eventsieve.errors import ServiceUnavailableError
from eventsieve.logging import get_logger
from schemas.codecs import decode_clean, decode_dropped
from schemas.errors import DecodeError
from sinks.batching import Backoff, FlushPolicy, OffsetRanges, dedup_token
from sinks.clickhouse import ClickHouse
from sinks.dlq import DlqSender
from sinks.errors import ClickHouseRejectedError, ClickHouseUnavailableError, RowError
from sinks.metrics import SinkMetrics
from sinks.rows import Batch, Decision

log = get_logger(__name__)

Decoder = Callable[[bytes], Mapping[str, Any]]
Clock = Callable[[], float]

# Records taken from the consumer per call: large enough to amortise the call,
# small enough that the flush deadline is checked often.
_CONSUME_CHUNK = 5_000
# How often the lag gauge asks the broker for partition end offsets.
_LAG_INTERVAL_S = 10.0
# While ClickHouse is down, how often it is asked whether it is back (a
# connection attempt and SELECT 1: cheap for both sides).
_PROBE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Route:
    """How records of one topic become rows."""

    decode: Decoder
    decision: Decision


def routes_for(clean_topic: str, dropped_topic: str) -> dict[str, Route]:
    """The sink's two inputs: accepted events and dropped events."""
    return {
        clean_topic: Route(decode_clean, Decision.ACCEPTED),
        dropped_topic: Route(decode_dropped, Decision.DROPPED),
    }


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """The sink's consumer: manual commits only, from the earliest offset of a new group."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        # The stream writes in transactions: only committed decisions are rows
        # (librdkafka's default, said here so no override can lose it).
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Eager assignment: a revoke takes every partition back, so a discarded
        # batch is simply re-read from the committed offsets after the assign.
        "partition.assignment.strategy": "range",
        # A crashed sink's partitions move on after this long without heartbeats;
        # librdkafka's 45 s default would stall a restarted sink that long.
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        # Bound the prefetch queue (per consumer) so a paused sink holds little.
        "queued.max.messages.kbytes": 65_536,
        "fetch.max.bytes": 52_428_800,
        **overrides,
    }


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """The DLQ producer: acknowledged by all replicas, no duplicates from retries."""
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        **overrides,
    }


class SinkWriter:
    """Buffers rows (``add``), flushes on size, interval or shutdown (``flush``).

    The clock is a parameter so tests never wait for an interval to pass.
    """

    def __init__(
        self,
        consumer: Consumer,
        clickhouse: ClickHouse,
        dlq: DlqSender,
        routes: Mapping[str, Route],
        policy: FlushPolicy,
        backoff: Backoff,
        metrics: SinkMetrics | None = None,
        clock: Clock = time.monotonic,
        failpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.clickhouse = clickhouse
        self.dlq = dlq
        self.routes = dict(routes)
        self.policy = policy
        self.backoff = backoff
        self.metrics = metrics or SinkMetrics()
        self.clock = clock
        # Called with a step name between the steps of the commit order; crash
        # tests use it to stop the process at an exact point (see service.py).
        self.failpoint = failpoint or (lambda _step: None)
        self.batch = Batch()
        self.offsets = OffsetRanges()
        self.records = 0
        self.started_at: float | None = None
        self._done_tables: set[str] = set()
        # The records whose rows are in the batch, in order: what a batch
        # ClickHouse rejects is split along (see _write_isolating_rejects).
        self._row_records: list[Message] = []
        self._revoked = False
        self._carry: list[Message] = []
        self._lag_at = 0.0
        self._consumed = {t: self.metrics.records_consumed.labels(t) for t in self.routes}

    # -- Kafka group membership ------------------------------------------------

    def subscribe(self) -> None:
        self.consumer.subscribe(
            list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=_names(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Runs inside poll/consume when the group takes partitions away.

        One quick flush attempt (so a healthy sink does not redo work); if it
        fails the batch is dropped from memory, uncommitted: its records are
        re-read by whoever owns the partitions next.
        """
        log.info("partitions revoked", partitions=_names(partitions))
        if self.records:
            try:
                self._write_and_commit()
            except ServiceUnavailableError as exc:
                log.warning("batch discarded on revoke, will be re-read", error=str(exc))
        self._discard()
        self._revoked = True

    # -- the loop --------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume and write until ``stop`` is set; then flush once and close."""
        self.subscribe()
        try:
            while not stop.is_set():
                self.step()
            if self.records:
                try:
                    self._write_and_commit()
                except ServiceUnavailableError as exc:
                    log.warning("final flush failed; the batch will be re-read", error=str(exc))
        finally:
            self.consumer.close()
            self.clickhouse.close()

    def step(self, max_wait_s: float = 0.2) -> None:
        """One round: take what the consumer has (up to the batch limit), flush if due."""
        carried, self._carry = self._carry, []
        for message in carried:
            self.add(message)
        room = self.policy.max_rows - self.batch.rows
        if room > 0:
            timeout = max_wait_s
            if self.started_at is not None:
                left = self.started_at + self.policy.max_interval_s - self.clock()
                timeout = max(0.0, min(timeout, left))
            for message in self.consumer.consume(min(room, _CONSUME_CHUNK), timeout):
                self.add(message)
        if self.policy.due(self.records, self.started_at, self.clock()):
            self.flush()
        self._update_lag()

    def add(self, message: Message) -> None:
        """Buffer one consumed record as rows, or as a DLQ record if it is not a valid event."""
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise KafkaException(error)
            log.warning("consumer error", error=str(error))
            return
        topic = message.topic() or ""
        route = self.routes[topic]
        self._consumed[topic].inc()
        try:
            value = message.value()
            if value is None:
                raise RowError("empty_value", "record has no value")
            self.batch.add(route.decode(value), route.decision)
            self._row_records.append(message)
        except Exception as exc:
            # Any failure to turn this one record into rows is the record's
            # problem, not the batch's: a crash here would crash-loop on it.
            if isinstance(exc, DecodeError | RowError):
                error_type = getattr(exc, "error_type", None) or _snake(type(exc).__name__)
            else:
                error_type = "unexpected_" + _snake(type(exc).__name__)
                log.error("record could not be converted", exc_info=True)
            self.dlq.send(message, error_type, f"{type(exc).__name__}: {exc}")
            self.metrics.dlq_records.labels(error_type).inc()
            log.warning(
                "record to DLQ",
                topic=topic,
                partition=message.partition(),
                offset=message.offset(),
                error_type=error_type,
                error=str(exc),
            )
        self.offsets.add(topic, message.partition() or 0, message.offset() or 0)
        self.records += 1
        if self.started_at is None:
            self.started_at = self.clock()

    def flush(self) -> bool:
        """Make the batch durable (see the module docstring); retry until done or revoked.

        Returns True when the batch was written and committed, False when it
        was discarded because its partitions were revoked meanwhile.
        """
        if not self.records:
            return True
        started = self.clock()
        paused: list[TopicPartition] = []
        self._revoked = False
        try:
            while True:
                try:
                    self._write_and_commit()
                    self.backoff.reset()
                    self.metrics.flush_seconds.observe(self.clock() - started)
                    return True
                except ServiceUnavailableError as exc:
                    clickhouse_down = isinstance(exc, ClickHouseUnavailableError)
                    self.metrics.retries.inc()
                    if not paused:
                        paused = self.consumer.assignment()
                        self.consumer.pause(paused)
                        self.metrics.paused.set(1)
                    delay = self.backoff.next_delay()
                    log.warning(
                        "flush failed, retrying",
                        error=str(exc),
                        retry_in_s=round(delay, 2),
                        rows=self.batch.rows,
                        offsets=self.offsets.describe(),
                    )
                    self._wait(delay, probe=clickhouse_down)
                    if self._revoked:
                        return False
        finally:
            if paused and not self._revoked:
                self.consumer.resume(paused)
            self.metrics.paused.set(0)

    # -- internals ---------------------------------------------------------------

    def _write_and_commit(self) -> None:
        """Steps 1-3 of the commit order; tables already written in this batch are skipped."""
        try:
            for table, columns in self.batch.tables:
                if table in self._done_tables or not columns.rows:
                    continue
                token = dedup_token(self.offsets, table)
                self.clickhouse.insert_columns(table, columns.names, columns.data, token)
                self._done_tables.add(table)
                self.metrics.rows_written.labels(table).inc(columns.rows)
        except ClickHouseRejectedError as exc:
            log.warning("ClickHouse rejected the batch; isolating the records", error=str(exc))
            self._write_isolating_rejects()
        self.failpoint("after_insert")
        self.dlq.flush()
        self._commit()
        self.metrics.batch_rows.observe(self.batch.rows)
        log.debug("batch committed", rows=self.batch.rows, offsets=self.offsets.describe())
        self._discard()

    def _write_isolating_rejects(self) -> None:
        """Insert the batch in halves, and halves of halves, until every record ClickHouse
        rejects stands alone; those go to the DLQ (``clickhouse_rejected``), the rest
        is written.

        Re-inserting rows that an earlier attempt already wrote is harmless (rows
        collapse by event id and version; profile states are idempotent), so
        each part is written whole. ``ClickHouseUnavailableError`` propagates:
        the batch is then retried from the start, like any other outage.
        """
        parts = [self._row_records]
        while parts:
            part = parts.pop()
            batch = Batch()
            for message in part:
                route = self.routes[message.topic() or ""]
                batch.add(route.decode(message.value() or b""), route.decision)
            first = part[0]
            suffix = f"{first.topic()}/{first.partition()}/{first.offset()}+{len(part)}"
            try:
                for table, columns in batch.tables:
                    token = f"{dedup_token(self.offsets, table)}-{suffix}"
                    self.clickhouse.insert_columns(table, columns.names, columns.data, token)
                    self.metrics.rows_written.labels(table).inc(columns.rows)
            except ClickHouseRejectedError as exc:
                if len(part) > 1:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                    continue
                self.dlq.send(first, "clickhouse_rejected", str(exc))
                self.metrics.dlq_records.labels("clickhouse_rejected").inc()
                log.warning(
                    "record to DLQ",
                    topic=first.topic(),
                    partition=first.partition(),
                    offset=first.offset(),
                    error_type="clickhouse_rejected",
                    error=str(exc),
                )
        self._done_tables.update(table for table, _ in self.batch.tables)

    def _commit(self) -> None:
        offsets = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in self.offsets.commit_offsets().items()
        ]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in ClickHouse; an uncommitted batch is only re-read
            # (and collapses), so this is not worth stopping for.
            self.metrics.commits_failed.inc()
            log.warning("offset commit failed; the batch may be re-read", error=str(exc))

    def _wait(self, seconds: float, probe: bool = False) -> None:
        """Sleep by polling the (paused) consumer: heartbeats and rebalances go on.

        With ``probe``, ClickHouse is asked ``SELECT 1`` every
        ``_PROBE_INTERVAL_S`` meanwhile, and the wait ends as soon as it
        answers: after an outage the sink writes again within about that
        interval, however far the backoff has grown.
        """
        deadline = self.clock() + seconds
        next_probe = self.clock() + _PROBE_INTERVAL_S
        while (left := deadline - self.clock()) > 0 and not self._revoked:
            wait = min(left, 0.5, max(0.0, next_probe - self.clock())) if probe else min(left, 0.5)
            message = self.consumer.poll(wait)
            if message is not None:
                # Fetched before the pause took effect: keep it for the next batch.
                self._carry.append(message)
            if probe and self.clock() >= next_probe:
                if self.clickhouse.ping():
                    log.info("ClickHouse answers again; retrying now")
                    return
                next_probe = self.clock() + _PROBE_INTERVAL_S

    def _discard(self) -> None:
        self.batch.clear()
        self._row_records.clear()
        self.offsets.clear()
        self.dlq.forget()
        self.records = 0
        self.started_at = None
        self._done_tables.clear()

    def _update_lag(self) -> None:
        """Refresh the lag gauge from local state only: never a broker round trip.

        The partition ends come from the last fetch responses (``cached=True``)
        and the positions from the consumer itself, so this costs microseconds.
        """
        now = self.clock()
        if now - self._lag_at < _LAG_INTERVAL_S:
            return
        self._lag_at = now
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(high - tp.offset)
        except KafkaException as exc:
            log.debug("lag not measured", error=str(exc))


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]


def _snake(name: str) -> str:
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return out.removesuffix("_error")
