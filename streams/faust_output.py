"""The faust engine's writes to Kafka: outputs and table changelog records, on confluent-kafka.

Faust sends through aiokafka, in Python, record by record: measured on the
faust engine, its send path (``Topic.send``, the producer buffer, aiokafka's
accumulator and sender) took about half of the worker's CPU, more than the
decisions themselves. librdkafka does the same work in C. So Faust keeps
consuming, rebalancing and recovering tables, and this producer writes:

- each output, returning an asyncio future that settles when Kafka has
  acknowledged it (acks=all): the shell acks a record only then;
- each table change, in Faust's changelog format (JSON key and value, on the
  partition of the record being decided, a tombstone for a delete), so
  Faust's recovery reads it back unchanged. ``flush`` runs before every
  commit: the changelog records of the committed records are durable before
  their offsets are.

A failed delivery ends the worker (``on_failure``): what was not committed is
decided again after the restart, never skipped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from eventsieve.kafka import durable_producer_config


class FaustOutput:
    """One confluent-kafka producer with a thread serving its delivery reports."""

    def __init__(self, bootstrap: str, on_failure: Callable[[str], None]) -> None:
        self.producer = Producer(durable_producer_config(bootstrap))
        self.on_failure = on_failure
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller = threading.Thread(target=self._poll, name="faust-output", daemon=True)
        self._poller.start()

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None
    ) -> asyncio.Future[None]:
        """Produce one output; the future settles once Kafka acknowledged it."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, error)

        self._produce(topic, key, value, partition, delivered)
        return future

    def changelog(self, topic: str, partition: int, key: str, value: Any) -> None:
        """Write a table change (``value`` None: a delete) as Faust would."""
        self._produce(
            topic,
            orjson.dumps(key),
            None if value is None else orjson.dumps(value),
            partition,
            self._changelog_delivered,
        )

    def flush(self) -> None:
        """Wait until every record produced so far is acknowledged or has failed.

        Bounded by librdkafka's ``message.timeout.ms``: a record that times
        out fails, and a failed changelog record ends the worker.
        """
        self.producer.flush()

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        callback: Callable[[KafkaError | None, Message], None],
    ) -> None:
        while True:
            try:
                if partition is None:
                    self.producer.produce(topic, value, key, on_delivery=callback)
                else:
                    self.producer.produce(topic, value, key, partition, on_delivery=callback)
                return
            except BufferError:  # the local queue is full: wait for deliveries
                self.producer.poll(0.05)

    def _changelog_delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.on_failure(f"changelog record not delivered: {error}")

    def _poll(self) -> None:
        while True:
            self.producer.poll(0.1)


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(RuntimeError(f"output not delivered: {error}"))
