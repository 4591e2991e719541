"""The one confluent-kafka Producer of a process, made awaitable and all-or-nothing per request.

``publish(records)`` resolves when *every* record of the request is committed
to Kafka, or raises :class:`PublishError` (the endpoint's 503) having made
*none* of them visible. Requests are written in Kafka transactions, grouped:
a publishing thread takes whatever requests are waiting, produces them in
one transaction, waits for every delivery report and commits; if any record
failed, or the commit did, the transaction is aborted and each of its
requests fails. Readers of ``events.raw`` read committed records only (the
stream's consumers do), so a client that retries a request after a 503 is
never counted twice, even when part of a batch had already reached the
broker. (Without transactions, the records acknowledged before the failure
stayed, and the retry added them again.)

Several transactions at a time per process, each on its own transactional
producer and thread (``transactions``, default 2): while one waits for its
records' acknowledgements or its commit, the next takes the requests that
arrived meanwhile, so a request waits for a free producer, not for a whole
transaction before its own. Requests waiting at the same moment share one
transaction, so a burst costs one commit, not one per request. The first
producer is preferred: the others start only when it is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from eventsieve.kafka import durable_producer_config
from eventsieve.logging import get_logger
from producers.errors import PublishError
from producers.records import Record

log = get_logger(__name__)

# How long the publishing thread waits for a request when idle; bounds how fast close() stops it.
_IDLE_WAIT_S = 0.05
# An abort that cannot reach the broker gives up after this and starts a new
# producer (the broker aborts the old transaction itself on its timeout).
_ABORT_TIMEOUT_S = 3.0
# Back-off while librdkafka's local queue is full (BufferError).
_QUEUE_FULL_WAIT_S = 0.005


def producer_config(
    bootstrap: str,
    *,
    linger_ms: float = 20.0,
    compression: str = "lz4",
    delivery_timeout_s: float = 10.0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The adapter's durable producer (acks=all, idempotent, Kafka's Java partitioner,
    so a record lands on its user's partition at once), batched for throughput."""
    return durable_producer_config(
        bootstrap,
        **{
            "linger.ms": linger_ms,
            "compression.type": compression,
            # A record not acknowledged by then fails, and its request gets 503.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "client.id": "eventsieve-producer",
            **(extra or {}),
        },
    )


class _Request:
    """One publish() call waiting for its transaction: its records, its future, its outcome."""

    __slots__ = ("error", "future", "records")

    def __init__(self, records: Sequence[Record], future: asyncio.Future[None]) -> None:
        self.records = records
        self.future = future
        self.error: KafkaError | None = None

    def delivered(self, err: KafkaError | None, _msg: object) -> None:
        # Runs in the publishing thread (inside flush()).
        if err is not None and self.error is None:
            self.error = err


# Delivery failures that mean "Kafka is unreachable", as opposed to a bad record.
_OUTAGE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


