"""HTTP load generator for the producer endpoint: keep-alive connections, closed loop.

Run by bench/bench_producer.py in its own process (so the generator's CPU is
not the server's), or alone:
``.venv/bin/python bench/bench_producer_load.py --url http://127.0.0.1:8080 --mode single``.

Each connection sends a request, waits for the whole answer, and sends the
next (no pipelining): latency is the time from writing a request to reading
the end of its answer. Prints one JSON line with requests/s, events/s,
p50/p99 latency and the status counts.
"""

from __future__ import annotations

import argparse
import asyncio
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
        if mode == "single":
            body = orjson.dumps(event(i))
        else:
            body = orjson.dumps({"events": [event(i * batch + j) for j in range(batch)]})
        out.append(native_request(host, token, body))
    return out


class Connection(asyncio.Protocol):
    """One keep-alive connection running a closed loop of requests."""

    def __init__(self, requests: list[bytes], stats: Stats, offset: int) -> None:
        self.requests = requests
        self.stats = stats
        self.i = offset
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if self.stats.stopping:
            assert self.transport is not None
            self.transport.close()
            return
        self.i = (self.i + 1) % len(self.requests)
        self.sent_at = time.perf_counter()
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
    conns = []
    for c in range(args.connections):
        _, proto = await loop.create_connection(
            lambda c=c: Connection(requests, stats, c * 7), host, port
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
    per_request = 1 if args.mode == "single" else args.batch
    return {
        "mode": args.mode,
        "batch": per_request,
        "connections": args.connections,
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
    parser.add_argument("--mode", choices=["single", "batch"], default="single")
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
