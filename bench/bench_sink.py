"""Sink throughput: a pre-filled ``events.clean`` topic into ClickHouse.

Fills a fresh topic with N CleanEvents (Avro, realistic field sizes), then
runs the sink's writer (the same code as ``eventsieve sink``, migrations
included) in one or more processes of one consumer group and measures the
time until every record is committed, i.e. acknowledged by ClickHouse. Also
prints the per-stage cost on one batch (decode, row building, insert) so the
bottleneck is visible.

    .venv/bin/python bench/bench_sink.py                 # 200k events, 1 process
    .venv/bin/python bench/bench_sink.py -n 500000 -p 2  # 2 sink processes

Uses the local stack (``eventsieve stack up``) or KAFKA_BOOTSTRAP_SERVERS /
CLICKHOUSE_URL. Creates its own topic and database and deletes them after.
Other work on the machine skews the figures: the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing
import os
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from eventsieve.config import ClickHouseSettings, KafkaSettings, Settings, load_settings
from eventsieve.kafka import ensure_topics
from eventsieve.services import clickhouse_url, kafka_bootstrap
from schemas.codecs import decode_clean, encode_clean
from schemas.events import clean_event, new_raw_event
from sinks import queries
from sinks.clickhouse import ClickHouse
from sinks.metrics import SinkMetrics
from sinks.migrate import migrate
from sinks.rows import Batch, Decision
from sinks.service import build_writer, tune_gc

T0 = 1_764_288_000_000


def event(i: int) -> dict[str, Any]:
    """A CleanEvent shaped like a browser pageview/custom event (~350 bytes of Avro)."""
    user = f"user-{i % 20_000}"
    raw = new_raw_event(
        project=f"project-{i % 4}",
        name=("$pageview", "signup", "purchase", "click", "scroll")[i % 5],
        event_id=str(uuid.UUID(int=i + (7 << 100))),
        timestamp=T0 + i * 3,
        received_at=T0 + i * 3 + 40,
        source="native",
        user_id=user if i % 3 else None,
        anonymous_id=f"anon-{i % 50_000}",
        url=f"https://www.example.com/blog/post-{i % 500}?utm_source=news",
        referrer="https://www.google.com/",
        domain="www.example.com",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0 Safari/537.36",
        country="DE",
        properties={"plan": "pro", "position": str(i % 10)},
    )
    return dict(
        clean_event(
            raw,
            normalised_name=raw["name"].lower(),
            user_key=user,
            decided_at=T0 + i * 3 + 90,
            browser="Chrome",
            browser_version="124.0",
            os="Linux",
            device="desktop",
            checks=["validate", "enrich", "bot", "shields", "dedup"],
        )
    )


def fill(bootstrap: str, topic: str, n: int) -> float:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "compression.type": "lz4",
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    started = time.perf_counter()
    for i in range(n):
        e = event(i)
        producer.produce(
            topic, key=f"{e['project']}:{e['user_key']}".encode(), value=encode_clean(e)
        )
        if i % 5_000 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def run_writer(settings: Settings, stop: Any) -> None:
    tune_gc()  # as run_sink does
    writer = build_writer(settings, SinkMetrics())
    writer.run(stop)


def stages(n: int, ch: ClickHouse) -> dict[str, float]:
    """Per-stage throughput (rows/s) on one batch of n events, single-threaded."""
    values = [encode_clean(event(i)) for i in range(n)]
    t = time.perf_counter()
    decoded = [decode_clean(v) for v in values]
    decode = n / (time.perf_counter() - t)
    batch = Batch()
    t = time.perf_counter()
    for record in decoded:
        batch.add(record, Decision.ACCEPTED)
    rows = n / (time.perf_counter() - t)
    t = time.perf_counter()
    ch.insert_columns("events", batch.events.names, batch.events.data)
    ch.insert_columns("user_updates", batch.user_updates.names, batch.user_updates.data)
    insert = n / (time.perf_counter() - t)
    return {"decode": decode, "rows": rows, "insert": insert}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--events", type=int, default=200_000)
    parser.add_argument("-p", "--processes", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()

    base = load_settings()
    bootstrap = kafka_bootstrap(base)
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench.sink.{run_id}.events.clean"
    database = f"bench_sink_{run_id}"
    ensure_topics(
        bootstrap, [topic, topic.replace("clean", "dropped"), topic + ".dlq"], args.partitions
    )
    settings = base.model_copy(
        update={
            "kafka": KafkaSettings(bootstrap_servers=bootstrap),
            "clickhouse": ClickHouseSettings(
                url=clickhouse_url(base, "default"), database=database
            ),
            "topics": base.topics.model_copy(
                update={
                    "clean": topic,
                    "dropped": topic.replace("clean", "dropped"),
                    "dlq": topic + ".dlq",
                    "partitions": args.partitions,
                }
            ),
            "sink": base.sink.model_copy(
                update={"group_id": f"bench-{run_id}", "batch_max_rows": args.batch}
            ),
        }
    )
    ch = ClickHouse(clickhouse_url(base, "default"), database)
    try:
        migrate(ch)
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        fill_s = fill(bootstrap, topic, args.events)
        print(f"filled {args.events:,} events in {fill_s:.1f}s ({args.events / fill_s:,.0f}/s)")

        ctx = multiprocessing.get_context("fork")
        stop = ctx.Event() if args.processes > 1 else threading.Event()
        runner = ctx.Process if args.processes > 1 else threading.Thread
        workers = [runner(target=run_writer, args=(settings, stop)) for _ in range(args.processes)]
        started = time.perf_counter()
        for w in workers:
            w.start()
        done = 0
        while done < args.events:
            time.sleep(0.5)
            done = committed(bootstrap, settings.sink.group_id, topic, args.partitions)
        elapsed = time.perf_counter() - started
        load = os.getloadavg()[0]
        stop.set()
        for w in workers:
            w.join(30)
        rows = ch.scalar(f"SELECT uniqExact(event_id) FROM {database}.events")
        print(
            f"sink: {args.events:,} events committed in {elapsed:.1f}s with "
            f"{args.processes} process(es), batch {args.batch:,}: "
            f"{args.events / elapsed:,.0f} rows/s (includes consumer start and group join)"
        )
        print(f"distinct event_ids in ClickHouse: {rows:,}; load average after: {load:.2f}")
        span = queries.TimeRange(
            dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
        )
        t = time.perf_counter()
        result = queries.project_stats(ch, "project-0", span)
        print(
            f"stats of one project ({result.accepted:,} events, exact, unmerged parts): "
            f"{(time.perf_counter() - t) * 1000:.0f} ms"
        )
        per_stage = stages(min(args.batch, 50_000), ch)
        print(
            "single-threaded stages (rows/s): "
            + ", ".join(f"{k} {v:,.0f}" for k, v in per_stage.items())
        )
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {database}")
        ch.close()
        admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the results
        futures = admin.delete_topics(
            [topic, topic.replace("clean", "dropped"), topic + ".dlq"], operation_timeout=30
        )
        for future in futures.values():
            with contextlib.suppress(Exception):
                future.result(timeout=60)


if __name__ == "__main__":
    main()