class Publisher:
    """Publishes records to one topic; ``start()`` in the loop, ``close()`` at shutdown."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        *,
        delivery_timeout_s: float = 10.0,
        retry_after_s: int = 5,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        clock: Callable[[], float] = time.monotonic,
        transactions: int = 2,
    ) -> None:
        self.topic = topic
        self._config = dict(config)
        self._config.setdefault("error_cb", self._on_error)
        # Delivery reports of failed records only: a report is a Python call in
        # the publishing thread, which has to take the GIL from the event loop
        # for it (up to the 5 ms switch interval each time the loop is busy);
        # success is known from flush() leaving nothing outstanding.
        self._config.setdefault("delivery.report.only.error", True)
        # Every answer waits for a produce and a commit round trip: no Nagle delay
        # on those small requests (measured on the 2-core box with 64 concurrent
        # requests: flush p50 8.4-9.0 ms -> 7.1-7.2 ms, +10-40% requests/s).
        self._config.setdefault("socket.nagle.disable", True)
        # One id per producer, process and start (_slot_config): the transactions
        # only make each request all-or-nothing; there is no earlier instance to fence.
        # Above message.timeout.ms (librdkafka requires it), so a stuck
        # transaction is aborted by the broker only after its records timed out.
        self._config.setdefault("transaction.timeout.ms", int(delivery_timeout_s * 1000) + 30_000)
        self._timeout = delivery_timeout_s
        self._retry_after = retry_after_s
        self._clock = clock
        # After an outage is seen, requests fail fast until then instead of each
        # waiting out the delivery timeout; after it, requests try Kafka again.
        self._down_until = 0.0
        self._factory = producer_factory
        self._queue: list[_Request] = []
        self._lock = threading.Lock()
        self._slots = [_Slot(self, i, self._lock) for i in range(max(1, transactions))]
        # The first producer exists from the start (readiness probes use it).
        self._slots[0].producer = producer_factory(self._slot_config())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    @property
    def _producer(self) -> Producer:
        """The first producer: the one readiness probes ask."""
        producer = self._slots[0].producer
        assert producer is not None
        return producer

    def _slot_config(self) -> dict[str, Any]:
        """The configuration of a new producer: a transactional id of its own."""
        config = dict(self._config)
        config["transactional.id"] = _transactional_id()
        return config

    def _on_error(self, err: KafkaError) -> None:
        log.warning("kafka_client_error", error=str(err), code=err.code())

    async def start(self) -> None:
        """Start the publishing threads, bound to the running loop."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        for slot in self._slots:
            slot.start()

    async def publish(self, records: Sequence[Record]) -> None:
        """Publish ``records`` in a transaction; return once committed, else raise PublishError.

        While a recent outage is known (a transaction failed for want of a
        broker less than ``retry_after_s`` ago), fail at once rather than queue.
        """
        if not records:
            return
        if self._clock() < self._down_until:
            raise self._unavailable("Kafka was unreachable moments ago")
        if not self._running:
            raise self._unavailable("the endpoint is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queue.append(_Request(records, future))
            # The first idle producer takes it; if none is idle, the first to finish.
            for slot in self._slots:
                if not slot.busy:
                    slot.wakeup.notify()
                    break
        await future

    def _settle(self, batch: list[_Request], error: KafkaError | None) -> None:
        if self._loop is not None:
            # RuntimeError: the loop closed during shutdown; nobody waits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._resolve, batch, error)

    def _resolve(self, batch: list[_Request], error: KafkaError | None) -> None:
        # Runs in the event loop.
        if error is None:
            self._down_until = 0.0
        elif error.code() in _OUTAGE_CODES:
            self._down_until = self._clock() + self._retry_after
        for request in batch:
            if request.future.done():
                continue
            if error is None:
                request.future.set_result(None)
                continue
            own = request.error or error  # the request whose record failed gets its error
            request.future.set_exception(
                PublishError(
                    f"Kafka did not take the records (nothing was published): {own}",
                    self._retry_after,
                    kafka_error=own,
                )
            )

    def _unavailable(self, why: str) -> PublishError:
        return PublishError(f"Kafka unavailable: {why}", self._retry_after)

    async def ready(self, timeout: float = 2.0) -> bool:
        """Whether the broker answers and the topic has a leader for every partition."""

        def probe() -> bool:
            try:
                meta = self._producer.list_topics(self.topic, timeout=timeout)
            except KafkaException:
                return False
            topic = meta.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                return False
            return all(p.leader >= 0 for p in topic.partitions.values())

        return await asyncio.to_thread(probe)

    async def close(self, timeout: float = 10.0) -> int:
        """Publish what is queued (up to ``timeout``), stop the threads; return records left."""
        with self._lock:
            self._running = False
            for slot in self._slots:
                slot.wakeup.notify()

        def join() -> None:
            deadline = time.monotonic() + timeout
            for slot in self._slots:
                if slot.thread is not None:
                    slot.thread.join(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(join)
        with self._lock:
            left, self._queue = self._queue, []
        return sum(len(r.records) for r in left)


def _transactional_id() -> str:
    return f"eventsieve-endpoint-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class _Slot:
    """One transactional producer and the thread that runs its transactions.

    Slot ``i`` takes waiting requests only while every slot before it is busy
    (``publish`` wakes the first idle one), so under light load every
    transaction runs on the first producer and the others are never created.
    """

    def __init__(self, publisher: Publisher, index: int, lock: threading.Lock) -> None:
        self.publisher = publisher
        self.index = index
        self.wakeup = threading.Condition(lock)
        self.busy = False
        self.producer: Producer | None = None
        self.ready_for_transactions = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        name = f"kafka-publish-{self.index}"
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pub = self.publisher
        slots = pub._slots
        while True:
            with self.wakeup:
                while pub._running and not (
                    pub._queue and all(s.busy for s in slots[: self.index])
                ):
                    self.wakeup.wait(_IDLE_WAIT_S)
                if not pub._queue:
                    return  # closed, nothing left
                batch, pub._queue = pub._queue, []
                self.busy = True
            try:
                error = self._publish_batch(batch)
            finally:
                with self.wakeup:
                    # Idle again before the answers go out: a client's next request
                    # finds this producer free (the first one stays preferred).
                    self.busy = False
            pub._settle(batch, error)

    def _publish_batch(self, batch: list[_Request]) -> KafkaError | None:
        """One transaction for ``batch``: None when every request is committed, else the error."""
        pub = self.publisher
        if self.producer is None:
            self.producer = pub._factory(pub._slot_config())
        producer = self.producer
        timeout = pub._timeout
        deadline = time.monotonic() + timeout
        try:
            if not self.ready_for_transactions:
                producer.init_transactions(timeout)
                self.ready_for_transactions = True
            producer.begin_transaction()
            produce, topic = producer.produce, pub.topic
            for request in batch:
                for rec in request.records:
                    try:
                        produce(topic, rec.value, rec.key, on_delivery=request.delivered)
                    except BufferError:
                        self._produce_when_room(rec, request, deadline)
            left = producer.flush(max(0.0, deadline - time.monotonic()))
            failed = next((r.error for r in batch if r.error is not None), None)
            if left or failed is not None:
                return self._abort(failed or KafkaError(KafkaError._MSG_TIMED_OUT))
            producer.commit_transaction(max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            return self._abort(exc.args[0])
        except _QueueFull:
            return self._abort(KafkaError(KafkaError._QUEUE_FULL))
        return None

    def _produce_when_room(self, rec: Record, request: _Request, deadline: float) -> None:
        """Produce once librdkafka's local queue has room, or raise _QueueFull at ``deadline``."""
        assert self.producer is not None
        while True:
            self.producer.poll(_QUEUE_FULL_WAIT_S)
            try:
                self.producer.produce(
                    self.publisher.topic, rec.value, rec.key, on_delivery=request.delivered
                )
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise _QueueFull from None

    def _abort(self, error: KafkaError) -> KafkaError:
        """Abort the open transaction (if any) so none of its records becomes visible."""
        assert self.producer is not None
        try:
            self.producer.abort_transaction(min(self.publisher._timeout, _ABORT_TIMEOUT_S))
        except KafkaException as exc:
            reason = exc.args[0]
            if not (isinstance(reason, KafkaError) and reason.code() == KafkaError._STATE):
                # Could not abort (broker gone, or a fatal error): start over with a
                # new producer; the broker aborts the old transaction on its timeout.
                log.warning("transaction_abort_failed", error=str(reason))
                with contextlib.suppress(Exception):
                    self.producer.flush(0)
                self.producer = self.publisher._factory(self.publisher._slot_config())
                self.ready_for_transactions = False
        return error


class _QueueFull(Exception):
    """librdkafka's local queue stayed full until the request's deadline."""
