"""End to end: HTTP 2xx → row visible in ClickHouse, through the endpoint, a stream worker
and the sink running together.

Starts the same three processes as ``eventsieve run`` (``serve``, ``worker``,
``sink``) on fresh topics and a fresh database, then:

1. saturation: ``bench_producer_load.py`` (closed loop, batched requests, its
   own process) sends as fast as the endpoint takes for ``--saturate-s``
   seconds; the raw topic, the decision topics and the ``events`` table are
   sampled meanwhile, and the run waits until every accepted event is a row.
   Printed per stage: the endpoint's accepted events/s, the worker's decided
   records/s, the sink's rows/s, and the pipeline's maximum rate (events
   accepted ÷ time until the last one was a row).
2. latency at half that rate: requests of ``--batch`` events each are sent
   open loop, at fixed times, for ``--latency-s`` seconds. Every
   ``--probe-every``-th event is a probe (``name = "e2e_probe"``, its own
   ``event_id``); ClickHouse is asked every ``--poll-ms`` which probes are
   rows. A probe's latency runs from the 2xx of its request to the start of
   the first query that returned it (so the figure errs high by up to one
   poll interval). A row in ``events`` is what ``eventsieve stats`` counts.

    .venv/bin/python bench/bench_e2e.py
    .venv/bin/python bench/bench_e2e.py --saturate-s 30 --latency-s 60

Uses the local stack (``eventsieve stack up``) or KAFKA_BOOTSTRAP_SERVERS /
CLICKHOUSE_URL; removes its topics and database afterwards. The three
processes log at WARNING into a file that is kept
(``BENCH_E2E_LOG_LEVEL=DEBUG`` shows, among others, each batch the sink commits). Everything runs
on one machine, so the stages share its cores with Kafka and ClickHouse:
the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from eventsieve.config import (
    ClickHouseSettings,
    KafkaSettings,
    PrivacySettings,
    Settings,
    load_settings,
    settings_environment,
)
from eventsieve.kafka import ensure_topics, topic_names
from eventsieve.services import clickhouse_url, kafka_bootstrap
from ops.pipeline import endpoint_url, programs, wait_for_endpoint
from ops.supervisor import Supervisor
from sinks.clickhouse import ClickHouse
from sinks.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "demo-public-token"
PROBE = "e2e_probe"
# Rows unchanged this long after the load: everything accepted is written.
_SETTLED_S = 3.0
BUCKETS_MS = (50, 100, 150, 200, 300, 500, 750, 1_000, 2_000, 5_000)


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_settings(base: Settings, run_id: str, partitions: int, workdir: Path) -> Settings:
    """The configured settings on this run's own topics, database, groups and port."""
    prefix = f"bench.e2e.{run_id}."
    topics = base.topics.model_copy(
        update={
            "raw": prefix + "events.raw",
            "orders": prefix + "events.orders",
            "clean": prefix + "events.clean",
            "dropped": prefix + "events.dropped",
            "dlq": prefix + "events.dlq",
            "partitions": partitions,
        }
    )
    database = f"bench_e2e_{run_id}"
    return base.model_copy(
        update={
            "kafka": KafkaSettings(bootstrap_servers=kafka_bootstrap(base)),
            "clickhouse": ClickHouseSettings(
                url=clickhouse_url(base, "default"), database=database
            ),
            "topics": topics,
            "server": base.server.model_copy(update={"port": free_port(), "host": "127.0.0.1"}),
            "streams": base.streams.model_copy(
                update={"app_id": f"bench-e2e-{run_id}", "data_dir": workdir / "streams"}
            ),
            "sink": base.sink.model_copy(update={"group_id": f"bench-e2e-sink-{run_id}"}),
            "privacy": PrivacySettings(salt_secret=SecretStr(uuid.uuid4().hex * 2)),
        }
    )


