"""Batch bookkeeping, pure: which offsets a batch covers, when it is due, how long to back off.

Nothing here touches Kafka or ClickHouse, so the decisions of the writer loop
(flush now? commit what? wait how long?) are tested with plain values and a
given clock.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import numpy as np

from eventsieve.kafka import TP


@dataclass
class OffsetRanges:
    """The first and last offset of each (topic, partition) in a batch."""

    ranges: dict[TP, tuple[int, int]] = field(default_factory=dict)

    def add(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        current = self.ranges.get(key)
        if current is None:
            self.ranges[key] = (offset, offset)
        else:
            self.ranges[key] = (min(current[0], offset), max(current[1], offset))

    def add_many(self, topic: str, partitions: list[int], offsets: list[int]) -> None:
        """``add`` for many records of one topic at once."""
        if not offsets:
            return
        if partitions.count(partitions[0]) == len(partitions):
            groups = [(partitions[0], min(offsets), max(offsets))]
        else:
            parts = np.asarray(partitions)
            offs = np.asarray(offsets)
            groups = [
                (int(p), int(offs[parts == p].min()), int(offs[parts == p].max()))
                for p in np.unique(parts)
            ]
        for partition, first, last in groups:
            self.add(topic, partition, first)
            self.add(topic, partition, last)

    def commit_offsets(self) -> dict[TP, int]:
        """Kafka commit positions: the offset after the last one of each partition."""
        return {key: last + 1 for key, (_, last) in self.ranges.items()}

    def clear(self) -> None:
        self.ranges.clear()

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def describe(self) -> str:
        """``topic[p]first-last,...`` in a stable order (logs and tokens)."""
        return ",".join(
            f"{topic}[{partition}]{first}-{last}"
            for (topic, partition), (first, last) in sorted(self.ranges.items())
        )


def dedup_token(ranges: OffsetRanges, table: str) -> str:
    """The insert deduplication token of a batch for one table.

    Derived from the batch's (topic, partition, offset range) set: a batch
    retried after a lost acknowledgement carries the same token and the
    server drops the second copy. After a crash the batch boundaries differ,
    so the token cannot help then; the ReplacingMergeTree collapse on
    ``event_id`` is what keeps counts exact in that case.
    """
    digest = hashlib.sha256(f"{table}|{ranges.describe()}".encode()).hexdigest()
    return f"eventsieve-{digest[:40]}"


# Under low load, batches are flushed at most this many times per
# max_interval_s: with the default 1 s, ten inserts a second per table at
# most, which ClickHouse merges without trouble, while a lone event waits
# 100 ms at most for the previous insert.
_IDLE_FLUSHES_PER_INTERVAL = 10


@dataclass(frozen=True)
class FlushPolicy:
    """When a batch is due: enough records, its oldest record waited long enough, or
    (adaptive, for freshness under low load) the consumer has nothing more right now
    and the previous flush is at least ``min_interval_s`` ago.

    Under load the consumer is never idle, so batches fill up to ``max_rows``
    or ``max_interval_s``; as the load falls they shrink down to a single
    record, written as soon as it arrives.
    """

    max_rows: int
    max_interval_s: float
    min_interval_s: float = -1.0  # negative: max_interval_s / _IDLE_FLUSHES_PER_INTERVAL

    def __post_init__(self) -> None:
        if self.min_interval_s < 0:
            gap = self.max_interval_s / _IDLE_FLUSHES_PER_INTERVAL
            object.__setattr__(self, "min_interval_s", gap)

    def due(
        self,
        rows: int,
        started_at: float | None,
        now: float,
        idle: bool = False,
        last_flush: float = float("-inf"),
    ) -> bool:
        if rows == 0 or started_at is None:
            return False
        # Deadlines as sums, the way the writer computes how long it may wait.
        if rows >= self.max_rows or now >= started_at + self.max_interval_s:
            return True
        return idle and now >= last_flush + self.min_interval_s


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; ``reset()`` after a success."""

    initial_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The wait before the next attempt: uniform in [ceiling/2, ceiling]."""
        ceiling: float = min(self.max_s, self.initial_s * (2**self.attempt))
        self.attempt += 1
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0
