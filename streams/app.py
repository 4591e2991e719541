"""The Faust app: three agents moving records between topics and the pure ``Processor``.

Agents and what they consume:

- ``decide_raw``  on ``events.raw``: decode, enrich, re-key misplaced records,
  run the per-user pipeline; state in the ``user-state`` table.
- ``decide_rekeyed`` on ``<app_id>-<raw>-rekey``: the same, for records that
  were on the wrong partition (never re-keyed twice).
- ``decide_orders`` on ``events.orders``: orderId uniqueness; state in the
  ``order-state`` table.

Delivery is at-least-once, in this order for every record:
1. the rules read and write the table's store; each change is produced to
   the table's changelog (``streams.faust_output``: confluent-kafka, not
   Faust's own sends, which cost more CPU than the decisions);
2. the outputs are produced the same way;
3. when Kafka has acknowledged *every* output (acks=all), the record is acked;
4. an acked offset is committed only after the producer is flushed, so the
   changelog records of step 1 are durable before the offset moves.
A crash anywhere re-delivers the uncommitted records; the rules give a
re-delivered event the same decision (see streams/rules/windows.py), and every
output carries the event's stable ``event_id``. A failed send crashes the
worker instead of skipping the record. Faust's ``exactly_once`` is not used
(open bugs, see PITFALLS.md).

The committed offset is ours, not Faust's: per partition, the shell decides
records strictly in offset order starting at the group's committed offset
(``_Frontier``), and the consumer commits only the offset below which every
record was decided and delivered (``_GuardedConsumer``). faust-streaming
0.15.3 can hand the agents a partition with a hole after a rebalance or
restart (see streams/README.md, "Delivery"); a hole is never skipped: the
partition is sought back to the first undecided offset, unless the broker
itself confirms that no record lies in the hole (transaction markers).
"""

from __future__ import annotations

import asyncio
import enum
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn, cast

import faust
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, EventT

from eventsieve.config import Settings
from eventsieve.kafka import reader_config, record_offset
from eventsieve.logging import get_logger
from eventsieve.services import kafka_bootstrap
from schemas.topology import ORDER_STORE, USER_STORE, rekey_topic
from streams.faust_output import FaustOutput
from streams.metrics import StreamMetrics
from streams.processor import Outcome, Processor, Record, Sink
from streams.tables import TableState

log = get_logger(__name__)

USER_TABLE = USER_STORE
ORDER_TABLE = ORDER_STORE


def broker_url(bootstrap: str) -> str:
    """Faust's broker URL for a ``host:port[,host:port]`` bootstrap list."""
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()
    )


