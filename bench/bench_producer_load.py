"""HTTP load generator for the producer endpoint: keep-alive connections, closed loop or paced.

Run by bench/bench_producer.py in its own process (so the generator's CPU is
not the server's), or alone:
``.venv/bin/python bench/bench_producer_load.py --url http://127.0.0.1:8080 --mode single``.

Each connection sends a request, waits for the whole answer, and sends the
next (no pipelining): latency is the time from writing a request to reading
the end of its answer. With ``--rate`` each connection sends at a fixed
pace instead, and latency counts from when a request was due. Prints one
JSON line with requests/s, events/s, p50/p99 latency and the status counts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from urllib.parse import urlsplit

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is pinned on Linux
    uvloop = None


def native_request(host: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"User-Agent: bench/1\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def vemetric_request(host: str, token: str, body: bytes) -> bytes:
    """Vemetric's ``POST /e`` as its browser script sends it (token header, page URL)."""
    head = (
        f"POST /e HTTP/1.1\r\nHost: {host}\r\nToken: {token}\r\n"
        f"Content-Type: application/json\r\nV-SDK: script\r\nV-SDK-Version: 0.6.0\r\n"
        f"User-Agent: {BROWSER_AGENT}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


BROWSER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


def vemetric_event(i: int) -> dict:
    """A browser pageview of Vemetric's web SDK, by one of 10,000 users."""
    return {
        "name": "$$pageView",
        "identifier": f"user-{i % 10_000}",
        "url": f"https://example.com/p/{i % 97}",
        "customData": {"plan": "pro", "n": i % 13},
    }


def event(i: int) -> dict:
    return {
        "name": "page_viewed",
        "user_id": f"user-{i % 10_000}",
        "url": f"https://example.com/p/{i % 97}",
        "properties": {"plan": "pro", "n": i % 13, "ref": "newsletter"},
    }


def build_requests(host: str, token: str, mode: str, batch: int, count: int = 256) -> list[bytes]:
    """``count`` distinct requests (different users spread over partitions)."""
    out = []
    for i in range(count):
        if mode == "vemetric":
            out.append(vemetric_request(host, token, orjson.dumps(vemetric_event(i))))
            continue
        if mode == "single":
            body = orjson.dumps(event(i))
        else:
            body = orjson.dumps({"events": [event(i * batch + j) for j in range(batch)]})
        out.append(native_request(host, token, body))
    return out


class Connection(asyncio.Protocol):
    """One keep-alive connection running a closed loop of requests."""

    def __init__(
        self, requests: list[bytes], stats: Stats, offset: int, interval: float = 0.0
    ) -> None:
        self.requests = requests
        self.stats = stats
        self.i = offset
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()
        # Paced (``--rate``): a request is due every ``interval`` seconds; its
        # latency counts from when it was due, so a slow answer that delays the
        # next request is not hidden (no coordinated omission).
        self.interval = interval
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if self.stats.stopping:
            assert self.transport is not None
            self.transport.close()
            return
        now = time.perf_counter()
        if self.interval:
            if not self.due:
                self.due = now + random.random() * self.interval  # spread the connections
            else:
                self.due += self.interval
            if self.due > now:
                self.loop.call_at(self.loop.time() + self.due - now, self._write, self.due)
                return
            self._write(self.due)
            return
        self._write(now)

    def _write(self, due: float) -> None:
        self.i = (self.i + 1) % len(self.requests)
        self.sent_at = due
        assert self.transport is not None
        self.transport.write(self.requests[self.i])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = int(head[9:12])
            del self.buffer[:total]
            self.stats.record(status, time.perf_counter() - self.sent_at)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.measuring = False
        self.stopping = False

    def record(self, status: int, latency: float) -> None:
        if self.measuring:
            self.latencies.append(latency)
            self.statuses[status] = self.statuses.get(status, 0) + 1


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(args: argparse.Namespace) -> dict:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = build_requests(f"{host}:{port}", args.token, args.mode, args.batch)
    stats = Stats()
    loop = asyncio.get_running_loop()
    interval = args.connections / args.rate if args.rate else 0.0
    conns = []
    for c in range(args.connections):
        _, proto = await loop.create_connection(
            lambda c=c: Connection(requests, stats, c * 7, interval), host, port
        )
        conns.append(proto)
    await asyncio.sleep(args.warmup)
    stats.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    stats.measuring = False
    elapsed = time.perf_counter() - started
    stats.stopping = True
    await asyncio.wait([c.closed for c in conns], timeout=30)
    lat = sorted(stats.latencies)
    ok = sum(n for s, n in stats.statuses.items() if 200 <= s < 300)
    per_request = args.batch if args.mode == "batch" else 1
    return {
        "mode": args.mode,
        "batch": per_request,
        "connections": args.connections,
        "rate": args.rate,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(lat) / elapsed, 1),
        "accepted_events_per_s": round(ok * per_request / elapsed, 1),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default="demo-public-token")
    parser.add_argument("--mode", choices=["single", "batch", "vemetric"], default="single")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s in all (paced); 0: closed loop"
    )
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()
    result = asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
