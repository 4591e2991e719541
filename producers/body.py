"""Reading a request's body: capped in size, bounded in time, aware of a client that left.

The cap and the deadline are checked while the body arrives, so a client
cannot hold a worker with a slow or endless body (answered 413 or 408).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import Receive, Scope


class BodyTooLarge(Exception):
    """The body is over the route's limit (413)."""


class ClientDisconnected(Exception):
    """The client went away before the body was read."""


class BodyTimedOut(Exception):
    """The body did not arrive within the deadline (408)."""


class BodyDeadlines:
    """Cancels requests still reading their body ``timeout_s`` after they began.

    One timer for every request of a process, firing every ``period_s`` while
    any request is reading, instead of a timer armed and cancelled per request
    (``asyncio.timeout``): most bodies are complete when the handler starts,
    and the per-request timer cost more than reading them. A deadline is
    honoured within ``period_s`` (a quarter of the timeout, at most 1 s).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.period_s = min(1.0, max(0.05, timeout_s / 4))
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self, task: asyncio.Task[Any]) -> None:
        """``task`` starts reading a body now."""
        self._reading[task] = time.monotonic() + self.timeout_s
        if self._timer is None or self._loop is not task.get_loop():
            self._loop = task.get_loop()
            self._timer = self._loop.call_later(self.period_s, self._sweep)

    def end(self, task: asyncio.Task[Any]) -> None:
        """``task`` has its body (or gave up)."""
        self._reading.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (and clears that mark)."""
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for task, deadline in list(self._reading.items()):
            if deadline <= now:
                del self._reading[task]
                self._expired.add(task)
                task.cancel()
        if self._reading and self._loop is not None and not self._loop.is_closed():
            self._timer = self._loop.call_later(self.period_s, self._sweep)


async def read_body(
    scope: Scope,
    receive: Receive,
    limit: int,
    timeout_s: float,
    deadlines: BodyDeadlines | None = None,
) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or streamed)
    or a body that takes longer than ``timeout_s`` to arrive (``deadlines``, when
    given, enforces it; else a timer of this request's own)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge
    if deadlines is None:
        try:
            async with asyncio.timeout(timeout_s):
                return await _read_chunks(receive, limit)
        except TimeoutError:
            raise BodyTimedOut from None
    task = asyncio.current_task()
    assert task is not None
    deadlines.begin(task)
    try:
        return await _read_chunks(receive, limit)
    except asyncio.CancelledError:
        if deadlines.expired(task):
            task.uncancel()
            raise BodyTimedOut from None
        raise
    finally:
        deadlines.end(task)


async def _read_chunks(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
