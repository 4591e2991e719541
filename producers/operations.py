"""What operators and browsers ask besides ingest: ``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``, CORS preflights; and the lifespan that starts
and stops the publisher and the salts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from eventsieve.logging import get_logger
from eventsieve.ratelog import RateLog
from producers.endpoint import Endpoint
from producers.openapi import openapi_document

log = get_logger("eventsieve.producers")
# The endpoint's periodic rate line: events acknowledged by Kafka, requests refused.
RATES = {"accepted": "eventsieve_events_accepted", "rejected": "eventsieve_requests_rejected"}


def operations_app(endpoint: Endpoint) -> Starlette:
    server = endpoint.settings.server
    openapi = orjson.dumps(openapi_document(server.max_batch_events))

    async def healthz(request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def readyz(request: Request) -> Response:
        if await endpoint.publisher.ready():
            return Response(b"ready", media_type="text/plain")
        return Response(
            b"kafka unavailable",
            503,
            media_type="text/plain",
            headers={"retry-after": str(server.retry_after_s)},
        )

    async def metrics(request: Request) -> Response:
        return Response(
            endpoint.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await endpoint.publisher.start()
        endpoint.salts.start()
        # Serve even without: requests get 503 until Kafka and today's salt are there.
        if not await asyncio.to_thread(endpoint.salts.wait_ready, server.delivery_timeout_s):
            log.warning("salts_unavailable_at_start")
        log.info("endpoint_started", topic=endpoint.publisher.topic)
        rate_log = RateLog(endpoint.metrics.registry, RATES).start()
        try:
            yield
        finally:
            rate_log.stop()
            left = await endpoint.publisher.close(server.delivery_timeout_s)
            endpoint.salts.close()
            log.info("endpoint_stopped", undelivered=left)

    return Starlette(
        routes=[
            StarletteRoute("/healthz", healthz, methods=["GET"]),
            StarletteRoute("/readyz", readyz, methods=["GET"]),
            StarletteRoute("/metrics", metrics, methods=["GET"]),
            StarletteRoute("/openapi.json", openapi_json, methods=["GET"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(server.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                max_age=86_400,
            ),
        ],
        lifespan=lifespan,
    )
