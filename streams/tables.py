"""``State`` over a Faust table: the adapter between the rules and changelogged storage.

Each stored value is ``[expires_at, partition, value]``. The partition is kept
so that, after a restart or a rebalance, the expiry index of a partition can
be rebuilt from the restored table alone. Pruning is driven by the newest
event time seen on the partition (its watermark), in the agent, for the
partition of the event being processed: Faust writes every table change to
the changelog partition of the *current event*, so deletes land where the
key lives.

Memory cost per tracked key (memory store, CPython 3.11, measured by
bench/bench_streams.py ``--state-cost``): about 0.5 KiB — a 34-64 character key,
the three-element list, one or two ``[time, event_id]`` anchors, and the
dict slot. RocksDB keeps the JSON encoding (~100 bytes) on disk instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.state import ExpiryIndex, Value


class TableState:
    """The ``State`` protocol over one Faust table, for one partition at a time."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.partition = 0
        self._indexes: dict[int, ExpiryIndex] = {}
        self._watermarks: dict[int, int] = {}

    def at(self, partition: int) -> TableState:
        """Point at ``partition`` (the partition of the event about to be decided)."""
        self.partition = partition
        return self

    def get(self, key: str) -> Value | None:
        entry = self.table.get(key)
        return None if entry is None else entry[2]

    def put(self, key: str, value: Value, expires_at: int) -> None:
        self.table[key] = [expires_at, self.partition, value]
        self._index().push(expires_at, key)

    def advance(self, event_time: int) -> int:
        """Raise the partition's watermark to ``event_time``; delete what expired before it."""
        watermark = self._watermarks.get(self.partition, 0)
        if event_time <= watermark:
            return 0
        self._watermarks[self.partition] = event_time
        removed = 0
        table = self.table
        for expires_at, key in self._index().pop_expired(event_time):
            entry = table.get(key)
            if entry is not None and entry[0] == expires_at:
                del table[key]
                removed += 1
        return removed

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the indexes of revoked partitions; they are rebuilt if they come back."""
        for partition in partitions:
            self._indexes.pop(partition, None)
            self._watermarks.pop(partition, None)

    def _index(self) -> ExpiryIndex:
        index = self._indexes.get(self.partition)
        if index is None:
            index = self._indexes[self.partition] = ExpiryIndex()
            for key, entry in self.table.items():
                if entry[1] == self.partition:
                    index.push(entry[0], key)
        return index
