"""``State`` over a local store for one partition, with this micro-batch's writes held apart.

The kafka engine decides a micro-batch against ``BatchedState``: reads see the
committed store plus the batch's own writes; writes (and expiry deletions)
collect in ``pending``, one entry per key however often the batch wrote it.
At commit the engine produces ``changes()`` to the changelog inside the
transaction (one record per key per batch) and, once the transaction has
committed, calls ``committed(offset)`` to apply them to the store. An aborted
batch calls ``discard()``: the store never saw it.

While a batch's transaction commits, the engine decides the next one: it
``seal()`` s the batch first, which moves ``pending`` to ``sealed``. Reads
see ``pending``, then ``sealed``, then the store; ``committed(offset)`` then
applies the sealed batch. If that commit fails, ``discard()`` forgets both:
the next batch was decided against state that never became true.

Values are ``orjson([expires_at, value])``. Expiry follows event time: the
partition's watermark is the newest event time decided on it, kept in the
store and the changelog (``WATERMARK``) so that after a restore the
partition forgets exactly what it would have forgotten without the crash.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from streams.state import ExpiryIndex, Value
from streams.store import Store

WATERMARK = b"\x00watermark"
"""The key of the partition's event-time watermark (not a rule's key: those are text)."""

Entry = tuple[int, Value]
_NO_VALUE: Value = []  # the watermark's value: nothing (shared, never changed)


def encode_entry(expires_at: int, value: Value) -> bytes:
    return orjson.dumps([expires_at, value])


def decode_entry(raw: bytes) -> Entry:
    expires_at, value = orjson.loads(raw)
    return expires_at, value


class BatchedState:
    """One store partition as the rules see it during micro-batches."""

    __slots__ = (
        "_expires",
        "_get",
        "_index",
        "_sealed_records",
        "_watermark",
        "pending",
        "sealed",
        "store",
    )

    def __init__(self, store: Store) -> None:
        self.store = store
        self._get = store.get
        self.pending: dict[bytes, Entry | None] = {}
        # The batch whose commit is in flight, if it changed anything.
        self.sealed: dict[bytes, Entry | None] | None = None
        self._sealed_records: dict[bytes, bytes | None] = {}
        self._index: ExpiryIndex | None = None
        # Each indexed key's latest expiry: an index entry that differs is stale
        # (the key was rewritten), told apart without reading the value back.
        self._expires: dict[str, int] = {}
        self._watermark: int | None = None

    def get(self, key: str) -> Value | None:
        raw = key.encode()
        sealed = self.sealed
        if raw in self.pending:
            entry = self.pending[raw]
        elif sealed is not None and raw in sealed:
            entry = sealed[raw]
        else:
            stored = self._get(raw)
            return None if stored is None else orjson.loads(stored)[1]
        return None if entry is None else entry[1]

    def put(self, key: str, value: Value, expires_at: int) -> None:
        self.pending[key.encode()] = (expires_at, value)
        if self._index is not None:
            self._index.push(expires_at, key)
            self._expires[key] = expires_at

    def prune_time(self, newest: int) -> int:
        """``newest``: this state commits in the transaction of the offsets it reflects."""
        return newest

    def advance(self, event_time: int) -> int:
        """Raise the watermark to ``event_time``; delete the entries that expired before it."""
        watermark = self._watermark
        if watermark is None:
            watermark = self.watermark()
        if event_time <= watermark:
            return 0
        self._watermark = event_time
        self.pending[WATERMARK] = (event_time, _NO_VALUE)
        index = self._index if self._index is not None else self._expiry()
        if not index.due(event_time):
            return 0
        removed = 0
        expires = self._expires
        for expires_at, key in index.pop_expired(event_time):
            if expires.get(key) == expires_at:
                del expires[key]
                self.pending[key.encode()] = None
                removed += 1
        return removed

    def watermark(self) -> int:
        if self._watermark is None:
            entry = self._entry(WATERMARK)
            self._watermark = entry[0] if entry is not None else 0
        return self._watermark

    def changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """This batch's changelog records: one per key, None for a deletion."""
        for key, entry in self.pending.items():
            yield key, None if entry is None else encode_entry(*entry)

    def seal(self) -> list[tuple[bytes, bytes | None]]:
        """Close the batch (its commit starts): its changelog records, and later
        writes belong to the next batch. A batch that changed nothing is not
        sealed (there is nothing to commit). The previous sealed batch must be
        committed first."""
        if self.sealed is not None:
            raise RuntimeError("the previous batch is still being committed")
        if not self.pending:
            return []
        records = dict(self.changes())
        self.sealed, self.pending = self.pending, {}
        self._sealed_records = records
        return list(records.items())

    def committed(self, offset: int) -> None:
        """The batch's changelog records are committed up to ``offset``: apply them.

        The sealed batch if there is one, else the open one.
        """
        if self.sealed is not None:
            records, self._sealed_records = self._sealed_records, {}
            self.sealed = None
        elif self.pending:
            records = dict(self.changes())
            self.pending = {}
        else:
            return
        self.store.write(records, offset)

    def discard(self) -> None:
        """Forget the batches not committed (their transaction was aborted, or the one
        they were decided after); rebuild indexes from the store."""
        self.pending.clear()
        self.sealed = None
        self._sealed_records = {}
        self._index = None
        self._expires = {}
        self._watermark = None

    def _entry(self, key: bytes) -> Entry | None:
        sealed = self.sealed
        if key in self.pending:
            return self.pending[key]
        if sealed is not None and key in sealed:
            return sealed[key]
        raw = self._get(key)
        return None if raw is None else decode_entry(raw)

    def _expiry(self) -> ExpiryIndex:
        """Every key by expiry, built from the store on first use (after a restore)."""
        if self._index is None:
            index = ExpiryIndex()
            expires: dict[str, int] = {}
            for key, raw in self.store.items():
                if key != WATERMARK:
                    expires[key.decode()] = decode_entry(raw)[0]
            for batch in (self.sealed or {}, self.pending):
                for key, entry in batch.items():
                    if key == WATERMARK:
                        continue
                    if entry is None:
                        expires.pop(key.decode(), None)
                    else:
                        expires[key.decode()] = entry[0]
            for name, expires_at in expires.items():
                index.push(expires_at, name)
            self._index = index
            self._expires = expires
        return self._index

    def __len__(self) -> int:
        self._expiry()
        return len(self._expires)
