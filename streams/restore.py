"""Bringing local stores up to their changelog partitions (kafka engine, on assignment).

Each store is read from the offset after the one it records (everything, if
it records none) to the end of what is committed: a read_committed reader
stops at the last stable offset, so the records of a transaction still open
(a worker that died mid-batch) are not applied; that transaction is aborted
later and its records never count. All partitions of one assignment are read
by one consumer at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from eventsieve.kafka import (
    KafkaFailure,
    kafka_failure,
    record_offset,
    record_partition,
    record_topic,
    restore_consumer_config,
)
from streams.store import Store

# Apply restored records in chunks: bounded memory, few store writes.
CHUNK = 20_000


def restore(
    bootstrap: str, stores: Mapping[tuple[str, int], Store], timeout: float = 600.0
) -> dict[tuple[str, int], int]:
    """Read each ``(changelog topic, partition)`` into its store; return records read per store."""
    read = dict.fromkeys(stores, 0)
    if not stores:
        return read
    consumer = Consumer(restore_consumer_config(bootstrap))
    pending: dict[tuple[str, int], dict[bytes, bytes | None]] = {tp: {} for tp in stores}
    last: dict[tuple[str, int], int] = {}
    open_ = set(stores)
    try:
        consumer.assign(
            [
                TopicPartition(
                    topic, partition, OFFSET_BEGINNING if (o := s.offset()) is None else o + 1
                )
                for (topic, partition), s in stores.items()
            ]
        )
        deadline = time.monotonic() + timeout
        while open_:
            if time.monotonic() > deadline:
                raise KafkaFailure(f"restoring {sorted(open_)} took more than {timeout:.0f}s")
            for message in consumer.consume(10_000, 0.5):
                tp = (record_topic(message), record_partition(message))
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_.discard(tp)
                        continue
                    raise KafkaFailure(f"restoring {tp}", error)
                key = message.key()
                if key is None:
                    continue
                changes = pending[tp]
                changes[key] = message.value()
                last[tp] = record_offset(message)
                read[tp] += 1
                if len(changes) >= CHUNK:
                    stores[tp].write(changes, last[tp])
                    changes.clear()
        for tp, changes in pending.items():
            if changes:
                stores[tp].write(changes, last[tp])
    except KafkaException as exc:
        raise kafka_failure("restoring state from the changelog", exc) from exc
    finally:
        consumer.close()
    return read
