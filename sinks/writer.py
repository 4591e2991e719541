"""The sink's loop: ``events.clean`` + ``events.dropped`` → ClickHouse, in batches.

Commit order — the one place it is written down
-----------------------------------------------
A batch is made durable in this order, and each step starts only after the
previous one was acknowledged:

1. insert the batch's rows into ClickHouse, table by table (``events``, then
   ``user_updates``, ``user_property_updates`` and ``user_deletions``), each
   as one insert carrying an insert deduplication token;
2. flush the DLQ producer: the batch's records that could not become rows are
   acknowledged by Kafka on ``events.dlq``;
3. commit the batch's Kafka offsets, synchronously.

How a batch becomes rows (once per batch, kept across retries): the values
of each topic are decoded together into column arrays (``schemas.columns``)
and ``events`` is built from them as Native blocks (``sinks.blocks``,
``sinks.native``), no Python code per row. Records that are not plain
current-schema values, or that ``sinks.rows`` might refuse, go one by one
through ``schemas.codecs`` and ``sinks.rows``: a poison record goes to the
DLQ with its exact error, the rows of the others are sent in the same
inserts, serialised by clickhouse-driver.

When ClickHouse refuses the data itself (``ClickHouseRejectedError``: a type
or range error that no retry can cure), or a table's columns are not the
ones the blocks were made for (``ColumnsMismatchError``), step 1 writes the
batch as rows through ``sinks.rows``, in halves, and halves of halves, until
each refused record stands alone; those records go to the DLQ
(``clickhouse_rejected``) and everything else is written. A record too large
for a DLQ record is kept truncated (``sinks.dlq``).

A crash anywhere before 3 makes Kafka re-deliver the batch, and writing it
again is harmless: rows with the same ``event_id`` and ``version`` collapse in
the ReplacingMergeTree (and readers collapse them before the merge), profile
states are ``argMax`` (idempotent), and on modern servers the token drops an
identical retried block outright. A crash after 3 loses nothing.

When a batch is due (``sinks.batching.FlushPolicy``)
----------------------------------------------------
When it holds ``max_rows`` records, when its oldest record is
``max_interval_s`` old, or, under low load, as soon as the consumer has
nothing more to give — but not sooner than ``min_interval_s`` after the
previous flush: a lone event is in ClickHouse within milliseconds, a steady
stream is written in batches that grow with the load, and ClickHouse never
gets more than ``1 / min_interval_s`` inserts a second per table.

Outages
-------
When step 1 or 2 fails, every assigned partition is paused (no more records
are fetched: memory stays bounded by one batch), the loop waits with
exponential backoff while still polling (so the consumer keeps its group
membership and serves rebalances), and retries the same batch until it goes
through; while ClickHouse is down it is asked every second whether it is
back. The sink never exits because ClickHouse is down. When partitions are
revoked meanwhile, the batch is discarded: it was not committed, so the new
owner reads it again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from eventsieve.errors import ServiceUnavailableError
from eventsieve.logging import get_logger
from schemas import registry
from schemas.codecs import decode_clean, decode_dropped
from schemas.columns import DECODE_CHUNK, ColumnDecoder, decoder
from schemas.errors import DecodeError
from sinks.batching import Backoff, FlushPolicy, OffsetRanges, dedup_token
from sinks.blocks import Revenue, add_profiles, events_block, suspects
from sinks.clickhouse import ClickHouse
from sinks.dlq import DlqSender
from sinks.errors import (
    ClickHouseRejectedError,
    ClickHouseUnavailableError,
    ColumnsMismatchError,
    RowError,
)
from sinks.metrics import SinkMetrics
from sinks.native import NativeBlock
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
_TABLES = ("events", "user_updates", "user_property_updates", "user_deletions")


@dataclass(frozen=True)
class Route:
    """How records of one topic become rows.

    ``decode`` reads one record (any released schema version, or JSON);
    ``columns``, when given, reads a batch of current-version values at once.
    """

    decode: Decoder
    decision: Decision
    columns: ColumnDecoder | None = None


def routes_for(clean_topic: str, dropped_topic: str) -> dict[str, Route]:
    """The sink's two inputs: accepted events and dropped events."""
    return {
        clean_topic: Route(decode_clean, Decision.ACCEPTED, decoder(registry.CLEAN_EVENT)),
        dropped_topic: Route(decode_dropped, Decision.DROPPED, decoder(registry.DROPPED_EVENT)),
    }