class Sampler:
    """Records in a topic's partitions (end offsets) and rows in ``events``, over time."""

    def __init__(self, settings: Settings) -> None:
        bootstrap = settings.kafka.bootstrap_servers or ""
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-e2e-sampler"})
        n = settings.topics.partitions
        self.raw = [TopicPartition(settings.topics.raw, p) for p in range(n)]
        self.decided = [
            TopicPartition(topic, p)
            for topic in (settings.topics.clean, settings.topics.dropped)
            for p in range(n)
        ]
        self.ch = ClickHouse(clickhouse_url(settings, "default"), settings.clickhouse.database)
        self.samples: list[tuple[float, int, int, int]] = []

    def ends(self, partitions: list[TopicPartition]) -> int:
        return sum(self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions)

    def rows(self) -> int:
        return int(self.ch.scalar(f"SELECT count() FROM {self.ch.database}.events"))

    def sample(self) -> tuple[float, int, int, int]:
        point = (time.monotonic(), self.ends(self.raw), self.ends(self.decided), self.rows())
        self.samples.append(point)
        return point

    def close(self) -> None:
        self.consumer.close()
        self.ch.close()


def busy_rate(samples: list[tuple[float, int]]) -> float:
    """Records/s between the first sample where the count moved and the last where it did."""
    moving = [i for i in range(1, len(samples)) if samples[i][1] > samples[i - 1][1]]
    if not moving:
        return 0.0
    first, last = samples[moving[0] - 1], samples[moving[-1]]
    return (last[1] - first[1]) / max(last[0] - first[0], 1e-9)


def saturate(settings: Settings, seconds: float, sampler: Sampler) -> float:
    """Phase 1: the pipeline flat out; returns its maximum rate (events/s)."""
    _base_raw, base_decided, base_rows = sampler.sample()[1:]
    started = time.monotonic()
    generator = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_producer_load.py"),
            "--url",
            endpoint_url(settings),
            "--mode",
            "batch",
            "--batch",
            "100",
            "--connections",
            "8",
            "--seconds",
            str(seconds),
            "--warmup",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    while generator.poll() is None:
        sampler.sample()
        time.sleep(0.5)
    result = json.loads((generator.stdout.read() if generator.stdout else "") or "{}")
    # Every accepted event becomes one row: done when the rows stop coming.
    # (Topic end offsets count transaction markers too, so they are not counts.)
    last_change, rows_seen = time.monotonic(), -1
    while time.monotonic() - last_change < _SETTLED_S:
        point = sampler.sample()
        if point[3] != rows_seen:
            rows_seen, last_change = point[3], point[0]
        time.sleep(0.2)
    done = min((p for p in sampler.samples if p[3] == rows_seen), key=lambda p: p[0])
    elapsed = done[0] - started
    rows = done[3] - base_rows
    accepted = rows
    raw = [(t, r) for t, r, _d, _n in sampler.samples]
    decided = [(t, d) for t, _r, d, _n in sampler.samples]
    written = [(t, n) for t, _r, _d, n in sampler.samples]
    print(f"saturation, {seconds:.0f} s of batched requests (8 connections, 100 events each):")
    print(
        f"  endpoint: {result.get('accepted_events_per_s', 0):,.0f} events/s accepted "
        f"(2xx; p50 {result.get('p50_ms', 0)} ms, p99 {result.get('p99_ms', 0)} ms a request)"
    )
    print(
        f"  raw topic: {busy_rate(raw):,.0f} offsets/s while it grew (transaction markers included)"
    )
    print(
        f"  stream worker: {busy_rate(decided):,.0f} decisions/s "
        f"({done[2] - base_decided:,} records on the decision topics, transaction markers included)"
    )
    print(f"  sink: {busy_rate(written):,.0f} rows/s while it wrote")
    maximum = rows / elapsed
    print(
        f"  pipeline: all {accepted:,} accepted events were rows {elapsed:.1f} s after the start: "
        f"{maximum:,.0f} events/s end to end; load {load()}"
    )
    return maximum


@dataclass
class Tracked:
    """Probes sent, when their request's 2xx came, and when each became a row."""

    acked: dict[str, float] = field(default_factory=dict)
    visible: dict[str, float] = field(default_factory=dict)
    # Per probe: (received_at, decided_at) from its row, and the wall clock it was seen at.
    stamps: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    late_sends: int = 0
    sent_events: int = 0


