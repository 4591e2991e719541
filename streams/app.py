"""The Faust app: three agents moving records between topics and the pure ``Processor``.

Agents and what they consume:

- ``decide_raw``  on ``events.raw``: decode, enrich, re-key misplaced records,
  run the per-user pipeline; state in the ``user-state`` table.
- ``decide_rekeyed`` on ``<app_id>-<raw>-rekey``: the same, for records that
  were on the wrong partition (never re-keyed twice).
- ``decide_orders`` on ``events.orders``: orderId uniqueness; state in the
  ``order-state`` table.

Delivery is at-least-once, in this order for every record:
1. the rules read and write the table (Faust buffers the changelog record);
2. the outputs are handed to the producer;
3. when Kafka has acknowledged *every* output (acks=all), the record is acked;
4. Faust commits an acked offset only after flushing the producer, so the
   changelog records of step 1 are durable before the offset moves.
A crash anywhere re-delivers the uncommitted records; the rules give a
re-delivered event the same decision (see streams/rules/windows.py), and every
output carries the event's stable ``event_id``. A failed send crashes the
worker instead of skipping the record. Faust's ``exactly_once`` is not used
(open bugs, see PITFALLS.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import faust
from faust.types import EventT

from eventsieve.config import Settings
from eventsieve.logging import get_logger
from eventsieve.services import kafka_bootstrap
from streams.metrics import StreamMetrics
from streams.processor import Outcome, Processor, Record, Sink
from streams.tables import TableState

log = get_logger(__name__)

USER_TABLE = "user-state"
ORDER_TABLE = "order-state"


def rekey_topic(settings: Settings) -> str:
    """The internal topic that misplaced raw records are re-keyed through."""
    return f"{settings.streams.app_id}-{settings.topics.raw}-rekey"


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
    processor = processor or Processor(settings)
    metrics = metrics or StreamMetrics()
    raw_topic = app.topic(topics.raw, key_serializer="raw", value_serializer="raw")
    rekeyed_topic = app.topic(rekey_topic(settings), key_serializer="raw", value_serializer="raw")
    orders_topic = app.topic(topics.orders, key_serializer="raw", value_serializer="raw")
    sinks = {
        Sink.CLEAN: app.topic(topics.clean, key_serializer="raw", value_serializer="raw"),
        Sink.DROPPED: app.topic(topics.dropped, key_serializer="raw", value_serializer="raw"),
        Sink.DLQ: app.topic(topics.dlq, key_serializer="raw", value_serializer="raw"),
        Sink.ORDERS: orders_topic,
        Sink.REKEY: rekeyed_topic,
    }
    user_state = TableState(
        app.Table(
            USER_TABLE,
            key_type=str,
            partitions=topics.partitions,
        )
    )
    order_state = TableState(
        app.Table(
            ORDER_TABLE,
            key_type=str,
            partitions=topics.partitions,
        )
    )
    shell = _Shell(app, sinks, metrics)

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

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        shell.forget(revoked)
        for state in (user_state, order_state):
            state.forget(tp.partition for tp in revoked)

    @app.timer(interval=5.0)
    async def _report_lag() -> None:
        shell.report_lag()
        metrics.state_keys.labels(USER_TABLE).set(len(user_state.table.data))
        metrics.state_keys.labels(ORDER_TABLE).set(len(order_state.table.data))

    app.eventsieve_metrics = metrics  # type: ignore[attr-defined]
    return app


class _Shell:
    """Moves one agent's records through the processor and acks after delivery."""

    def __init__(self, app: faust.App, sinks: dict[Sink, Any], metrics: StreamMetrics) -> None:
        self.app = app
        self.sinks = sinks
        self.metrics = metrics
        self.positions: dict[Any, int] = {}
        self._crashing: set[asyncio.Future[Any]] = set()
        self._pending: dict[Any, deque[list[Any]]] = {}

    async def run(
        self,
        stream: faust.StreamT,
        state: TableState,
        decide: Callable[[Record, TableState], Outcome],
    ) -> None:
        sinks = self.sinks
        count = self.metrics.count
        positions = self.positions
        async for event in stream.noack().events():
            message = event.message
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
                state.advance(outcome.event_time)
            futures = [
                await sinks[o.sink].send(key=o.key, value=o.value, partition=o.partition)
                for o in outcome.outputs
            ]
            self._ack_when_delivered(event, futures)
            count(outcome)
            positions[message.tp] = message.offset + 1
            if outcome.sink is Sink.DLQ:
                log.warning(
                    "record sent to dlq",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=outcome.error,
                )

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
        entry = [event, len(futures)]
        queue.append(entry)
        if not futures:
            self._release(tp, queue)
            return

        def delivered(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                error = "cancelled" if future.cancelled() else repr(future.exception())
                log.error("output not delivered; stopping so the record is re-decided", error=error)
                task = asyncio.ensure_future(self.app.crash(RuntimeError(error)))
                self._crashing.add(task)
                return
            entry[1] -= 1
            if entry[1] == 0:
                self._release(tp, queue)

        for future in futures:
            future.add_done_callback(delivered)

    def _release(self, tp: Any, queue: deque[list[Any]]) -> None:
        if self._pending.get(tp) is not queue:
            return  # partition revoked meanwhile: its new owner decides these again
        while queue and queue[0][1] == 0:
            queue.popleft()[0].ack()

    def forget(self, revoked: Any) -> None:
        """Drop the pending acks of revoked partitions (never ack them late)."""
        for tp in revoked:
            self._pending.pop(tp, None)
            self.positions.pop(tp, None)

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


def _headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((str(k), v) for k, v in items)
