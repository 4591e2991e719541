"""uvicorn's httptools protocol with a deadline for request headers.

uvicorn times out idle keep-alive connections only after a first request:
a connection that sends nothing, or trickles its headers a byte at a time,
is held forever, and a few hundred of them exhaust the endpoint's sockets
and memory. This protocol arms a deadline when a connection opens and when
a request's headers did not all arrive in the read that began it, and
closes the connection if the headers are not complete by then. The body
has its own deadline in the app (``producers.body.read_body``: 408).

It also sends each response's head and body in one write
(``_OneWriteTransport``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from producers.limits import EdgeLimits


class _OneWriteTransport:
    """A connection's transport that sends a response's head with its first body write.

    uvicorn writes the status line and headers on ``http.response.start`` and
    the body on ``http.response.body``: two ``send()`` system calls and two
    TCP segments for every answer. This holds a complete response head (not a
    ``1xx``, which a client may be waiting for) until the next write, close,
    or the end of the response, and sends them as one.
    """

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1" and data[-4:] == b"\r\n\r\n":
            self._held = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held response head now."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose request headers are too slow,
    and writes each response's head and body at once (``_OneWriteTransport``)."""

    header_timeout_s: float = EdgeLimits().header_timeout_s

    def __init__(
        self, config: Config, server_state: ServerState, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(config, server_state, *args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._reading_headers = False

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
        self.transport = _OneWriteTransport(transport)  # type: ignore[assignment]
        self._arm()

    def on_response_complete(self) -> None:
        # A response without a body write (HEAD, 204) must not stay held.
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._disarm()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # The deadline of a request whose headers did not all come in this read.
        # (Armed here, not when the request begins: most requests arrive whole,
        # and a timer armed and cancelled within one read is a cost per request.)
        if self._reading_headers and self._header_deadline is None:
            self._arm()


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
