"""Benchmark of ``eventsieve replay``: how fast a range is decided again.

Two figures:

- pure: the ``Replayer`` alone over N synthetic raw records (decode, enrich,
  rules, encode, range check), in-process, no Kafka — the ceiling;
- kafka: ``run_replay`` against the local stack: N records published to a
  fresh raw topic, a fresh ClickHouse database (empty: every decision is new),
  a dry run (read + decide + compare) and a real run (also produces every
  in-range decision, acks=all). Topics and database are removed afterwards.

    .venv/bin/python bench/bench_replay.py --events 100000
    .venv/bin/python bench/bench_replay.py --events 100000 --pure-only

Kafka/ClickHouse: KAFKA_BOOTSTRAP_SERVERS/CLICKHOUSE_URL, else the local
stack. The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from eventsieve.config import ClickHouseSettings, KafkaSettings, Settings, load_settings
from eventsieve.kafka import ensure_topics, topic_names
from eventsieve.services import clickhouse_url, kafka_bootstrap
from ops.replay import ReplayOptions, run_replay
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from sinks.migrate import migrate
from sinks.service import connect
from streams.partitioning import partition_for
from streams.processor import Record
from streams.replay import Replayer, ReplayRange
from streams.synthetic import T0, synthetic_events

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def records(n: int, partitions: int, seed: int) -> list[tuple[int, bytes, bytes, int]]:
    out = []
    for raw in synthetic_events(n, seed=seed):
        key = topic_key(raw["project"], raw["user_id"]).encode()
        out.append((partition_for(key, partitions), key, encode_raw(raw), raw["received_at"]))
    return out


def pure(settings: Settings, recs: list[tuple[int, bytes, bytes, int]], span: ReplayRange) -> None:
    replayer = Replayer(settings, span, decided_at=1, rekey_topic="rekey")
    offsets: dict[int, int] = {}
    inputs = []
    for partition, key, value, ts in recs:
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        inputs.append(Record("events.raw", partition, offset, key, value, ts))
    t = time.perf_counter()
    for record in inputs:
        replayer.feed(record)
    elapsed = time.perf_counter() - t
    c = replayer.counts
    print(
        f"pure: {len(inputs):,} records in {elapsed:.2f} s = {len(inputs) / elapsed:,.0f} rec/s "
        f"({c.in_range:,} in range, {c.context:,} context); load average {load()}"
    )


def kafka_run(settings: Settings, recs: list[tuple[int, bytes, bytes, int]], span: ReplayRange):
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-replay-{tag}."
    topics = settings.topics.model_copy(
        update={n: prefix + getattr(settings.topics, n) for n in topic_names_fields()}
    )
    database = f"bench_replay_{tag}"
    settings = settings.model_copy(
        update={
            "topics": topics,
            "clickhouse": ClickHouseSettings(
                url=clickhouse_url(settings, "default"), database=database
            ),
        }
    )
    bootstrap = kafka_bootstrap(settings)
    ensure_topics(bootstrap, topic_names(topics), topics.partitions)
    ch = connect(settings)
    try:
        migrate(ch)
        producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 50, "enable.idempotence": True}
        )
        for partition, key, value, _ in recs:
            while True:
                try:
                    producer.produce(topics.raw, key=key, value=value, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(60)
        with tempfile.TemporaryDirectory() as state_dir:
            for dry in (True, False):
                t = time.perf_counter()
                report = run_replay(
                    settings, ReplayOptions(span=span, state_dir=Path(state_dir), dry_run=dry)
                )
                elapsed = time.perf_counter() - t
                what = "dry run" if dry else "replay"
                print(
                    f"{what}: {report.counts.records:,} records in {elapsed:.2f} s = "
                    f"{report.counts.records / elapsed:,.0f} rec/s, {report.changed:,} changes, "
                    f"{report.produced:,} produced; load average {load()}"
                )
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS `{database}`")
        ch.close()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics(topic_names(topics), operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=60)


def topic_names_fields() -> tuple[str, ...]:
    return ("raw", "orders", "clean", "dropped", "dlq")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pure-only", action="store_true", help="skip the Kafka run")
    args = parser.parse_args()

    settings = load_settings(ROOT / "eventsieve.toml")
    settings = settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update={"partitions": args.partitions}),
            "kafka": KafkaSettings(bootstrap_servers=kafka_bootstrap(settings)),
        }
    )
    recs = records(args.events, args.partitions, args.seed)
    # The middle half of the mix's time: context before, context after.
    duration_s = (recs[-1][3] - T0) // 1000
    span = ReplayRange(T0 // 1000 + duration_s // 4, T0 // 1000 + 3 * duration_s // 4)
    print(f"load average at start: {load()}")
    pure(settings, recs, span)
    if not args.pure_only:
        kafka_run(settings, recs, span)


if __name__ == "__main__":
    main()
