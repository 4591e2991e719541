"""Pure ASGI in front of every route: ingest routes by exact (method, path),
everything else to the operations app.

Why not Starlette routing for the ingest routes too: measured on the 2-core
dev box under the same load generator, a bare ASGI app answered ~7,100
requests/s and the same answer through Starlette's router, middleware stack
and Request/Response objects ~2,200/s. Ingest is the hot path; the dispatcher
keeps Starlette's semantics that matter (CORS with credentials, lifespan)
without its per-request layers.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from eventsieve.logging import get_logger
from producers.body import ClientDisconnected
from producers.handlers import RouteHandler
from producers.limits import EdgeLimits
from producers.metrics import Metrics

access_log = get_logger("eventsieve.access")


class IngestDispatcher:
    """Pure ASGI: API routes by exact (method, path); anything else goes to ``fallback``.

    Adds the CORS headers browser SDKs need on actual requests (the origin
    echoed, credentials allowed); preflight ``OPTIONS`` requests go to the
    fallback's Starlette CORSMiddleware. Counts every answer by route and
    status, and writes one access-log line per request when enabled.
    """

    def __init__(
        self,
        handlers: dict[tuple[str, str], RouteHandler],
        fallback: ASGIApp,
        metrics: Metrics,
        cors_origins: tuple[str, ...],
        access_log: bool,
        limits: EdgeLimits,
        retry_after_s: int,
    ) -> None:
        self.handlers = handlers
        self.fallback = fallback
        self.metrics = metrics
        self.any_origin = "*" in cors_origins
        self.origins = frozenset(cors_origins)
        self.access_log = access_log
        self.limits = limits
        self.retry_after_s = retry_after_s
        self.inflight = 0

    def _header_problem(self, scope: Scope) -> str | None:
        """Why the request's headers are refused (431), or None."""
        headers = scope.get("headers") or ()
        if len(headers) > self.limits.max_headers:
            return f"at most {self.limits.max_headers} headers"
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.limits.max_header_bytes:
            return f"at most {self.limits.max_header_bytes} bytes of headers"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        handler = self.handlers.get((scope["method"], scope["path"]))
        problem = self._header_problem(scope)
        if handler is None:
            if problem is None:
                await self.fallback(scope, receive, send)
            else:
                await self._send(scope, send, 431, problem.encode(), "text/plain", {})
            return
        started = time.perf_counter()
        errors = handler.route.errors
        if problem is not None:
            answer = handler.rejected(errors.headers_too_large(problem))
        elif self.inflight >= self.limits.max_inflight_requests:
            answer = handler.rejected(errors.unavailable(self.retry_after_s))
        else:
            self.inflight += 1
            try:
                answer = await handler.answer(scope, receive)
            except ClientDisconnected:
                return  # the client left before sending its body: nobody to answer
            finally:
                self.inflight -= 1
        status, body, media_type, extra = answer
        await self._send(scope, send, status, body, media_type, extra)
        elapsed = time.perf_counter() - started
        handler.answered(status)
        handler.latency.observe(elapsed)
        if self.access_log:
            client = scope.get("client")
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                bytes=len(body),
                ms=round(elapsed * 1000, 2),
                client=client[0] if client else None,
            )

    async def _send(
        self,
        scope: Scope,
        send: Send,
        status: int,
        body: bytes,
        media_type: str,
        extra: dict[str, str],
    ) -> None:
        """Write one answer, with the CORS headers browser SDKs need to read it."""
        headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        headers.extend((k.encode(), v.encode()) for k, v in extra.items())
        if status in (408, 431):
            headers.append((b"connection", b"close"))
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if origin is not None and (self.any_origin or origin.decode("latin-1") in self.origins):
            headers.append((b"access-control-allow-origin", origin))
            headers.append((b"access-control-allow-credentials", b"true"))
            headers.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