def request_bytes(host: str, events: list[dict[str, Any]]) -> bytes:
    body = orjson.dumps({"events": events})
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nUser-Agent: bench-e2e/1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def paced(
    settings: Settings, rate: float, seconds: float, batch: int, probe_every: int, run: str
) -> Tracked:
    """Open loop: one request of ``batch`` events every ``batch / rate`` seconds."""
    tracked = Tracked()
    host, port = settings.server.host, settings.server.port
    queue: asyncio.Queue[tuple[bytes, list[str]] | None] = asyncio.Queue()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (item := await queue.get()) is not None:
            request, probes = item
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            now = time.monotonic()
            tracked.statuses[status] = tracked.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                for probe in probes:
                    tracked.acked[probe] = now
        writer.close()

    connections = [asyncio.create_task(connection()) for _ in range(16)]
    interval = batch / rate
    started = time.monotonic()
    seq = 0
    for i in range(int(seconds / interval)):
        due = started + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -interval:
            tracked.late_sends += 1
        events, probes = [], []
        for _ in range(batch):
            seq += 1
            event_id = f"e2e-{run}-{seq}"
            probe = seq % probe_every == 0
            events.append(
                {
                    "event_id": event_id,
                    "name": PROBE if probe else "page_viewed",
                    "user_id": f"user-{seq % 5_000}",
                    "url": f"https://example.com/p/{seq % 97}",
                    "properties": {"seq": seq},
                }
            )
            if probe:
                probes.append(event_id)
        await queue.put((request_bytes(f"{host}:{port}", events), probes))
        tracked.sent_events += batch
    for _ in connections:
        await queue.put(None)
    await asyncio.gather(*connections)
    return tracked


def poll_probes(
    settings: Settings, tracked: Tracked, stop: threading.Event, every_s: float
) -> None:
    """Ask ClickHouse which probes are rows, every ``every_s``; note when each first was."""
    ch = ClickHouse(clickhouse_url(settings, "default"), settings.clickhouse.database)
    query = (
        f"SELECT event_id, received_at_ms, decided_at_ms FROM {ch.database}.events "
        f"WHERE project = 'demo' AND name = '{PROBE}' AND inserted_at >= now() - 30"
    )
    try:
        while not stop.is_set():
            asked, wall = time.monotonic(), time.time()
            for event_id, received_at, decided_at in ch.execute(query):
                if event_id not in tracked.visible:
                    tracked.visible[event_id] = asked
                    tracked.stamps[event_id] = (received_at, decided_at, wall)
            stop.wait(max(0.0, every_s - (time.monotonic() - asked)))
    finally:
        ch.close()


