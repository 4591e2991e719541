"""Benchmark of the stream worker: raw → clean throughput of one worker, every rule on.

Loads N synthetic raw events (streams/synthetic.py: ~5% bots, ~3% client
retries, bursts of email opens, repeated order ids) into fresh topics, starts
one ``eventsieve worker`` process, and measures how fast decisions come out
on events.clean/dropped/dlq. In one run, on the same broker:

- the ``kafka`` engine (exactly-once micro-batches), then how fast its user
  state restores from the changelog (keys/s);
- the ``faust`` engine (fewer events: it is slower);
- Faust's bare copy floor (bench/bench_faust_floor.py as a subprocess);
- plain confluent-kafka copy loops, the transport ceiling: consume → produce,
  flush + commit per batch, and the same with one transaction per batch;
- the pure decision path in-process (no Kafka, in-memory state), optionally
  profiled, and state memory per key.

    .venv/bin/python bench/bench_streams.py --events 100000 --faust-events 20000
    .venv/bin/python bench/bench_streams.py --pure-only --profile
    .venv/bin/python bench/bench_streams.py --events 60000 --kafka-only

The worker's CPU per event (its librdkafka threads included) is printed next
to its rate: on a shared machine it moves much less with the load.

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
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from eventsieve.config import KafkaSettings, Settings, load_settings
from eventsieve.kafka import (
    ensure_topics,
    stream_consumer_config,
    topic_names,
    transactional_producer_config,
)
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import decode_clean, decode_dropped, encode_raw
from schemas.topology import USER_STORE, changelog_topic
from streams.partitioning import partition_for
from streams.processor import Processor, Record, Sink
from streams.restore import restore
from streams.state import InMemoryState
from streams.store import MemoryStore
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
    started, cpu = time.perf_counter(), time.process_time()
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(run)
    else:
        run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"pure decision path: {len(recs) / elapsed:,.0f} events/s "
        f"({elapsed * 1e6 / len(recs):.1f} µs/event, CPU {cpu * 1e6 / len(recs):.1f} µs"
        f"{', under cProfile' if profile else ''})"
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


def load(bootstrap: str, topic: str, recs: list[tuple[int, bytes, bytes]]) -> None:
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
                producer.produce(topic, key=key, value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)
    print(f"loaded {len(recs):,} raw events in {time.perf_counter() - started:.1f}s")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of process ``pid``'s threads so far, by kind: the main thread (where
    the Python code runs), librdkafka's threads (``rdk:*``) and the rest (RocksDB, ...)."""
    out = {"main": 0.0, "librdkafka": 0.0, "other": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if task.name == str(pid):
            kind = "main"
        else:
            kind = "librdkafka" if name.startswith("rdk:") else "other"
        out[kind] += (int(fields[11]) + int(fields[12])) / tick
    return out


def load_average() -> str:
    return f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"


def start_worker(
    bootstrap: str, topics: Any, prefix: str, store: str, engine: str
) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    """An ``eventsieve worker`` process on ``topics``; its log is ``<workdir>/worker.log``."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EVENTSIEVE_CONFIG": str(ROOT / "eventsieve.toml"),
        "EVENTSIEVE_STREAMS__APP_ID": f"{prefix}worker",
        "EVENTSIEVE_STREAMS__STORE": store,
        "EVENTSIEVE_STREAMS__ENGINE": engine,
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
    return worker, workdir, env


def end_to_end(
    settings: Settings, recs: list[tuple[int, bytes, bytes]], store: str, engine: str
) -> None:
    bootstrap = kafka_bootstrap(settings)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = settings.topics.model_copy(
        update={n: f"{prefix}events.{n}" for n in ("raw", "orders", "clean", "dropped", "dlq")}
    )
    ensure_topics(bootstrap, topic_names(topics), topics.partitions)
    load(bootstrap, topics.raw, recs)

    worker, workdir, env = start_worker(bootstrap, topics, prefix, store, engine)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}reader",
            "auto.offset.reset": "earliest",
            "fetch.min.bytes": 100_000,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topics.clean, topics.dropped, topics.dlq])
    decided = 0
    first = last = None
    threads_first: dict[str, float] = {}
    threads_last: dict[str, float] = {}
    decided_first = 0
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
                    if first is None:
                        first, decided_first = now, decided
                        threads_first = thread_cpu(worker.pid)
                    last = now
            if first is not None:
                threads_last = thread_cpu(worker.pid)
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    try:
        if first is None or last is None:
            raise SystemExit("no decisions came out")
        print(
            f"{engine} engine ({store} store): {decided:,} decisions; first after "
            f"{first - spawned:.1f}s (start-up, group join, state restore)"
        )
        print(
            f"  steady state: {decided / (last - first):,.0f} events/s over {last - first:.1f}s "
            f"(one worker process, {topics.partitions} partitions); load average {load_average()}"
        )
        print_cpu(max(1, decided - decided_first), threads_first, threads_last)
        if engine == "kafka":
            restore_rate(bootstrap, settings.model_copy(update={"topics": topics}), env)
    finally:
        _delete_topics(bootstrap, prefix)


def print_cpu(count: int, first: dict[str, float], last: dict[str, float]) -> None:
    """The worker's CPU per event (its librdkafka threads included), and by thread.

    Less sensitive to the machine's load than the rate.
    """
    seconds = sum(last.values()) - sum(first.values())
    if seconds <= 0:
        return
    per_event = seconds / count * 1e6
    split = ", ".join(
        f"{kind} {(last[kind] - first.get(kind, 0.0)) / count * 1e6:,.1f}" for kind in last
    )
    print(
        f"  worker CPU: {per_event:,.1f} µs per event ({1e6 / per_event:,.0f}/s a core); "
        f"by thread: {split}"
    )


def profile_engine(settings: Settings, recs: list[tuple[int, bytes, bytes]]) -> None:
    """The kafka engine in this process under cProfile: where a worker's time goes."""
    from streams.engine import Engine
    from streams.store import RocksStores

    bootstrap = kafka_bootstrap(settings)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = settings.topics.model_copy(
        update={n: f"{prefix}events.{n}" for n in ("raw", "orders", "clean", "dropped", "dlq")}
    )
    streams = settings.streams.model_copy(update={"app_id": f"{prefix}worker"})
    settings = settings.model_copy(update={"topics": topics, "streams": streams})
    ensure_topics(bootstrap, topic_names(topics), topics.partitions)
    from streams.worker import prepare_topics

    prepare_topics(settings)
    load(bootstrap, topics.raw, recs)
    with tempfile.TemporaryDirectory() as data:
        engine = Engine(settings, RocksStores(Path(data)), f"{prefix}profile")
        engine.start()
        profiler = cProfile.Profile()
        decided, started = 0, None
        try:
            while decided < len(recs):
                n = profiler.runcall(engine.step)
                if n and started is None:
                    started = time.perf_counter()
                decided += n
            elapsed = time.perf_counter() - (started or time.perf_counter())
        finally:
            engine.close()
            _delete_topics(bootstrap, prefix)
    print(f"kafka engine in-process under cProfile: {decided / elapsed:,.0f} events/s")
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    print(text.getvalue())


def latency(
    settings: Settings, recs: list[tuple[int, bytes, bytes]], rate: float, store: str
) -> None:
    """raw → decision latency of the kafka engine at a steady ``rate`` (events/s).

    The time a decision becomes readable (read_committed) minus the raw
    record's CreateTime, matched by the decision's source partition and
    offset (records decided on the raw topic; order events, decided on
    events.orders, are left out).
    """
    bootstrap = kafka_bootstrap(settings)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = settings.topics.model_copy(
        update={n: f"{prefix}events.{n}" for n in ("raw", "orders", "clean", "dropped", "dlq")}
    )
    ensure_topics(bootstrap, topic_names(topics), topics.partitions)
    worker, workdir, _ = start_worker(bootstrap, topics, prefix, store, "kafka")
    sent: dict[tuple[int, int], float] = {}
    seen: list[tuple[int, int, float]] = []
    done = threading.Event()

    def read() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{prefix}latency",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        consumer.subscribe([topics.clean, topics.dropped])
        while not done.is_set():
            for m in consumer.consume(1000, 0.1):
                if m.error() is not None:
                    continue
                now = time.time()
                decode = decode_clean if m.topic() == topics.clean else decode_dropped
                event = decode(m.value())
                if event["source_topic"] == topics.raw:
                    seen.append((event["source_partition"], event["source_offset"], now))
        consumer.close()

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})

    def delivered(error: Any, message: Any) -> None:
        if error is None:
            sent[(message.partition(), message.offset())] = message.timestamp()[1] / 1000

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(8)  # worker start-up and group join
        started = time.perf_counter()
        for i, (partition, key, value) in enumerate(recs):
            pause = started + i / rate - time.perf_counter()
            if pause > 0:
                producer.poll(pause)
            producer.produce(topics.raw, value, key, partition, on_delivery=delivered)
        producer.flush(60)
        deadline = time.monotonic() + 60
        while len(seen) < 0.9 * len(recs) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        done.set()
        reader.join(10)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        _delete_topics(bootstrap, prefix)
    ordered = sorted(now - sent[(p, o)] for p, o, now in seen if (p, o) in sent)
    if not ordered:
        raise SystemExit(f"no decisions measured; see {workdir / 'worker.log'}")
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    print(
        f"kafka engine latency at {rate:,.0f} events/s ({len(seen):,} decisions): "
        f"p50 {p50 * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms, max {ordered[-1] * 1000:,.0f} ms; "
        f"load average {load_average()}"
    )