def build_app(
    settings: Settings,
    *,
    processor: Processor | None = None,
    metrics: StreamMetrics | None = None,
) -> faust.App:
    """A configured Faust app with its agents and tables (nothing is started)."""
    s = settings.streams
    topics = settings.topics
    store = "memory://" if s.store == "memory" else "rocksdb://"
    app = faust.App(
        s.app_id,
        broker=broker_url(kafka_bootstrap(settings)),
        store=store,
        datadir=str(s.data_dir),
        autodiscover=False,
        processing_guarantee="at_least_once",
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
        producer_acks=-1,
        # Commit often: fewer records to re-decide after a crash.
        broker_commit_every=s.batch_size,
        broker_commit_interval=1.0,
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        stream_buffer_maxsize=8192,
        table_cleanup_interval=3600.0,
        broker_session_timeout=s.session_timeout_s,
        # Kafka wants heartbeats well inside the session timeout.
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
    )
    frontiers: dict[TP, _Frontier] = {}
    output = FaustOutput(kafka_bootstrap(settings), on_failure=_delivery_failed)
    # faust declares the transport's Consumer a ClassVar; this app's transport only.
    app.transport.Consumer = type(  # type: ignore[misc]
        "GuardedConsumer", (_GuardedConsumer,), {"frontiers": frontiers, "output": output}
    )
    processor = processor or Processor(settings)
    metrics = metrics or StreamMetrics()
    raw_topic = app.topic(topics.raw, key_serializer="raw", value_serializer="raw")
    rekeyed_topic = app.topic(rekey_topic(settings), key_serializer="raw", value_serializer="raw")
    orders_topic = app.topic(topics.orders, key_serializer="raw", value_serializer="raw")
    sinks = {
        Sink.CLEAN: topics.clean,
        Sink.DROPPED: topics.dropped,
        Sink.DLQ: topics.dlq,
        Sink.ORDERS: topics.orders,
        Sink.REKEY: rekey_topic(settings),
    }
    user_table = app.Table(USER_TABLE, key_type=str, partitions=topics.partitions)
    order_table = app.Table(ORDER_TABLE, key_type=str, partitions=topics.partitions)
    user_state = TableState(user_table.data, partial(output.changelog, _changelog(user_table)))
    order_state = TableState(order_table.data, partial(output.changelog, _changelog(order_table)))
    shell = _Shell(app, sinks, output, metrics, frontiers, kafka_bootstrap(settings))

    @app.agent(raw_topic, name="decide_raw")
    async def decide_raw(stream: faust.StreamT) -> None:
        await shell.run(stream, user_state, processor.on_raw)

    @app.agent(rekeyed_topic, name="decide_rekeyed")
    async def decide_rekeyed(stream: faust.StreamT) -> None:
        await shell.run(
            stream, user_state, lambda r, st: processor.on_raw(r, st, check_partition=False)
        )

    @app.agent(orders_topic, name="decide_orders")
    async def decide_orders(stream: faust.StreamT) -> None:
        await shell.run(stream, order_state, processor.on_order)

    # faust calls a handler (sender, revoked, signal=...); its type wants *args.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        shell.forget(revoked)
        for state in (user_state, order_state):
            state.forget(tp.partition for tp in revoked)

    @app.timer(interval=2.0)
    async def _watch_stalls() -> None:
        await shell.watch_stalls(frozenset({topics.raw, rekey_topic(settings), topics.orders}))

    @app.timer(interval=5.0)
    async def _report_lag() -> None:
        shell.report_lag()
        metrics.state_keys.labels(USER_TABLE).set(len(user_state.data))
        metrics.state_keys.labels(ORDER_TABLE).set(len(order_state.data))

    app.eventsieve_metrics = metrics  # type: ignore[attr-defined]
    return app


def _changelog(table: Any) -> str:
    """The name of a Faust table's changelog topic (Faust's naming, so its recovery reads it)."""
    return str(table.changelog_topic.get_topic_name())


def _delivery_failed(error: str) -> None:
    """A changelog record was not delivered: stop before its offset can be committed."""
    log.error("changelog record not delivered; stopping so the record is re-decided", error=error)
    _exit_worker()


class Admit(enum.Enum):
    """What the shell does with a delivered record (``_Frontier.admit``)."""

    DECIDE = "decide"  # the next record of the partition
    SKIP = "skip"  # already decided in this assignment (a re-delivery)
    HOLE = "hole"  # records before it were never delivered: do not decide it yet


@dataclass
class _Frontier:
    """One partition's decided prefix.

    ``next`` is the first offset not decided yet; ``committable`` the offset
    below which every record is decided *and* its outputs acknowledged (what
    may be committed); ``committed`` what the group has committed. A record
    above ``next`` is decided only when the broker has confirmed that no
    record lies in between: ``empty`` holds the offsets it confirmed hold
    none (transaction markers, aborted records). A raw partition the endpoint
    writes one request at a time has a marker after nearly every record, so
    one confirmation covers every offset up to the end of the partition.
    """

    next: int
    committable: int
    committed: int
    empty: set[int] = field(default_factory=set)

    def admit(self, offset: int) -> Admit:
        if offset < self.next:
            return Admit.SKIP
        if offset > self.next:
            gap = range(self.next, offset)
            if not all(o in self.empty for o in gap):
                return Admit.HOLE
            self.empty.difference_update(gap)
        self.next = offset + 1
        return Admit.DECIDE


class _NoReadOffset(dict[Any, Any]):
    """Faust's per-partition read offset, made inert.

    faust-streaming drops every fetched record below its read offset and
    counts jumps above it as gaps that are committed as if processed. The read
    offset is also written by in-flight fetches after a seek, so it can run
    ahead of records never processed (they are then dropped, and their offsets
    committed as a gap). Reading ``None`` turns both off: every fetched record
    reaches the shell, which skips re-deliveries by offset (``_Frontier``).
    """

    def __getitem__(self, key: Any) -> None:
        return None


