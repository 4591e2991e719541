"""``State`` over a Faust table: the adapter between the rules and changelogged storage.

It reads and writes the table's store directly and hands every change to
``write`` (``streams.faust_output``: the changelog record, on confluent-kafka)
instead of going through Faust's own changelog sends, which cost more CPU
than the decisions.

Each stored value is ``[expires_at, partition, value]``. The partition is kept
so that, after a restart or a rebalance, the expiry index of a partition can
be rebuilt from the restored table alone. Pruning is driven by the newest
event time seen on the partition (its watermark), in the agent, for the
partition of the event being processed: every change goes to the changelog
partition of the *current event* (as Faust writes its own), so deletes land
where the key lives.

Memory cost per tracked key (memory store, CPython 3.11, measured by
bench/bench_streams.py ``--state-cost``): about 0.5 KiB — a 34-64 character key,
the three-element list, one or two ``[time, event_id]`` anchors, and the
dict slot. RocksDB keeps the JSON encoding (~100 bytes) on disk instead.

Expiry waits for the commit. A record that raises the watermark may expire
anchors that earlier records were judged by; the deletions (changelog
tombstones) are written only once the group's committed offset has passed
that record. Otherwise a backfill, where one record moves event time by
days, could make the tombstones durable while the offsets of the records
just before it are not: after a crash those records would be decided again
without the anchor that dropped them. Kept a little longer, an expired anchor
changes no decision of an event within the late grace (see
streams/rules/windows.py). For the same reason a rule trims the entries of a
value it rewrites only up to the event time committed records reached
(``prune_time``): the rewrite itself reaches the changelog before the offsets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, MutableMapping
from typing import Any

from streams.state import ExpiryIndex, Value

ChangelogWrite = Callable[[int, str, Any], None]
"""Write one change of the table: ``(partition, key, entry)``, entry None for a delete."""


def _unlogged(partition: int, key: str, entry: Any) -> None:
    """No changelog (unit tests of the adapter's own logic)."""


class TableState:
    """The ``State`` protocol over one Faust table's store, for one partition at a time."""

    def __init__(self, data: MutableMapping[str, Any], write: ChangelogWrite = _unlogged) -> None:
        self.data = data
        self.write = write
        self.partition = 0
        self._indexes: dict[int, ExpiryIndex] = {}
        self._watermarks: dict[int, int] = {}
        # Per partition: the watermark of the records the group has committed.
        self._settled: dict[int, int] = {}
        # Per source partition: (offset, watermark) raises not yet covered by a commit.
        self._uncommitted: dict[Hashable, deque[tuple[int, int]]] = {}

    def at(self, partition: int) -> TableState:
        """Point at ``partition`` (the partition of the event about to be decided)."""
        self.partition = partition
        return self

    def get(self, key: str) -> Value | None:
        entry = self.data.get(key)
        return None if entry is None else entry[2]

    def put(self, key: str, value: Value, expires_at: int) -> None:
        entry = [expires_at, self.partition, value]
        self.data[key] = entry
        self.write(self.partition, key, entry)
        self._index().push(expires_at, key)

    def prune_time(self, newest: int) -> int:
        return min(newest, self._settled.get(self.partition, 0))

    def advance(self, event_time: int, source: Hashable, offset: int) -> None:
        """Raise the partition's watermark to ``event_time``, decided at ``offset`` of ``source``.

        Nothing is deleted yet: ``expire`` does that once the offset is committed.
        """
        if event_time <= self._watermarks.get(self.partition, 0):
            return
        self._watermarks[self.partition] = event_time
        pending = self._uncommitted.get(source)
        if pending is None:
            pending = self._uncommitted[source] = deque()
        pending.append((offset, event_time))

    def expire(self, source: Hashable, committed: int) -> int:
        """Delete what expired before the watermark of ``source``'s committed records."""
        pending = self._uncommitted.get(source)
        if not pending or pending[0][0] >= committed:
            return 0
        watermark = 0
        while pending and pending[0][0] < committed:
            watermark = pending.popleft()[1]
        if watermark > self._settled.get(self.partition, 0):
            self._settled[self.partition] = watermark
        removed = 0
        data = self.data
        for expires_at, key in self._index().pop_expired(watermark):
            entry = data.get(key)
            if entry is not None and entry[0] == expires_at:
                del data[key]
                self.write(self.partition, key, None)
                removed += 1
        return removed

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the indexes of revoked partitions; they are rebuilt if they come back."""
        revoked = set(partitions)
        for partition in revoked:
            self._indexes.pop(partition, None)
            self._watermarks.pop(partition, None)
            self._settled.pop(partition, None)
        for source in [s for s in self._uncommitted if getattr(s, "partition", None) in revoked]:
            del self._uncommitted[source]

    def _index(self) -> ExpiryIndex:
        index = self._indexes.get(self.partition)
        if index is None:
            index = self._indexes[self.partition] = ExpiryIndex()
            for key, entry in self.data.items():
                if entry[1] == self.partition:
                    index.push(entry[0], key)
        return index