def restore_rate(bootstrap: str, settings: Settings, env: dict[str, str]) -> None:
    """How fast the kafka engine's user state comes back from its changelog (a wiped store)."""
    streams = settings.streams.model_copy(update={"app_id": env["EVENTSIEVE_STREAMS__APP_ID"]})
    topic = changelog_topic(settings.model_copy(update={"streams": streams}), USER_STORE)
    stores = {(topic, p): MemoryStore() for p in range(settings.topics.partitions)}
    started = time.perf_counter()
    read = sum(restore(bootstrap, stores).values())
    elapsed = time.perf_counter() - started
    keys = sum(len(s) for s in stores.values())
    size = sum(len(k) + len(v) for s in stores.values() for k, v in s.items())
    print(
        f"  restore: {read:,} changelog records ({read / elapsed:,.0f}/s) -> {keys:,} live keys "
        f"in {elapsed:.1f}s; {size / max(1, keys):,.0f} bytes/key as stored"
    )


def copy_loop(bootstrap: str, recs: list[tuple[int, bytes, bytes]], transactional: bool) -> None:
    """The transport ceiling: consume → produce with confluent-kafka, no decisions.

    Plain: flush and commit the offsets per batch of up to 1,000 records.
    Transactional: the kafka engine's shape, one transaction per batch.
    """
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench.copy.{tag}.in", f"bench.copy.{tag}.out"
    ensure_topics(bootstrap, [source, sink], 6)
    try:
        load(bootstrap, source, recs)
        consumer = Consumer(stream_consumer_config(bootstrap, f"bench-copy-{tag}", 30.0))
        if transactional:
            producer = Producer(transactional_producer_config(bootstrap, f"bench-copy-{tag}", 30))
            producer.init_transactions(30)
        else:
            producer = Producer(
                {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
            )
        consumer.subscribe([source])
        copied, first = 0, None
        deadline = time.perf_counter() + 600
        while copied < len(recs) and time.perf_counter() < deadline:
            batch = [m for m in consumer.consume(1_000, 0.1) if m.error() is None]
            if not batch:
                continue
            first = first or time.perf_counter()
            if transactional:
                producer.begin_transaction()
            for m in batch:
                while True:
                    try:
                        producer.produce(sink, m.value(), m.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
            copied += len(batch)
            if transactional:
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()),
                    consumer.consumer_group_metadata(),
                )
                producer.commit_transaction()
            else:
                producer.flush()
                positions = [
                    tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0
                ]
                consumer.commit(offsets=positions, asynchronous=False)
        elapsed = time.perf_counter() - (first or time.perf_counter())
        consumer.close()
        kind = "one transaction per batch" if transactional else "flush + commit per batch"
        print(
            f"confluent-kafka copy loop ({kind}): {copied / elapsed:,.0f} records/s; "
            f"load average {load_average()}"
        )
    finally:
        _delete_topics(bootstrap, f"bench.copy.{tag}.")


