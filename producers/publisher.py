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

One transaction at a time per process: requests that arrive meanwhile wait
for the next one, so a burst costs one commit, not one per request.
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
    """librdkafka settings: durable (acks=all, idempotent) and batched for throughput."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        # Kafka's Java (murmur2) partitioner, as the stream's Faust/aiokafka
        # consumers assume: a record lands on its user's partition at once
        # instead of taking the stream's re-key detour (librdkafka's default
        # partitioner, consistent_random, would place ~5 of 6 records elsewhere).
        "partitioner": "murmur2_random",
        "linger.ms": linger_ms,
        "compression.type": compression,
        # A record not acknowledged by then fails, and its request gets 503.
        "message.timeout.ms": int(delivery_timeout_s * 1000),
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "client.id": "eventsieve-producer",
    }
    config.update(extra or {})
    return config


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
    ) -> None:
        self.topic = topic
        self._config = dict(config)
        self._config.setdefault("error_cb", self._on_error)
        # One id per process and start: the transactions only make each request
        # all-or-nothing; there is no earlier instance to fence.
        self._config.setdefault("transactional.id", _transactional_id())
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
        self._producer = producer_factory(self._config)
        self._ready_for_transactions = False
        self._queue: list[_Request] = []
        self._wakeup = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._left = 0

    def _on_error(self, err: KafkaError) -> None:
        log.warning("kafka_client_error", error=str(err), code=err.code())

    async def start(self) -> None:
        """Start the publishing thread, bound to the running loop."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="kafka-publish", daemon=True)
        self._thread.start()

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
        with self._wakeup:
            self._queue.append(_Request(records, future))
            self._wakeup.notify()
        await future

    # -- the publishing thread -------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and self._running:
                    self._wakeup.wait(_IDLE_WAIT_S)
                batch, self._queue = self._queue, []
            if not batch:
                return  # closed, nothing left
            self._publish_batch(batch)

    def _publish_batch(self, batch: list[_Request]) -> None:
        """One transaction for ``batch``: every request committed, or every one failed."""
        producer = self._producer
        deadline = time.monotonic() + self._timeout
        try:
            if not self._ready_for_transactions:
                producer.init_transactions(self._timeout)
                self._ready_for_transactions = True
            producer.begin_transaction()
            for request in batch:
                for rec in request.records:
                    self._produce(rec, request, deadline)
            left = producer.flush(max(0.0, deadline - time.monotonic()))
            failed = next((r.error for r in batch if r.error is not None), None)
            if left or failed is not None:
                self._abort(batch, failed or KafkaError(KafkaError._MSG_TIMED_OUT))
                return
            producer.commit_transaction(max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            self._abort(batch, exc.args[0])
            return
        except _QueueFull:
            self._abort(batch, KafkaError(KafkaError._QUEUE_FULL))
            return
        self._settle(batch, None)

    def _produce(self, rec: Record, request: _Request, deadline: float) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, rec.value, rec.key, on_delivery=request.delivered
                )
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise _QueueFull from None
                self._producer.poll(_QUEUE_FULL_WAIT_S)

    def _abort(self, batch: list[_Request], error: KafkaError) -> None:
        """Abort the open transaction (if any) so none of ``batch`` becomes visible; fail them."""
        try:
            self._producer.abort_transaction(min(self._timeout, _ABORT_TIMEOUT_S))
        except KafkaException as exc:
            reason = exc.args[0]
            if not (isinstance(reason, KafkaError) and reason.code() == KafkaError._STATE):
                # Could not abort (broker gone, or a fatal error): start over with a
                # new producer; the broker aborts the old transaction on its timeout.
                log.warning("transaction_abort_failed", error=str(reason))
                self._restart_producer()
        self._settle(batch, error)

    def _restart_producer(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.flush(0)
        self._config["transactional.id"] = _transactional_id()
        self._producer = self._factory(self._config)
        self._ready_for_transactions = False

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
        """Publish what is queued (up to ``timeout``), stop the thread; return records left."""
        with self._wakeup:
            self._running = False
            self._wakeup.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)
        with self._wakeup:
            left, self._queue = self._queue, []
        return sum(len(r.records) for r in left)


def _transactional_id() -> str:
    return f"eventsieve-endpoint-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class _QueueFull(Exception):
    """librdkafka's local queue stayed full until the request's deadline."""