class _ReadCommittedThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, reading committed records only.

    Faust reads ``read_uncommitted`` unless it runs its own transactions. The
    endpoint writes ``events.raw`` in transactions and aborts those of a
    request answered 503, which the client then retries: reading the aborted
    records would decide that request twice.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by start(), which comes later
        return consumer


class _GuardedConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, committing only the shell's decided prefix."""

    frontiers: dict[TP, _Frontier]
    output: FaustOutput

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadOffset()

    def _new_consumer_thread(self) -> _ReadCommittedThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``: the shell's, never Faust's acked-plus-gaps."""
        frontier = self.frontiers.get(tp)
        acked = self._acked[tp]
        if frontier is None:
            return None
        done = frontier.committable
        if acked:  # Faust's own bookkeeping of acks, kept bounded
            acked[:] = [o for o in acked if o >= done]
            self._acked_index[tp].intersection_update(acked)
        return done

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        """Flush the changelog records, commit, then tell the frontiers (streams/tables.py).

        Every changelog record produced so far (``FaustOutput``) is
        acknowledged before the offsets move: a crash after the commit must
        find the state changes of the committed records. Faust's own buffer
        is drained to empty too (its flush gives up after 0.1 s without a
        send), in case anything still sends through it.
        """
        await asyncio.get_running_loop().run_in_executor(None, self.output.flush)
        buffer = self.app.producer.buffer
        while buffer.size:
            await buffer.flush()
        done = await super()._commit_offsets(offsets, start_new_transaction)
        if done:
            assigned = self.assignment()
            for tp, offset in offsets.items():
                frontier = self.frontiers.get(tp)
                if frontier is not None and tp in assigned:
                    frontier.committed = max(frontier.committed, offset)
        return bool(done)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Never count offsets as processed because they were not seen."""

    async def committed_offset(self, tp: TP) -> int | None:
        """The group's committed offset for ``tp`` as the broker has it now."""
        thread = self._thread
        offset = await thread.call_thread(thread._ensure_consumer().committed, tp)
        return int(offset) if offset is not None else None


