"""Records the sink cannot turn into rows, sent to ``events.dlq`` with the error.

``dlq_record`` is pure; ``DlqSender`` is the thin producer around it. Its
``flush()`` returns only when every record sent so far is acknowledged by
Kafka, so the writer commits a batch's offsets only after the batch's poison
records are durable in the DLQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from eventsieve.kafka import consumed_headers
from schemas.codecs import encode_dlq
from schemas.events import MAX_DLQ_PAYLOAD_BYTES, DlqRecord, bounded_dlq_payload, now_ms
from schemas.reasons import Stage
from sinks.errors import DlqUnavailableError

MAX_PAYLOAD_BYTES = MAX_DLQ_PAYLOAD_BYTES


def dlq_record(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    error_type: str,
    error: str,
    failed_at: int,
) -> DlqRecord:
    """The DlqRecord of one consumed record that failed in the sink.

    Key, value and headers are bounded (``schemas.events.bounded_dlq_payload``),
    so a DLQ record is never too large for Kafka.
    """
    key, value, kept_headers, cut = bounded_dlq_payload(key, value, list(headers or ()))
    if cut:
        error = f"{cut}: {error}"
    return {
        "key": key,
        "value": value,
        "headers": [{"key": k, "value": v} for k, v in kept_headers],
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "record_timestamp": timestamp_ms,
        "error_type": error_type,
        "error": error[:2_000],
        "stage": Stage.SINK.value,
        "failed_at": failed_at,
    }


def record_of(message: Message, error_type: str, error: str) -> DlqRecord:
    """The DlqRecord of a confluent-kafka message."""
    kind, ts = message.timestamp()
    return dlq_record(
        key=message.key(),
        value=message.value(),
        headers=consumed_headers(message),
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp_ms=ts if kind != 0 else None,
        error_type=error_type,
        error=error,
        failed_at=now_ms(),
    )


class DlqSender:
    """Produces DLQ records (acks=all, idempotent) and waits for them on ``flush``."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._pending: list[tuple[bytes | None, bytes]] = []
        self._failed: list[tuple[bytes | None, bytes]] = []

    def send(self, message: Message, error_type: str, error: str) -> None:
        payload = (message.key(), encode_dlq(record_of(message, error_type, error)))
        self._pending.append(payload)
        self._produce(payload)

    def _produce(self, payload: tuple[bytes | None, bytes]) -> None:
        def delivered(err: KafkaError | None, _msg: Any, payload: Any = payload) -> None:
            if err is not None:
                self._failed.append(payload)

        self.producer.produce(self.topic, key=payload[0], value=payload[1], on_delivery=delivered)
        self.producer.poll(0)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record sent is acknowledged; re-send failed ones; raise if not."""
        if not self._pending:
            return
        remaining = self.producer.flush(timeout)
        if self._failed:
            failed, self._failed = self._failed, []
            for payload in failed:
                self._produce(payload)
            raise DlqUnavailableError(f"{len(failed)} DLQ record(s) not acknowledged; re-sent")
        if remaining:
            raise DlqUnavailableError(f"{remaining} DLQ record(s) still unacknowledged")
        self._pending.clear()

    def forget(self) -> None:
        """Drop the bookkeeping of a discarded batch (its records are re-read and re-sent)."""
        self._pending.clear()
        self._failed.clear()

    @property
    def pending(self) -> int:
        return len(self._pending)
