"""``Idempotency-Key`` replay: the first answer to a key is given again, for 24 h.

A key is scoped by route and credential (two projects may use the same key).
The same key with the same body replays the stored answer without producing;
with another body it is a conflict; while the first request is still being
published, a repeat waits for its outcome. Only successful answers are kept:
after a failure (503, say) a retry with the key must be able to publish.

The store is per process and in memory, bounded in size (oldest evicted
first). The cross-process guarantee is the stream's
``duplicate_idempotency_key`` rule, which drops a second event carrying the
same key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from producers.model import Reply


def fingerprint(body: bytes) -> bytes:
    """What "the same request" means: the same body bytes."""
    return hashlib.sha256(body).digest()


def scope_key(route: str, credential: str | None, key: str) -> str:
    """The store key: route, a hash of the credential, and the client's key."""
    who = hashlib.sha256((credential or "").encode()).hexdigest()[:32]
    return f"{route}\0{who}\0{key}"


@dataclass(slots=True)
class _Entry:
    body: bytes
    expires: float
    reply: Reply | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Begin:
    """Outcome of :meth:`IdempotencyStore.begin`.

    ``state`` is ``new`` (go ahead, then call ``complete``/``abandon``),
    ``replay`` (answer ``reply``), or ``conflict`` (same key, other body).
    """

    state: str
    reply: Reply | None = None


class IdempotencyStore:
    """In-memory key -> first answer, with a TTL and a size bound."""

    def __init__(
        self,
        ttl_s: float = 86_400.0,
        max_keys: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_keys
        self._clock = clock
        # Insertion order is expiry order (one TTL for all), so the front expires first.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now and len(self._entries) <= self._max:
                break
            if entry.reply is None:
                break  # still in flight: it completes or is abandoned soon
            del self._entries[key]

    async def begin(self, key: str, body_fingerprint: bytes) -> Begin:
        """Claim ``key`` for this request, or say how to answer it instead."""
        while True:
            now = self._clock()
            self._expire(now)
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(body=body_fingerprint, expires=now + self._ttl)
                return Begin("new")
            if entry.body != body_fingerprint:
                return Begin("conflict")
            if entry.reply is not None:
                return Begin("replay", entry.reply)
            await entry.done.wait()  # the first request is in flight: wait for it

    def complete(self, key: str, reply: Reply) -> None:
        """The claimed request succeeded: keep its answer for replays."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.reply = reply
            entry.done.set()

    def abandon(self, key: str) -> None:
        """The claimed request failed: forget the key so a retry can publish."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.done.set()
