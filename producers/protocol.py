"""uvicorn's httptools protocol with a deadline for request headers.

uvicorn times out idle keep-alive connections only after a first request:
a connection that sends nothing, or trickles its headers a byte at a time,
is held forever, and a few hundred of them exhaust the endpoint's sockets
and memory. This protocol arms a deadline when a connection opens and when
each new request begins, and closes the connection if the headers are not
complete by then. The body has its own deadline in the app
(``producers.app.read_body``: 408).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from producers.limits import EdgeLimits


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose request headers are too slow."""

    header_timeout_s: float = EdgeLimits().header_timeout_s

    def __init__(
        self, config: Config, server_state: ServerState, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(config, server_state, *args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


def protocol_with(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class with another header deadline (uvicorn takes a class).

    For servers in this process only: worker processes import the class by
    name, so ``eventsieve serve`` uses ``HeaderDeadlineProtocol`` itself.
    """
    if header_timeout_s == HeaderDeadlineProtocol.header_timeout_s:
        return HeaderDeadlineProtocol
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )
