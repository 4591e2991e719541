"""The one confluent-kafka Producer of a process, made awaitable.

``publish(records)`` produces a request's records and resolves when Kafka has
acknowledged *all* of them (``acks=all``, idempotent producer) or raises
:class:`PublishError` when any failed or the delivery timeout passed. A
single poll thread serves librdkafka's delivery reports; each finished
request is handed back to the event loop with ``call_soon_threadsafe``, one
hand-off per poll rather than one per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from eventsieve.logging import get_logger
from producers.errors import PublishError
from producers.records import Record

log = get_logger(__name__)

# How long one poll() blocks when idle; bounds how fast close() stops the thread.
_POLL_S = 0.05
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


class _Pending:
    """One publish() call: counts outstanding delivery reports of its records."""

    __slots__ = ("error", "future", "outstanding", "owner")

    def __init__(self, future: asyncio.Future[None], count: int, owner: Publisher) -> None:
        self.future = future
        self.outstanding = count
        self.error: KafkaError | None = None
        self.owner = owner

    def delivered(self, err: KafkaError | None, _msg: object) -> None:
        # Runs in the poll thread (inside poll()/flush()).
        if err is not None and self.error is None:
            self.error = err
        self.outstanding -= 1
        if self.outstanding == 0:
            # The poll thread swaps owner._done on hand-off, so look it up each time.
            self.owner._done.append(self)


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
        self._timeout = delivery_timeout_s
        self._retry_after = retry_after_s
        self._clock = clock
        # After an outage is seen, requests fail fast until then instead of each
        # waiting out the delivery timeout; after it, requests try Kafka again.
        self._down_until = 0.0
        self._producer = producer_factory(self._config)
        self._done: list[_Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False

    def _on_error(self, err: KafkaError) -> None:
        log.warning("kafka_client_error", error=str(err), code=err.code())

    async def start(self) -> None:
        """Start the poll thread, bound to the running loop."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def _hand_off(self) -> None:
        if self._done and self._loop is not None:
            batch, self._done = self._done, []
            # RuntimeError: the loop closed during shutdown; nobody waits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._settle, batch)

    def _poll_loop(self) -> None:
        while self._running:
            self._producer.poll(_POLL_S)
            self._hand_off()

    def _settle(self, batch: list[_Pending]) -> None:
        # Runs in the event loop.
        for pending in batch:
            if pending.future.done():
                continue  # timed out already
            if pending.error is None:
                self._down_until = 0.0
                pending.future.set_result(None)
                continue
            if pending.error.code() in _OUTAGE_CODES:
                self._down_until = self._clock() + self._retry_after
            pending.future.set_exception(
                PublishError(
                    f"Kafka rejected a record: {pending.error}",
                    self._retry_after,
                    kafka_error=pending.error,
                )
            )

    async def publish(self, records: Sequence[Record]) -> None:
        """Produce ``records``; return once all are acknowledged, else raise PublishError.

        While a recent outage is known (a delivery failed for want of a broker
        less than ``retry_after_s`` ago), fail at once rather than queue.
        """
        if not records:
            return
        if self._clock() < self._down_until:
            raise self._unavailable("Kafka was unreachable moments ago")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        pending = _Pending(future, len(records), self)
        deadline = time.monotonic() + self._timeout
        for rec in records:
            while True:
                try:
                    self._producer.produce(
                        self.topic, rec.value, rec.key, on_delivery=pending.delivered
                    )
                    break
                except BufferError:
                    if time.monotonic() > deadline:
                        raise self._unavailable("the producer queue stayed full") from None
                    await asyncio.sleep(_QUEUE_FULL_WAIT_S)
                except KafkaException as exc:
                    raise PublishError(
                        f"produce failed: {exc}", self._retry_after, exc.args[0]
                    ) from exc
        # librdkafka fails the records after message.timeout.ms; this timer is only
        # a backstop should a report never arrive (cheaper than wait_for per request).
        timer = loop.call_later(self._timeout + 1.0, self._expire, future)
        try:
            await future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[None]) -> None:
        if not future.done():
            self._down_until = self._clock() + self._retry_after
            future.set_exception(self._unavailable("no acknowledgement from Kafka in time"))

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
        """Stop polling, deliver what is queued (up to ``timeout``); return records left.

        The poll thread stops first so that only one thread serves delivery
        reports at a time (flush serves the rest).
        """
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        left = await asyncio.to_thread(self._producer.flush, timeout)
        self._hand_off()
        return left
