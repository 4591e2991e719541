"""Benchmark of the stream worker: raw → clean throughput of one worker, every rule on.

Loads N synthetic raw events (streams/synthetic.py: ~5% bots, ~3% client
retries, bursts of email opens, repeated order ids) into fresh topics, starts
one ``eventsieve worker`` process, and measures how fast decisions come out
on events.clean/dropped/dlq. Also measures the pure decision path in-process
(no Kafka, in-memory state), profiles it, and measures state memory per key.

    .venv/bin/python bench/bench_streams.py --events 200000
    .venv/bin/python bench/bench_streams.py --pure-only --profile

Kafka: KAFKA_BOOTSTRAP_SERVERS, else the local stack (``eventsieve stack up``).
The machine is shared: report ``os.getloadavg()`` next to the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from eventsieve.config import KafkaSettings, Settings, load_settings
from eventsieve.kafka import ensure_topics, topic_names
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from streams.partitioning import partition_for
from streams.processor import Processor, Record, Sink
from streams.state import InMemoryState
from streams.synthetic import synthetic_events

ROOT = Path(__file__).resolve().parent.parent


def records(n: int, partitions: int, seed: int) -> list[tuple[int, bytes, bytes]]:
    out = []
    for raw in synthetic_events(n, seed=seed):
        key = topic_key(raw["project"], raw["user_id"]).encode()
        out.append((partition_for(key, partitions), key, encode_raw(raw)))
    return out


def pure(settings: Settings, recs: list[tuple[int, bytes, bytes]], profile: bool) -> None:
    """The decision path alone: decode, enrich, rules, encode — one core, no Kafka."""
    processor = Processor(settings)
    user, orders = InMemoryState(), InMemoryState()
    outcomes: Counter[str] = Counter()
    offsets: Counter[int] = Counter()

    def run() -> None:
        for partition, key, value in recs:
            offset = offsets[partition]
            offsets[partition] += 1
            out = processor.on_raw(Record("raw", partition, offset, key, value), user)
            if out.sink is Sink.ORDERS:
                o = out.outputs[0]
                out = processor.on_order(
                    Record("orders", o.partition or 0, offset, o.key, o.value), orders
                )
            outcomes[out.dropped.reason.value if out.dropped else out.sink.value] += 1

    # Warm the user-agent cache and regex compilation outside the timing.
    processor.on_raw(Record("raw", 0, 0, recs[0][1], recs[0][2]), InMemoryState())
    started = time.perf_counter()
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(run)
    else:
        run()
    elapsed = time.perf_counter() - started
    print(
        f"pure decision path: {len(recs) / elapsed:,.0f} events/s "
        f"({elapsed * 1e6 / len(recs):.1f} µs/event{', under cProfile' if profile else ''})"
    )
    print("  outcomes:", dict(outcomes.most_common()))
    print(f"  state keys: user {len(user):,}, orders {len(orders):,}")
    if profile:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        print(text.getvalue())


def state_cost(settings: Settings, recs: list[tuple[int, bytes, bytes]]) -> None:
    """Bytes of Python heap per tracked key in the in-memory state."""
    processor = Processor(settings)
    tracemalloc.start()
    state = InMemoryState()
    before = tracemalloc.take_snapshot()
    for i, (partition, key, value) in enumerate(recs):
        processor.on_raw(Record("raw", partition, i, key, value), state)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = after.compare_to(before, "filename")
    grown = sum(
        s.size_diff
        for s in stats
        if "state.py" in s.traceback[0].filename
        or "windows.py" in s.traceback[0].filename
        or "pipeline.py" in s.traceback[0].filename
    )
    print(
        f"state memory: {grown / max(1, len(state)):,.0f} bytes/key over {len(state):,} keys "
        "(memory store; dict slot, key, value lists, anchors, expiry heap entry)"
    )


def end_to_end(settings: Settings, recs: list[tuple[int, bytes, bytes]], store: str) -> None:
    bootstrap = kafka_bootstrap(settings)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = settings.topics.model_copy(
        update={n: f"{prefix}events.{n}" for n in ("raw", "orders", "clean", "dropped", "dlq")}
    )
    ensure_topics(bootstrap, topic_names(topics), topics.partitions)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    started = time.perf_counter()
    for partition, key, value in recs:
        while True:
            try:
                producer.produce(topics.raw, key=key, value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)
    print(f"loaded {len(recs):,} raw events in {time.perf_counter() - started:.1f}s")

    workdir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EVENTSIEVE_CONFIG": str(ROOT / "eventsieve.toml"),
        "EVENTSIEVE_STREAMS__APP_ID": f"{prefix}worker",
        "EVENTSIEVE_STREAMS__STORE": store,
        "EVENTSIEVE_STREAMS__DATA_DIR": str(workdir / "data"),
        "EVENTSIEVE_TOPICS__PARTITIONS": str(topics.partitions),
    }
    for name in ("raw", "orders", "clean", "dropped", "dlq"):
        env[f"EVENTSIEVE_TOPICS__{name.upper()}"] = getattr(topics, name)
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("eventsieve")), "worker", "--loglevel", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}reader",
            "auto.offset.reset": "earliest",
            "fetch.min.bytes": 100_000,
        }
    )
    consumer.subscribe([topics.clean, topics.dropped, topics.dlq])
    decided = 0
    first = last = None
    spawned = time.perf_counter()
    try:
        while decided < len(recs):
            if worker.poll() is not None:
                raise SystemExit(f"worker died, see {workdir / 'worker.log'}")
            if time.perf_counter() - spawned > 900:
                raise SystemExit(f"timeout with {decided:,} decided")
            for message in consumer.consume(5000, 0.5):
                if message.error() is None:
                    decided += 1
                    now = time.perf_counter()
                    first = first or now
                    last = now
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        _delete_topics(bootstrap, prefix)
    if first is None or last is None:
        raise SystemExit("no decisions came out")
    print(
        f"worker ({store} store): {decided:,} decisions; first after {first - spawned:.1f}s "
        f"(start-up, group join, table recovery)"
    )
    print(
        f"  steady state: {decided / (last - first):,.0f} events/s over {last - first:.1f}s "
        f"(one worker process, {topics.partitions} partitions)"
    )
    print(
        f"  load average now: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores (shared machine)"
    )


def _delete_topics(bootstrap: str, prefix: str) -> None:
    """Leave the broker as we found it: our topics and the worker's internal ones."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result()
        except Exception as exc:  # best effort: report and go on
            print(f"could not delete a topic: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", choices=["memory", "rocksdb"], default="memory")
    parser.add_argument("--pure-only", action="store_true", help="skip the Kafka run")
    parser.add_argument("--profile", action="store_true", help="cProfile the decision path")
    args = parser.parse_args()

    settings = load_settings(ROOT / "eventsieve.toml")
    settings = settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update={"partitions": args.partitions}),
            "kafka": KafkaSettings(bootstrap_servers=kafka_bootstrap(settings)),
        }
    )
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    recs = records(args.events, args.partitions, args.seed)
    pure(settings, recs, profile=False)
    if args.profile:
        pure(settings, recs, profile=True)
    state_cost(settings, recs[: min(len(recs), 50_000)])
    if not args.pure_only:
        end_to_end(settings, recs, args.store)


if __name__ == "__main__":
    main()
