"""The small state interface the stateful rules see, and its in-memory implementation.

Rules read and write JSON-shaped values under string keys, each written with
the event time after which it can be forgotten (``expires_at``). Pruning is
driven by event time too: ``advance(now)`` forgets everything that expired
before ``now``, the newest event time seen on the partition. A rule must give
the same answer whether or not an expired entry is still there, so pruning
only bounds memory and never changes a decision (see ``late_grace_s``).

The Faust tables implement the same interface (streams/tables.py); the
in-memory one serves unit tests, benchmarks and replays.
"""

from __future__ import annotations

import heapq
from typing import Any, Protocol

Value = list[Any]
"""A rule's value: a JSON-shaped list (what the changelog stores)."""


class State(Protocol):
    """Key/value state of one partition's rules."""

    def get(self, key: str) -> Value | None:
        """The value under ``key``, or None."""
        ...

    def put(self, key: str, value: Value, expires_at: int) -> None:
        """Store ``value``; it may be forgotten once event time passes ``expires_at``."""
        ...

    def prune_time(self, newest: int) -> int:
        """The event time a rule may forget by, in a value whose newest entry is ``newest``.

        A rule trims old entries from a value it rewrites (anchors more than a
        window and grace behind). Where state commits together with the input
        offsets (the kafka engine, in-memory state) that is ``newest``. Where
        state can be ahead of the committed offsets (the faust engine), it is
        at most the event time reached by committed records: a record decided
        again after a crash must still find the entries that decided it.
        """
        ...


class ExpiryIndex:
    """A min-heap of (expires_at, key): which keys to forget as event time advances.

    A key re-written with a later expiry leaves a stale heap entry behind; it
    is recognised (the stored expiry differs) and skipped when popped.
    """

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []

    def push(self, expires_at: int, key: str) -> None:
        heapq.heappush(self._heap, (expires_at, key))

    def due(self, now: int) -> bool:
        """Whether some key expired before ``now`` (``pop_expired`` has work)."""
        heap = self._heap
        return bool(heap) and heap[0][0] < now

    def pop_expired(self, now: int) -> list[tuple[int, str]]:
        """Every (expires_at, key) with ``expires_at < now``, earliest first."""
        out: list[tuple[int, str]] = []
        heap = self._heap
        while heap and heap[0][0] < now:
            out.append(heapq.heappop(heap))
        return out

    def __len__(self) -> int:
        return len(self._heap)


class InMemoryState:
    """``State`` in a dict; values are stored as ``[expires_at, value]``."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[int, Value]] = {}
        self._expiry = ExpiryIndex()

    def get(self, key: str) -> Value | None:
        entry = self.data.get(key)
        return None if entry is None else entry[1]

    def put(self, key: str, value: Value, expires_at: int) -> None:
        self.data[key] = (expires_at, value)
        self._expiry.push(expires_at, key)

    def prune_time(self, newest: int) -> int:
        return newest

    def advance(self, now: int) -> int:
        """Forget entries that expired before event time ``now``; return how many."""
        removed = 0
        for expires_at, key in self._expiry.pop_expired(now):
            entry = self.data.get(key)
            if entry is not None and entry[0] == expires_at:
                del self.data[key]
                removed += 1
        return removed

    def __len__(self) -> int:
        return len(self.data)
