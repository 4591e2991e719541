"""The peer endpoint bench/bench_producer.py compares eventsieve with.

What a team would write by hand instead of eventsieve: a Starlette app with
Vemetric's ``POST /e`` (and a batch route, ``POST /v1/events`` with
``{"events": [...]}``) that checks the token, parses the JSON, produces it
with confluent-kafka (acks=all, idempotent, the same batching settings as
eventsieve) and answers only after Kafka acknowledged the record. No
validation beyond "a JSON object with a name", no visitor ids, no Avro, no
transactions.

Run under uvicorn (uvloop, httptools) by bench/bench_producer.py:
``PEER_TOPIC=... PEER_BOOTSTRAP=... uvicorn bench_producer_peer:app``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TOPIC = os.environ.get("PEER_TOPIC", "bench.peer")
TOKENS = {"bench-token": "bench"}
CONFIG: dict[str, Any] = {
    "bootstrap.servers": os.environ.get("PEER_BOOTSTRAP", "127.0.0.1:19092"),
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": float(os.environ.get("PEER_LINGER_MS", "5")),
    "compression.type": "lz4",
    "partitioner": "murmur2_random",
}


class Kafka:
    """A producer whose deliveries resolve futures in the event loop."""

    def __init__(self) -> None:
        self.producer = Producer(CONFIG)
        self.running = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread.start()

    def _poll(self) -> None:
        while self.running:
            self.producer.poll(0.1)

    async def produce(self, key: bytes, values: list[bytes]) -> KafkaError | None:
        assert self.loop is not None
        loop = self.loop
        future: asyncio.Future[KafkaError | None] = loop.create_future()
        left = [len(values)]
        first_error: list[KafkaError | None] = [None]

        def settle(error: KafkaError | None) -> None:
            if error is not None and first_error[0] is None:
                first_error[0] = error
            left[0] -= 1
            if left[0] == 0 and not future.done():
                future.set_result(first_error[0])

        def delivered(err: KafkaError | None, _msg: object) -> None:
            loop.call_soon_threadsafe(settle, err)

        for value in values:
            self.producer.produce(TOPIC, value, key, on_delivery=delivered)
        return await future


kafka = Kafka()


def _project(request: Request) -> str | None:
    token = request.headers.get("token")
    if token is None:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
    return TOKENS.get(token)


async def track(request: Request) -> Response:
    project = _project(request)
    if project is None:
        return Response(b"Unauthorized", 401)
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return Response(b"Invalid!", 400)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return Response(b"Invalid!", 400)
    user = data.get("identifier") or data.get("userIdentifier") or ""
    error = await kafka.produce(f"{project}:{user}".encode(), [orjson.dumps(data)])
    if error is not None:
        return Response(b"Service unavailable", 503)
    return Response(b"", 200)


async def batch(request: Request) -> Response:
    project = _project(request)
    if project is None:
        return Response(b"Unauthorized", 401)
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return Response(b"Invalid!", 400)
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list) or not events:
        return Response(b"Invalid!", 400)
    values = [orjson.dumps(e) for e in events]
    error = await kafka.produce(project.encode(), values)
    if error is not None:
        return Response(b"Service unavailable", 503)
    return Response(orjson.dumps({"accepted": len(values)}), 202)


async def ready(request: Request) -> Response:
    return Response(b"ready")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    kafka.start()
    yield
    kafka.running = False
    kafka.producer.flush(10)


app = Starlette(
    routes=[
        Route("/e", track, methods=["POST"]),
        Route("/v1/events", batch, methods=["POST"]),
        Route("/readyz", ready, methods=["GET"]),
    ],
    lifespan=lifespan,
)