def faust_floor(records: int) -> None:
    """Faust's own floor: bench_faust_floor.py's bare copy agent, its output passed through."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_faust_floor.py"), "--records", str(records)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines():
        print(f"  {line}" if not line.startswith("bare") else line)
    if out.returncode:
        print(f"bench_faust_floor.py failed: {out.stderr[-500:]}")


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
    parser.add_argument("--store", choices=["memory", "rocksdb"], default="rocksdb")
    parser.add_argument(
        "--latency-rate", type=float, default=0.0, help="events/s for the latency run (0: skip)"
    )
    parser.add_argument("--faust-events", type=int, default=20_000, help="0: skip Faust")
    parser.add_argument("--pure-only", action="store_true", help="skip the Kafka runs")
    parser.add_argument(
        "--kafka-only",
        action="store_true",
        help="the kafka engine and the transactional copy loop only (no Faust, no pure path)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the decision path")
    parser.add_argument(
        "--profile-engine", action="store_true", help="cProfile the kafka engine in-process, only"
    )
    args = parser.parse_args()

    settings = load_settings(ROOT / "eventsieve.toml")
    settings = settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update={"partitions": args.partitions}),
            "kafka": KafkaSettings(bootstrap_servers=kafka_bootstrap(settings)),
        }
    )
    print(f"load average at start: {load_average()}")
    recs = records(args.events, args.partitions, args.seed)
    if args.profile_engine:
        profile_engine(settings, recs)
        return
    if args.kafka_only:
        end_to_end(settings, recs, args.store, "kafka")
        copy_loop(kafka_bootstrap(settings), recs, transactional=True)
        print(f"load average at the end: {load_average()}")
        return
    pure(settings, recs, profile=False)
    if args.profile:
        pure(settings, recs, profile=True)
    state_cost(settings, recs[: min(len(recs), 50_000)])
    if args.pure_only:
        return
    bootstrap = kafka_bootstrap(settings)
    end_to_end(settings, recs, args.store, "kafka")
    if args.faust_events:
        end_to_end(settings, recs[: args.faust_events], args.store, "faust")
        faust_floor(args.faust_events)
    if args.latency_rate:
        latency(settings, recs[: int(args.latency_rate * 20)], args.latency_rate, args.store)
    copy_loop(bootstrap, recs, transactional=False)
    copy_loop(bootstrap, recs, transactional=True)
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