def latency(settings: Settings, args: argparse.Namespace, rate: float, sampler: Sampler) -> None:
    """Phase 2: paced at ``rate``; prints stage rates and the probes' latency histogram."""
    run = uuid.uuid4().hex[:6]
    tracked = Tracked()
    stop = threading.Event()
    poller = threading.Thread(
        target=poll_probes, args=(settings, tracked, stop, args.poll_ms / 1000), daemon=True
    )
    poller.start()
    first = sampler.sample()
    done = threading.Event()

    def sample_meanwhile() -> None:
        while not done.wait(1.0):
            sampler.sample()

    sampling = threading.Thread(target=sample_meanwhile, daemon=True)
    sampling.start()
    sent = asyncio.run(paced(settings, rate, args.latency_s, args.batch, args.probe_every, run))
    tracked.acked, tracked.statuses = sent.acked, sent.statuses
    tracked.late_sends, tracked.sent_events = sent.late_sends, sent.sent_events
    deadline = time.monotonic() + 30
    while len(tracked.visible) < len(tracked.acked) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    done.set()
    poller.join(10)
    sampling.join(5)
    last = sampler.sample()
    span = last[0] - first[0]
    latencies = sorted(
        (tracked.visible[p] - t) * 1000 for p, t in tracked.acked.items() if p in tracked.visible
    )
    missing = len(tracked.acked) - len(latencies)
    print(
        f"latency at {rate:,.0f} events/s (half the maximum), {args.latency_s:.0f} s, "
        f"{args.batch} events a request, open loop:"
    )
    print(
        f"  sent {tracked.sent_events:,} events, statuses {dict(sorted(tracked.statuses.items()))}"
        f", sends more than one interval late: {tracked.late_sends}"
    )
    print(
        f"  stage rates over the phase: raw offsets {(last[1] - first[1]) / span:,.0f}/s, "
        f"decisions {(last[2] - first[2]) / span:,.0f}/s, rows {(last[3] - first[3]) / span:,.0f}/s"
    )
    if not latencies:
        print("  no probe became a row")
        return
    print(
        f"  {len(latencies):,} probes (1 in {args.probe_every}), {missing} never seen; "
        f"2xx → row in ClickHouse: p50 {pct(latencies, 0.5):.0f} ms, p90 "
        f"{pct(latencies, 0.9):.0f} ms, p99 {pct(latencies, 0.99):.0f} ms, "
        f"max {latencies[-1]:.0f} ms (polled every {args.poll_ms:.0f} ms); load {load()}"
    )
    stamps = list(tracked.stamps.values())
    decided = sorted(float(d - r) for r, d, _w in stamps)
    written = sorted(w * 1000 - d for _r, d, w in stamps)
    print(
        f"  by stage (from the rows' times): endpoint received → stream decided p50 "
        f"{pct(decided, 0.5):.0f} / p99 {pct(decided, 0.99):.0f} ms; decided → row p50 "
        f"{pct(written, 0.5):.0f} / p99 {pct(written, 0.99):.0f} ms (the worker's commit, "
        "the sink's batch and insert)"
    )
    low = 0.0
    for high in (*BUCKETS_MS, float("inf")):
        count = sum(1 for x in latencies if low <= x < high)
        label = f"{low:>5.0f}-{high:<5.0f} ms" if high != float("inf") else f"{low:>5.0f}+       ms"
        print(f"  {label} {count:6d} {'#' * round(60 * count / len(latencies))}")
        low = high


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--saturate-s", type=float, default=20.0)
    parser.add_argument("--latency-s", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=10, help="events per request (phase 2)")
    parser.add_argument("--probe-every", type=int, default=5)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--rate", type=float, help="phase 2 rate (default: half the maximum)")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    settings = bench_settings(load_settings(), run_id, args.partitions, workdir)
    bootstrap = settings.kafka.bootstrap_servers or ""
    names = topic_names(settings.topics)
    ensure_topics(bootstrap, names, args.partitions)
    admin_ch = ClickHouse(clickhouse_url(settings, "default"), settings.clickhouse.database)
    migrate(admin_ch)
    log_path = workdir / "pipeline.log"
    print(f"load average before: {load()}; pipeline logs: {log_path}")
    sampler = Sampler(settings)
    try:
        with log_path.open("w") as log:
            env = {
                **settings_environment(settings),
                "EVENTSIEVE_LOG_LEVEL": os.environ.get("BENCH_E2E_LOG_LEVEL", "WARNING"),
            }
            supervisor = Supervisor(programs(None), out=log, env=env)
            supervisor.start()
            try:
                wait_for_endpoint(settings, timeout=120)
                maximum = saturate(settings, args.saturate_s, sampler)
                latency(settings, args, args.rate or maximum / 2, sampler)
                if (exited := supervisor.exited()) is not None:
                    print(f"a pipeline process exited: {exited}")
            finally:
                supervisor.stop_all()
    finally:
        sampler.close()
        admin_ch.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse.database}")
        admin_ch.close()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=60)
        if log_path.exists() and log_path.stat().st_size:
            kept = Path(tempfile.gettempdir()) / f"bench-e2e-{run_id}.log"
            shutil.copy(log_path, kept)
            print(f"pipeline log kept in {kept}")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