@dataclass
class Prepared:
    """A batch turned into what is inserted: built once, kept across retries."""

    blocks: list[NativeBlock] = field(default_factory=list)
    # Rows built one by one: events of the records that took the strict path,
    # and every profile-table row.
    rows: Batch = field(default_factory=Batch)
    # The records whose rows are in the batch (the DLQ'd ones are not).
    records: list[Message] = field(default_factory=list)


class Pending:
    """One batch: its records per topic, their offsets, and how far it got."""

    def __init__(self, topics: list[str]) -> None:
        self.messages: dict[str, list[Message]] = {topic: [] for topic in topics}
        self.offsets = OffsetRanges()
        self.records = 0
        self.started_at: float | None = None
        self.prepared: Prepared | None = None
        self.done_tables: set[str] = set()


class SinkWriter:
    """Buffers records (``add``), flushes on size, age, idleness or shutdown (``flush``).

    With ``concurrent``, a due batch is prepared (decoded) here, then inserted
    by one background thread while this one consumes and prepares the next;
    its offsets are still committed here, and only after its inserts were
    acknowledged (steps 2 and 3 of the commit order). At most one batch is
    in flight: the next is handed over only after the previous one is
    committed, or retried here until it is.

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
        concurrent: bool = False,
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
        self.batch = Pending(list(self.routes))
        self.last_flush = float("-inf")
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="sink-insert") if concurrent else None
        )
        self._inflight: tuple[Pending, Future[None]] | None = None
        self._retrying: Pending | None = None
        self._revoked = False
        self._carry: list[Message] = []
        self._lag_at = 0.0
        self._consumed = {t: self.metrics.records_consumed.labels(t) for t in self.routes}
        self._mismatch_logged = False

    # The batch being filled.

    @property
    def records(self) -> int:
        return self.batch.records

    @property
    def offsets(self) -> OffsetRanges:
        return self.batch.offsets

    @property
    def pending(self) -> dict[str, list[Message]]:
        return self.batch.messages

    @property
    def started_at(self) -> float | None:
        return self.batch.started_at

    # -- Kafka group membership ------------------------------------------------

    def subscribe(self) -> None:
        self.consumer.subscribe(
            list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=_names(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Runs inside poll/consume when the group takes partitions away.

        The batch in flight is waited for, and every batch gets one quick
        attempt to be committed (so a healthy sink does not redo work); one
        that fails is dropped from memory, uncommitted: its records are
        re-read by whoever owns the partitions next.
        """
        log.info("partitions revoked", partitions=_names(partitions))
        batches = []
        if self._inflight is not None:
            batch, future = self._inflight
            self._inflight = None
            with contextlib.suppress(ServiceUnavailableError):
                future.result()  # if it failed, its remaining tables are tried below
            batches.append(batch)
        if self._retrying is not None:
            batches.append(self._retrying)
        batches.append(self.batch)
        for batch in batches:
            if batch.records:
                try:
                    self._write_and_commit(batch)
                except ServiceUnavailableError as exc:
                    log.warning("batch discarded on revoke, will be re-read", error=str(exc))
            self._discard(batch)
        self.dlq.forget()  # DLQ records of discarded batches are sent again when re-read
        self.batch = Pending(list(self.routes))
        self._revoked = True

    # -- the loop --------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume and write until ``stop`` is set; then flush once and close."""
        self.subscribe()
        try:
            while not stop.is_set():
                self.step()
            self._finish_inflight(wait=True, retry=False)
            if self.records:
                try:
                    self._write_and_commit(self.batch)
                except ServiceUnavailableError as exc:
                    log.warning("final flush failed; the batch will be re-read", error=str(exc))
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self.consumer.close()
            self.clickhouse.close()

    def step(self, max_wait_s: float = 0.2) -> None:
        """One round: take what the consumer has (up to the batch limit), flush if due.

        What is fetched already is taken without waiting; when there is
        nothing, the consumer is polled until a record comes or the batch
        falls due, at most ``max_wait_s``. The consumer is idle when it gave
        fewer records than asked for: everything fetched is in the batch.
        """
        self._finish_inflight(wait=False)
        carried, self._carry = self._carry, []
        self.add_all(carried)
        room = self.policy.max_rows - self.records
        idle = False
        if room > 0:
            chunk = min(room, _CONSUME_CHUNK)
            messages = self.consumer.consume(chunk, 0)
            if not messages:
                wait = self._time_to_due(max_wait_s)
                first = self.consumer.poll(wait) if wait > 0 else None
                if first is not None:
                    messages = [first, *self.consumer.consume(chunk - 1, 0)]
            self.add_all(messages)
            idle = len(messages) < chunk
        if self.policy.due(self.records, self.started_at, self.clock(), idle, self.last_flush):
            self._hand_over()
        self._update_lag()

    def _time_to_due(self, max_wait_s: float) -> float:
        """How long the consumer may wait for a record before the batch must be looked at."""
        wait = max_wait_s
        if self._inflight is not None:
            wait = min(wait, 0.01)  # come back soon to commit it
        if self.started_at is None:
            return wait
        now = self.clock()
        by_age = self.started_at + self.policy.max_interval_s - now
        by_gap = self.last_flush + self.policy.min_interval_s - now
        return max(0.0, min(wait, by_age, by_gap))

    def add(self, message: Message) -> None:
        """Buffer one consumed record."""
        self.add_all([message])

    def add_all(self, messages: list[Message]) -> None:
        """Buffer consumed records (rows are built when the batch is due, all at once)."""
        if not messages:
            return
        # The message class's own methods, mapped over the list: no Python
        # frame per record (this runs for every record consumed).
        kind = type(messages[0])
        errors = list(map(kind.error, messages))
        kept: list[Message] = messages
        if errors.count(None) != len(errors):
            kept = []
            for message, error in zip(messages, errors, strict=True):
                if error is None:
                    kept.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    continue
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    log.warning("consumer error", error=str(error))
        if not kept:
            return
        batch = self.batch
        topics = list(map(kind.topic, kept))
        if topics.count(topics[0]) == len(topics):
            groups = {topics[0] or "": kept}
        else:
            groups = {}
            for message, topic in zip(kept, topics, strict=True):
                groups.setdefault(topic or "", []).append(message)
        for topic, mine in groups.items():
            batch.messages[topic].extend(mine)
            self._consumed[topic].inc(len(mine))
            # A consumed record (no error) always has its partition and offset.
            partitions = cast(list[int], list(map(kind.partition, mine)))
            offsets = cast(list[int], list(map(kind.offset, mine)))
            batch.offsets.add_many(topic, partitions, offsets)
        batch.records += len(kept)
        if batch.started_at is None:
            batch.started_at = self.clock()

    def flush(self) -> bool:
        """Make everything consumed so far durable (see the module docstring).

        Retries until done or revoked; returns False when a batch was
        discarded because its partitions were revoked meanwhile.
        """
        if not self._finish_inflight(wait=True):
            return False
        if not self.records:
            return True
        batch, self.batch = self.batch, Pending(list(self.routes))
        return self._make_durable(batch)

    # -- internals ---------------------------------------------------------------

    def _hand_over(self) -> None:
        """The batch being filled is due: prepare it, then insert it (in the background
        when concurrent) once the previous one is committed."""
        batch, self.batch = self.batch, Pending(list(self.routes))
        self._prepare(batch)  # decoding overlaps the insert in flight
        if not self._finish_inflight(wait=True):
            self._discard(batch)  # revoked meanwhile: its records are re-read
            self.dlq.forget()
            return
        if self._executor is None:
            self._make_durable(batch)
            return
        self.last_flush = self.clock()
        self._inflight = (batch, self._executor.submit(self._insert, batch))

    def _finish_inflight(self, wait: bool, retry: bool = True) -> bool:
        """Commit the batch in flight once its inserts are done (retrying them if they
        failed). False when it was discarded because its partitions were revoked."""
        if self._inflight is None:
            return True
        batch, future = self._inflight
        if not wait and not future.done():
            return True
        self._inflight = None
        try:
            future.result()
            error = None
        except ServiceUnavailableError as exc:
            error = exc
        if not retry:
            if error is None:
                self._write_and_commit(batch)
            return error is None
        return self._make_durable(batch, error)

    def _make_durable(self, batch: Pending, error: ServiceUnavailableError | None = None) -> bool:
        """Steps 1-3 for ``batch`` (its done tables skipped), retried until done or revoked.

        ``error`` is how its background insert failed, if it did. Returns
        False when the batch was discarded because its partitions were revoked.
        """
        started = self.clock()
        paused: list[TopicPartition] = []
        self._revoked = False
        self._retrying = batch
        try:
            while True:
                try:
                    if error is not None:
                        failed, error = error, None
                        raise failed
                    self._write_and_commit(batch)
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
                        records=batch.records,
                        offsets=batch.offsets.describe(),
                    )
                    self._wait(delay, probe=clickhouse_down)
                    if self._revoked:
                        return False
        finally:
            self._retrying = None
            if paused and not self._revoked:
                self.consumer.resume(paused)
            self.metrics.paused.set(0)
            self.last_flush = self.clock()

    def _prepare(self, batch: Pending) -> Prepared:
        """The batch's blocks and rows (built once); its poison records sent to the DLQ."""
        if batch.prepared is not None:
            return batch.prepared
        prepared = Prepared()
        for topic, messages in batch.messages.items():
            if messages:
                self._prepare_topic(self.routes[topic], messages, prepared)
        batch.prepared = prepared
        return prepared

    def _prepare_topic(self, route: Route, messages: list[Message], prepared: Prepared) -> None:
        values: list[bytes | None] = list(map(type(messages[0]).value, messages))
        everything = range(len(values))
        columnar: range | list[int]
        strict: list[int]
        if route.columns is None:
            columnar, strict = range(0), list(everything)
        elif None in values:  # tombstones: to the DLQ by the strict path
            columnar = [i for i, v in enumerate(values) if v is not None]
            strict = [i for i, v in enumerate(values) if v is None]
        else:
            columnar, strict = everything, []
        if columnar:
            assert route.columns is not None
            odd_rows: list[int] = []
            for first in range(0, len(columnar), DECODE_CHUNK):
                chunk = columnar[first : first + DECODE_CHUNK]
                if isinstance(chunk, range):  # every record columnar: no list per record
                    chunk_values = values[chunk.start : chunk.stop]
                else:
                    chunk_values = [values[i] for i in chunk]
                batch = route.columns.decode(cast(list[bytes], chunk_values))  # no None here
                revenue = Revenue(batch)
                odd = suspects(batch, route.decision, revenue)
                if odd.any():
                    odd_rows += [chunk[i] for i in np.flatnonzero(odd).tolist()]
                    keep = ~odd
                    batch, revenue = batch.select(keep), revenue.select(keep)
                prepared.blocks.append(events_block(batch, route.decision, revenue))
                if route.decision is Decision.ACCEPTED:
                    add_profiles(batch, prepared.rows)
            if not odd_rows and isinstance(columnar, range):
                prepared.records += messages
            else:
                odd_set = set(odd_rows)
                prepared.records += [messages[i] for i in columnar if i not in odd_set]
            strict += odd_rows
        for i in sorted(strict):
            if self._add_rows(route, messages[i], values[i], prepared.rows):
                prepared.records.append(messages[i])

    def _add_rows(self, route: Route, message: Message, value: bytes | None, rows: Batch) -> bool:
        """One record through ``sinks.rows`` (its rows into ``rows``), or to the DLQ."""
        try:
            if value is None:
                raise RowError("empty_value", "record has no value")
            rows.add(route.decode(value), route.decision)
            return True
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
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                error_type=error_type,
                error=str(exc),
            )
            return False

    def _write_and_commit(self, batch: Pending) -> None:
        """Steps 1-3 of the commit order; tables already written in this batch are skipped."""
        self._insert(batch)
        self.failpoint("after_insert")
        self.dlq.flush()
        self._commit(batch.offsets)
        prepared = self._prepare(batch)
        event_rows = sum(b.rows for b in prepared.blocks) + prepared.rows.rows
        self.metrics.batch_rows.observe(event_rows)
        log.debug("batch committed", rows=event_rows, offsets=batch.offsets.describe())
        self._discard(batch)

    def _insert(self, batch: Pending) -> None:
        """Step 1: every table of the batch not written yet. Runs in the background
        thread when concurrent; raises ``ServiceUnavailableError`` to be retried."""
        prepared = self._prepare(batch)
        rows = prepared.rows
        try:
            for table, columns in rows.tables:
                if table in batch.done_tables:
                    continue
                token = dedup_token(batch.offsets, table)
                written = 0
                if table == "events" and any(b.rows for b in prepared.blocks):
                    python = columns.data if columns.rows else None
                    written = self.clickhouse.insert_blocks(table, prepared.blocks, token, python)
                elif columns.rows:
                    written = self.clickhouse.insert_columns(
                        table, columns.names, columns.data, token
                    )
                batch.done_tables.add(table)
                if written:
                    self.metrics.rows_written.labels(table).inc(written)
        except (ClickHouseRejectedError, ColumnsMismatchError) as exc:
            self._log_fallback(exc)
            self._write_isolating_rejects(batch, prepared.records)

    def _log_fallback(self, exc: Exception) -> None:
        if isinstance(exc, ColumnsMismatchError):
            # Every batch takes this path while the table differs: say it once.
            level = log.debug if self._mismatch_logged else log.warning
            self._mismatch_logged = True
            level("table differs from the sink's columns; writing rows instead", error=str(exc))
        else:
            log.warning("ClickHouse rejected the batch; isolating the records", error=str(exc))

    def _write_isolating_rejects(self, batch: Pending, records: list[Message]) -> None:
        """Insert the batch as rows in halves, and halves of halves, until every record
        ClickHouse rejects stands alone; those go to the DLQ (``clickhouse_rejected``),
        the rest is written.

        Re-inserting rows that an earlier attempt already wrote is harmless (rows
        collapse by event id and version; profile states are idempotent), so
        each part is written whole. ``ClickHouseUnavailableError`` propagates:
        the batch is then retried from the start, like any other outage.
        """
        parts = [records] if records else []
        while parts:
            part = parts.pop()
            rows = Batch()
            for message in part:
                route = self.routes[message.topic() or ""]
                rows.add(route.decode(message.value() or b""), route.decision)
            first = part[0]
            suffix = f"{first.topic()}/{first.partition()}/{first.offset()}+{len(part)}"
            try:
                for table, columns in rows.tables:
                    if not columns.rows:
                        continue
                    token = f"{dedup_token(batch.offsets, table)}-{suffix}"
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
        batch.done_tables.update(_TABLES)

    def _commit(self, ranges: OffsetRanges) -> None:
        offsets = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in ranges.commit_offsets().items()
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

    def _discard(self, batch: Pending) -> None:
        for messages in batch.messages.values():
            messages.clear()
        batch.prepared = None
        batch.offsets = OffsetRanges()
        batch.records = 0
        batch.started_at = None
        batch.done_tables.clear()

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