class _Shell:
    """Moves one agent's records through the processor and acks after delivery."""

    def __init__(
        self,
        app: faust.App,
        sinks: dict[Sink, str],
        output: FaustOutput,
        metrics: StreamMetrics,
        frontiers: dict[TP, _Frontier],
        bootstrap: str,
    ) -> None:
        self.app = app
        self.sinks = sinks
        self.output = output
        self.metrics = metrics
        self.frontiers = frontiers
        self.bootstrap = bootstrap
        self.positions: dict[Any, int] = {}
        self._pending: dict[Any, deque[list[Any]]] = {}
        self._holes: dict[TP, asyncio.Future[Any]] = {}
        self._stalled: dict[TP, tuple[int, int]] = {}
        self._watched: dict[TP, tuple[int, int]] = {}

    async def run(
        self,
        stream: faust.StreamT,
        state: TableState,
        decide: Callable[[Record, TableState], Outcome],
    ) -> None:
        """Decide the agent's records; an unexpected error stops the whole worker.

        Faust would restart the agent in place and keep the process up (and
        ``app.crash`` only marks services crashed): a worker that looks
        healthy while one of its agents fails on every record. Its graceful
        stop would wait for the failed record's ack forever. So the process
        exits at once with status 1, like the kafka engine on an error: the
        supervisor or orchestrator restarts it, and what was not committed is
        decided again (at-least-once).
        """
        try:
            await self._decide_all(stream, state, decide)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("decision loop failed; stopping the worker", error=repr(exc))
            _exit_worker()

    async def _decide_all(
        self,
        stream: faust.StreamT,
        state: TableState,
        decide: Callable[[Record, TableState], Outcome],
    ) -> None:
        sinks = self.sinks
        send = self.output.send
        count = self.metrics.count
        positions = self.positions
        frontiers = self.frontiers
        # StreamT declares no noack(); an agent's stream is a faust.Stream, which has it.
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            message = event.message
            tp = message.tp
            frontier = frontiers.get(tp)
            if frontier is None:
                frontier = await self._start(tp)
                if frontier is None:  # revoked meanwhile
                    continue
            verdict = frontier.admit(message.offset)
            if verdict is not Admit.DECIDE:
                if verdict is Admit.HOLE:
                    self._on_hole(tp, frontier, message.offset)
                event.ack()  # Faust's bookkeeping only: commits follow the frontier
                continue
            record = Record(
                message.topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                int(message.timestamp * 1000) if message.timestamp else None,
                _headers(message.headers),
            )
            outcome = decide(record, state.at(message.partition))
            if outcome.event_time is not None:
                state.advance(outcome.event_time, tp, message.offset)
            state.expire(tp, frontier.committed)
            futures = [send(sinks[o.sink], o.key, o.value, o.partition) for o in outcome.outputs]
            self._ack_when_delivered(event, futures)
            count(outcome)
            positions[tp] = message.offset + 1
            if outcome.sink is Sink.DLQ:
                log.warning(
                    "record sent to dlq",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=outcome.error,
                )

    async def _start(self, tp: TP) -> _Frontier | None:
        """The frontier of a newly assigned partition: the group's committed offset.

        Taken from the broker, not from what Faust delivers first: that first
        record may lie beyond records Faust lost on the way (the hole this
        guards against). Without a committed offset the partition starts at
        its earliest offset (``consumer_auto_offset_reset="earliest"``).
        """
        consumer = cast(_GuardedConsumer, self.app.consumer)
        start = await consumer.committed_offset(tp)
        if start is None:
            start = (await consumer.earliest_offsets(tp)).get(tp) or 0
        if tp not in consumer.assignment():
            return None
        frontier = self.frontiers.get(tp)
        if frontier is None:
            frontier = self.frontiers[tp] = _Frontier(start, start, start)
            log.info("partition start", topic=tp.topic, partition=tp.partition, offset=start)
        return frontier

    async def watch_stalls(self, topics: frozenset[str]) -> None:
        """Runs every 2 s: find partitions that stopped short of their records.

        A hole shows when a later record arrives; records lost inside Faust at
        the *end* of a partition leave nothing later to show it. A partition
        whose frontier stayed below the broker's high watermark for two ticks,
        with no output pending, is resolved like a hole (once per frontier and
        high watermark, so an empty tail such as a transaction marker is
        probed once, not every tick).
        """
        consumer = self.app.consumer
        for tp in list(consumer.assignment()):
            if tp.topic not in topics or tp in self._holes:
                continue
            try:
                highwater = consumer.highwater(tp)
            except AssertionError:  # revoked meanwhile
                continue
            if not highwater:
                continue
            frontier = self.frontiers.get(tp) or await self._start(tp)
            if frontier is None or frontier.next >= highwater or self._pending.get(tp):
                self._stalled.pop(tp, None)
                continue
            state = (frontier.next, highwater)
            if self._stalled.get(tp) != state:
                self._stalled[tp] = state  # first tick without progress
                continue
            if self._watched.get(tp) == state:
                continue  # already resolved once at this frontier and high watermark
            self._watched[tp] = state
            self._on_hole(tp, frontier, highwater)

    def _on_hole(self, tp: TP, frontier: _Frontier, offset: int) -> None:
        """Resolve a hole before ``offset`` once: confirm it is empty, or seek back."""
        if tp in self._holes:
            return
        task = asyncio.ensure_future(self._resolve_hole(tp, frontier, frontier.next, offset))
        self._holes[tp] = task
        task.add_done_callback(lambda _: self._holes.pop(tp, None))

    async def _resolve_hole(self, tp: TP, frontier: _Frontier, start: int, seen: int) -> None:
        """Learn from the broker which offsets from ``start`` hold records, then seek back.

        Offsets without a record (markers, aborted records) become the
        frontier's ``empty`` ones. Records at or after ``start`` that were
        skipped meanwhile (every record past a hole is) come again from the
        seek; records before ``seen`` that exist were never delivered at all.
        """
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, _record_offsets, self.bootstrap, tp, start)
        if self.frontiers.get(tp) is not frontier or frontier.next != start:
            return  # revoked, or the hole filled meanwhile
        if found is None:
            return  # the broker did not answer: the stall watch asks again
        present, end = found
        frontier.empty.update(o for o in range(start, end) if o not in present)
        lost = sum(1 for o in present if o < seen)
        if lost:
            log.warning(
                "records were not delivered; seeking back",
                topic=tp.topic,
                partition=tp.partition,
                offset=start,
                delivered=seen,
                lost=lost,
            )
        try:
            await self.app.consumer.seek_wait({tp: start})
        except Exception as exc:  # revoked meanwhile: the next owner starts at the commit
            log.info("seek back failed", topic=tp.topic, partition=tp.partition, error=repr(exc))

    def _ack_when_delivered(self, event: EventT, futures: list[asyncio.Future[Any]]) -> None:
        """Ack ``event`` once all its outputs are acknowledged, in offset order per partition.

        Outputs of different records complete out of order (they go to
        different topics and partitions), but Faust's committable-offset logic
        mishandles out-of-order acks (it can commit past an unacked offset
        when the group has no committed offset yet, and allows a one-offset
        hole after one). Releasing acks strictly in offset order keeps it on
        its safe path.
        """
        tp = event.message.tp
        queue = self._pending.get(tp)
        if queue is None:
            queue = self._pending[tp] = deque()
        entry: list[Any] = [event, len(futures)]  # the event, its outputs not yet delivered
        queue.append(entry)
        if not futures:
            self._release(tp, queue)
            return

        def delivered(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                error = "cancelled" if future.cancelled() else repr(future.exception())
                log.error("output not delivered; stopping so the record is re-decided", error=error)
                _exit_worker()
            entry[1] -= 1
            if entry[1] == 0:
                self._release(tp, queue)

        for future in futures:
            future.add_done_callback(delivered)

    def _release(self, tp: Any, queue: deque[list[Any]]) -> None:
        if self._pending.get(tp) is not queue:
            return  # partition revoked meanwhile: its new owner decides these again
        frontier = self.frontiers.get(tp)
        while queue and queue[0][1] == 0:
            event = queue.popleft()[0]
            event.ack()
            if frontier is not None:
                frontier.committable = event.message.offset + 1

    def forget(self, revoked: Any) -> None:
        """Drop the pending acks of revoked partitions (never ack them late)."""
        for tp in revoked:
            self._pending.pop(tp, None)
            self.positions.pop(tp, None)
            self.frontiers.pop(tp, None)
            self._stalled.pop(tp, None)
            self._watched.pop(tp, None)

    def report_lag(self) -> None:
        """Set the lag gauge for the partitions this worker holds now (revoked ones are gone)."""
        consumer = self.app.consumer
        assigned = consumer.assignment()
        for tp in [tp for tp in self.positions if tp not in assigned]:
            del self.positions[tp]
        for tp, position in list(self.positions.items()):
            try:
                highwater = consumer.highwater(tp)
            except AssertionError:  # revoked between the two lines: next time
                continue
            if highwater is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - position)
                )


def _exit_worker() -> NoReturn:
    """Exit the process now with status 1 (see ``_Shell.run``): the restart re-decides."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _record_offsets(
    bootstrap: str, tp: TP, start: int, timeout: float = 10.0
) -> tuple[set[int], int] | None:
    """The offsets of ``tp``'s committed records from ``start``, and where they end now.

    Read with a throw-away consumer, outside Faust, so the answer is the
    broker's: what a fetch from ``start`` really returns. Isolation matches
    the worker's consumer (read_committed: aborted records are not records).
    ``None`` when the broker did not get to the end within ``timeout``.
    """
    consumer = KafkaConsumer(
        reader_config(
            bootstrap,
            f"eventsieve-probe-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True},
        )
    )
    present: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
        while time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                error = message.error()
                if error is None:
                    present.add(record_offset(message))
                elif error.code() == KafkaError._PARTITION_EOF:
                    return present, record_offset(message)
                else:
                    return None
        return None
    finally:
        consumer.close()


def _headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((str(k), v) for k, v in items)
