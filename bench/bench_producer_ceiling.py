"""Upper bounds of the producer endpoint on this machine, part by part.

Run: ``.venv/bin/python bench/bench_producer_ceiling.py [--seconds 8]``.

bench/bench_producer.py measures the whole endpoint. This one measures what
bounds it from above, so a missed target can be traced to its cause:

1. **handler CPU**: the native route's request handling in-process — parse,
   validate, edge context, RawEvent records, Avro encoding — with Kafka and
   HTTP taken away (the publisher returns at once). One core, no I/O.
2. **HTTP floor**: a bare ASGI app that reads the body and answers 202, under
   the server the endpoint uses (uvicorn with uvloop and httptools), driven
   over loopback by ``wrk`` (a C load generator, ``apt-get install wrk``)
   when it is on PATH, else skipped. No request handling at all.

The endpoint cannot exceed either figure; Kafka's broker and the load
generator share the same cores on top.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from eventsieve.config import load_settings
from producers.apis import ALL_ROUTES
from producers.endpoint import build_endpoint
from producers.handlers import RouteHandler
from producers.model import HttpRequest
from producers.ratelimit import RateLimiter
from producers.salts import FixedSalts

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_producer_load import event  # noqa: E402

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"16")]})
    await send({"type": "http.response.body", "body": b'{"accepted": 1}\\n'})
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer demo-public-token"
"""


class _InstantPublisher:
    """Stands in for Kafka: this bench measures the handler's own CPU."""

    topic = "ceiling"

    async def publish(self, records: object) -> None:
        return None


def handler_events_per_s(batch: int, seconds: float) -> float:
    settings = load_settings(ROOT / "eventsieve.toml")
    endpoint = build_endpoint(settings, publisher=_InstantPublisher(), salts=FixedSalts())  # type: ignore[arg-type]
    endpoint.limiter = RateLimiter({p.id: 1e12 for p in settings.projects})
    route = next(r for r in ALL_ROUTES if r.path == "/v1/events")
    handler = RouteHandler(route, endpoint)
    token = settings.projects[0].tokens[0]
    body = orjson.dumps(event(1) if batch == 1 else {"events": [event(i) for i in range(batch)]})
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    headers["user-agent"] = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"

    async def run() -> float:
        done = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(max(1, 200 // batch)):
                http = HttpRequest(
                    method="POST",
                    path="/v1/events",
                    headers=headers,
                    query={},
                    body=body,
                    received_at=datetime.now(UTC),
                )
                await handler.process(http, "203.0.113.7")
                done += batch
        return done / elapsed

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_floor(workers: int, seconds: float) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bare.py").write_text(BARE_APP)
        script = Path(tmp, "post.lua")
        script.write_text(WRK_SCRIPT.format(body=orjson.dumps(orjson.dumps(event(1)).decode())))
        port = free_port()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "uvicorn"),
                "bare:app",
                "--app-dir",
                tmp,
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.2)
            time.sleep(1)
            out = subprocess.run(
                [
                    wrk,
                    "-t1",
                    "-c64",
                    f"-d{int(seconds)}s",
                    "-s",
                    str(script),
                    f"http://127.0.0.1:{port}/",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            server.terminate()
            server.wait(30)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description="Upper bounds of the producer endpoint")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()}, load before start={os.getloadavg()[0]:.2f}")
    for batch in (1, 500):
        rate = handler_events_per_s(batch, args.seconds / 2)
        print(f"handler CPU, {batch:>3}-event requests: {rate:>9,.0f} events/s on one core")
    for workers in (1, 2):
        rate = http_floor(workers, args.seconds)
        if rate is None:
            print("HTTP floor: skipped (wrk is not on PATH)")
            break
        print(f"HTTP floor, bare ASGI, uvicorn x{workers}: {rate:>9,.0f} requests/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
