"""Throughput and latency of the producer endpoint against the real broker.

Run: ``.venv/bin/python bench/bench_producer.py [--workers 1] [--seconds 10]``
with the local stack up (``eventsieve stack up``). It starts
``eventsieve serve`` on a free port, publishing to a fresh 6-partition topic,
then drives it from a separate process (bench/bench_producer_load.py) over
loopback: first single-event requests, then batches. Every 2xx counted was
acknowledged by Kafka (acks=all) before it was sent. At the end the topic's
record count is compared with the accepted events (it may be higher: warm-up
requests are not counted).

The endpoint, the load generator and Kafka share this machine's cores, so
figures are lower bounds of a dedicated deployment; note what else was
running when reporting them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from eventsieve.config import load_settings
from eventsieve.services import kafka_bootstrap

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGETS = {"single": 20_000, "batch": 200_000}  # events/s (issue 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topic_records(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def start_server(port: int, workers: int, topic: str, linger_ms: float) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            "EVENTSIEVE_TOPICS__RAW": topic,
            "EVENTSIEVE_SERVER__ACCESS_LOG": "false",
            "EVENTSIEVE_SERVER__LINGER_MS": str(linger_ms),
            "EVENTSIEVE_LOG_LEVEL": "WARNING",
            # Refused when Kafka is external (KAFKA_BOOTSTRAP_SERVERS) and the secret weak.
            "EVENTSIEVE_PRIVACY__SALT_SECRET": os.urandom(32).hex(),
            # One project without a practical rate limit: the bench measures the endpoint.
            "EVENTSIEVE_PROJECTS": json.dumps(
                [{"id": "bench", "tokens": ["bench-token"], "rate_limit_per_second": 1e12}]
            ),
        }
    )
    proc = subprocess.Popen(
        [str(BIN / "eventsieve"), "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the endpoint did not become ready")


def load(port: int, mode: str, seconds: float, connections: int, batch: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_producer_load.py"),
            "--url",
            f"http://127.0.0.1:{port}",
            "--token",
            "bench-token",
            "--mode",
            mode,
            "--batch",
            str(batch),
            "--connections",
            str(connections),
            "--seconds",
            str(seconds),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Producer endpoint throughput/latency")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--single-connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--linger-ms", type=float, default=5.0)
    args = parser.parse_args()

    settings = load_settings(ROOT / "eventsieve.toml")
    bootstrap = kafka_bootstrap(settings)
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    port = free_port()
    print(
        f"endpoint: {args.workers} worker(s), linger.ms={args.linger_ms}, topic {topic}, "
        f"cpus={os.cpu_count()}, load before start={os.getloadavg()[0]:.2f}"
    )
    server = start_server(port, args.workers, topic, args.linger_ms)
    accepted = 0
    try:
        for mode, connections in (
            ("single", args.single_connections),
            ("batch", args.batch_connections),
        ):
            result = load(port, mode, args.seconds, connections, args.batch)
            accepted += (
                sum(n for s, n in result["statuses"].items() if s.startswith("2")) * result["batch"]
            )
            target = TARGETS[mode]
            verdict = "met" if result["accepted_events_per_s"] >= target else "NOT met"
            print(
                f"{mode:>6}: {result['accepted_events_per_s']:>10,.0f} events/s "
                f"({result['requests_per_s']:,.0f} req/s x {result['batch']}), "
                f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
                f"{result['connections']} connections, statuses {result['statuses']} "
                f"[target {target:,}/s: {verdict}]"
            )
        time.sleep(1)
        print(
            f"records in topic: {topic_records(bootstrap, topic):,} "
            f"(accepted and measured: {accepted:,}; warm-up requests come on top)"
        )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        # The client must outlive the answers: a collected AdminClient fails its futures.
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics([topic]).values():
            future.result(30)


if __name__ == "__main__":
    main()
