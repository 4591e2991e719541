"""Sink throughput: a pre-filled ``events.clean`` topic into ClickHouse, and its ceiling.

Fills a fresh topic with N CleanEvents (Avro, realistic field sizes) once,
then, in one run:

- runs the sink's writer (the same code as ``eventsieve sink``) with 1 and
  with 2 processes of one consumer group, each time into a fresh database,
  and measures rows/s from the first partition assignment to the moment every
  record is committed (i.e. acknowledged by ClickHouse);
- measures each stage alone on one batch, single-threaded: Kafka consume,
  decode, building the columns, the insert;
- measures the ceiling on this machine: the same rows, exported from the
  sink's table in ClickHouse's Native format to a file, inserted by
  ``clickhouse-client`` into a fresh copy of the same table (blocks of the
  sink's batch size).

    .venv/bin/python bench/bench_sink.py                    # 300k events; 1 and 2 processes
    .venv/bin/python bench/bench_sink.py -n 500000 -p 1,2,3
    .venv/bin/python bench/bench_sink.py --profile          # cProfile of one in-process run

Uses the local stack (``eventsieve stack up``) or KAFKA_BOOTSTRAP_SERVERS /
CLICKHOUSE_URL; the ceiling needs ``clickhouse-client`` on PATH (Debian's
``clickhouse-client`` package). Creates its own topics and databases and
deletes them after. Other work on the machine skews the figures: the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import multiprocessing
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from eventsieve.config import ClickHouseSettings, KafkaSettings, Settings, load_settings
from eventsieve.kafka import ensure_topics, sink_consumer_config
from eventsieve.logging import configure_logging
from eventsieve.services import clickhouse_url, kafka_bootstrap
from schemas import registry
from schemas.codecs import decode_clean, encode_clean
from schemas.columns import DECODE_CHUNK, ColumnDecoder, decoder
from schemas.events import clean_event, new_raw_event
from sinks import queries
from sinks.blocks import Revenue, add_profiles, events_block, suspects
from sinks.clickhouse import ClickHouse
from sinks.ddl import EVENT_COLUMNS
from sinks.metrics import SinkMetrics
from sinks.migrate import migrate
from sinks.rows import Batch, Decision
from sinks.service import build_writer, tune_gc, tune_malloc

T0 = 1_764_288_000_000


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


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


class Committed:
    """The group's committed offsets, summed over the topic's partitions."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def __call__(self) -> int:
        return sum(max(tp.offset, 0) for tp in self.consumer.committed(self.tps, timeout=10))

    def close(self) -> None:
        self.consumer.close()


def run_writer(settings: Settings, stop: Any, shared: Any, index: int) -> None:
    """One sink process: the writer of ``eventsieve sink``; notes its first assignment,
    and at the end the event rows it wrote and the CPU seconds it used since that
    assignment (start-up, imports and the decoder's compilation left out)."""
    configure_logging("WARNING")
    tune_gc()  # as run_sink does
    tune_malloc()
    metrics = SinkMetrics()
    writer = build_writer(settings, metrics)
    on_assign = writer._on_assign
    assigned, rows, cpu, ready, go = shared
    ready[index] = 1.0
    go.wait()  # all processes join the group together, so they share from the start
    cpu_at_assign = [0.0]

    def note(consumer: Any, partitions: list[Any]) -> None:
        if not assigned[index]:
            assigned[index] = time.time()
            cpu_at_assign[0] = cpu_seconds()
        on_assign(consumer, partitions)

    writer._on_assign = note  # type: ignore[method-assign]
    writer.run(stop)
    rows[index] = metrics.rows_written.labels("events")._value.get()
    cpu[index] = cpu_seconds() - cpu_at_assign[0]


def cpu_seconds() -> float:
    """CPU seconds of this process so far (every thread, user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settings_for(
    base: Settings,
    bootstrap: str,
    topic: str,
    database: str,
    group: str,
    partitions: int,
    batch: int,
) -> Settings:
    return base.model_copy(
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
                    "partitions": partitions,
                }
            ),
            "sink": base.sink.model_copy(update={"group_id": group, "batch_max_rows": batch}),
        }
    )


def sink_run(settings: Settings, processes: int, n: int) -> tuple[float, float, str]:
    """``(rows/s from the first assignment to the last commit, wall seconds, per process)``."""
    # spawn, not fork: librdkafka is not fork-safe, and this process runs Kafka
    # clients already (a forked sink could hang in Consumer.close()).
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    go = ctx.Event()
    shared = (*(ctx.Array("d", processes) for _ in range(4)), go)
    assigned, rows, cpu, ready, _go = shared
    workers = [
        ctx.Process(target=run_writer, args=(settings, stop, shared, i), daemon=True)
        for i in range(processes)
    ]
    committed = Committed(
        settings.kafka.bootstrap_servers or "",
        settings.sink.group_id,
        settings.topics.clean,
        settings.topics.partitions,
    )
    started = time.time()
    try:
        for w in workers:
            w.start()
        while not all(ready):
            time.sleep(0.05)
        go.set()
        while committed() < n:
            time.sleep(0.05)
        ended = time.time()
    finally:
        stop.set()
        for w in workers:
            w.join(30)
            if w.is_alive():
                print("a sink process did not stop within 30 s: killed", flush=True)
                w.kill()
        committed.close()
    first = min(t for t in assigned if t) if any(assigned) else started
    each = " + ".join(
        f"{r:,.0f} rows in {c:.2f} CPU s ({c / max(r, 1) * 1e6:.1f} µs a row)"
        for r, c in zip(rows, cpu, strict=True)
    )
    return n / (ended - first), ended - started, each


def export_native(url: str, database: str, path: Path) -> None:
    columns = ", ".join(name for name, _ in EVENT_COLUMNS)
    with path.open("wb") as out:
        subprocess.run(
            [
                *client_args(url),
                "--query",
                f"SELECT {columns} FROM {database}.events FORMAT Native",
            ],
            stdout=out,
            check=True,
        )


def client_args(url: str) -> list[str]:
    parts = urlparse(url)
    args = ["clickhouse-client", "--host", parts.hostname or "127.0.0.1"]
    args += ["--port", str(parts.port or 9000), "--user", parts.username or "default"]
    if parts.password:
        args += ["--password", parts.password]
    return args


def ceiling(url: str, database: str, path: Path, rows: int, batch: int) -> float:
    """rows/s of ``clickhouse-client`` inserting the Native file into a fresh ``events``."""
    target = ClickHouse(url, database)
    try:
        migrate(target)
        columns = ", ".join(name for name, _ in EVENT_COLUMNS)
        with path.open("rb") as data:
            t = time.perf_counter()
            subprocess.run(
                [
                    *client_args(url),
                    f"--max_insert_block_size={batch}",
                    "--query",
                    f"INSERT INTO {database}.events ({columns}) FORMAT Native",
                ],
                stdin=data,
                check=True,
            )
            elapsed = time.perf_counter() - t
        inserted = target.scalar(f"SELECT count() FROM {database}.events")
        assert inserted == rows, (inserted, rows)
        return rows / elapsed
    finally:
        target.execute(f"DROP DATABASE IF EXISTS {database}")
        target.close()


def stages(
    settings: Settings, n: int, ch: ClickHouse, cpu_per_row: dict[str, float]
) -> dict[str, float]:
    """Per-stage throughput (rows/s) on one batch of n events, single-threaded; the
    CPU seconds per row of the stages that run on this thread only go to ``cpu_per_row``
    (steadier than rates when other work shares the machine).

    The sink's own path: Kafka consume, columnar decode, the events block,
    the insert; and for comparison the one-by-one path every unusual record
    takes (decode to a dict, then a row).
    """
    consumer = Consumer(
        sink_consumer_config(
            settings.kafka.bootstrap_servers or "", f"stage-{uuid.uuid4().hex[:8]}"
        )
    )
    consumer.subscribe([settings.topics.clean])
    values: list[bytes] = []
    t = 0.0
    while len(values) < n:
        got = consumer.consume(5_000, 1.0)
        if not values and got:
            t = time.perf_counter()  # from the first record: the group join is not the stage
        values += [m.value() for m in got if m.error() is None]
    consume = len(values) / (time.perf_counter() - t)
    consumer.close()
    values = values[:n]
    columns = decoder(registry.CLEAN_EVENT)
    current = registry.current(registry.CLEAN_EVENT)
    passes = ColumnDecoder(current.schema, b"\xc3\x01" + current.fingerprint, compiled=False)
    chunks = [values[i : i + DECODE_CHUNK] for i in range(0, n, DECODE_CHUNK)]
    # As the writer does: a few thousand records at a time (in cache), each
    # chunk's block kept, its decoded columns dropped. A first round, not
    # timed, brings the heap to its size in a running sink.
    timed: dict[str, list[float]] = {}
    for rounds in (1, 2):
        timed = {key: [0.0, 0.0] for key in ("decode", "numpy", "block")}
        blocks: list[Any] = []
        profiles = Batch()
        for chunk in chunks:
            with _timing(timed["numpy"]):
                passes.decode(chunk)
            with _timing(timed["decode"]):
                batch = columns.decode(chunk)
            with _timing(timed["block"]):
                revenue = Revenue(batch)
                assert not suspects(batch, Decision.ACCEPTED, revenue).any()
                blocks.append(events_block(batch, Decision.ACCEPTED, revenue))
                add_profiles(batch, profiles)
            del batch
        if rounds == 1:
            del blocks
    decode, decode_numpy, build = (n / timed[key][0] for key in ("decode", "numpy", "block"))
    cpu_per_row["compiled decode"] = timed["decode"][1] / n
    cpu_per_row["numpy-pass decode"] = timed["numpy"][1] / n
    cpu_per_row["events block"] = timed["block"][1] / n
    t = time.perf_counter()
    ch.insert_blocks("events", blocks)
    insert = n / (time.perf_counter() - t)
    sample = values[: min(n, 10_000)]
    t = time.perf_counter()
    rows = Batch()
    for value in sample:
        rows.add(decode_clean(value), Decision.ACCEPTED)
    one_by_one = len(sample) / (time.perf_counter() - t)
    return {
        "consume": consume,
        "columnar decode": decode,
        "(numpy passes instead of the compiled loop)": decode_numpy,
        "events block": build,
        "insert": insert,
        "one-by-one decode+row (unusual records)": one_by_one,
    }


@contextlib.contextmanager
def _timing(into: list[float]) -> Iterator[None]:
    """Adds the wall and this thread's CPU seconds of the block to ``into``."""
    wall, cpu = time.perf_counter(), time.thread_time()
    yield
    into[0] += time.perf_counter() - wall
    into[1] += time.thread_time() - cpu


def profile(settings: Settings, n: int) -> None:
    """cProfile of the writer in this process until n records are committed."""
    stop = threading.Event()
    committed = Committed(
        settings.kafka.bootstrap_servers or "",
        settings.sink.group_id,
        settings.topics.clean,
        settings.topics.partitions,
    )

    def watch() -> None:
        while committed() < n:
            time.sleep(0.1)
        stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    tune_gc()
    tune_malloc()
    writer = build_writer(settings, SinkMetrics())
    profiler = cProfile.Profile()
    profiler.enable()
    writer.run(stop)
    profiler.disable()
    committed.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    print(out.getvalue())


def measure(args: argparse.Namespace, bench: Bench) -> None:
    """Every figure of one run, printed as it comes."""
    first_db = ""
    for index, processes in enumerate(int(p) for p in args.processes.split(",")):
        run = bench.settings(f"r{index}p{processes}")
        first_db = first_db or run.clickhouse.database
        target = ClickHouse(bench.ch_url, run.clickhouse.database)
        migrate(target)
        rate, wall, each = sink_run(run, processes, args.events)
        rows = target.scalar(f"SELECT uniqExact(event_id) FROM {target.database}.events")
        target.close()
        print(
            f"sink, {processes} process(es), batch {args.batch:,}: {rate:,.0f} rows/s "
            f"({args.events:,} rows; {wall:.1f}s wall with start and group join; "
            f"{rows:,} distinct event ids; {each}); load {load()}"
        )

    target = ClickHouse(bench.ch_url, first_db)
    span = queries.TimeRange(
        dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    )
    t = time.perf_counter()
    result = queries.project_stats(target, "project-0", span)
    print(
        f"stats of one project ({result.accepted:,} events, exact, unmerged parts): "
        f"{(time.perf_counter() - t) * 1000:.0f} ms"
    )

    if shutil.which("clickhouse-client"):
        native = bench.workdir / "events.native"
        export_native(bench.ch_url, first_db, native)
        size = native.stat().st_size
        for attempt in (1, 2):
            database = bench.database(f"ceiling{attempt}")
            rate = ceiling(bench.ch_url, database, native, args.events, args.batch)
            print(
                f"ceiling, clickhouse-client Native from a file ({size / 1e6:.0f} MB), "
                f"try {attempt}: {rate:,.0f} rows/s; load {load()}"
            )
    else:
        print("ceiling: clickhouse-client not on PATH, not measured")

    tune_malloc()  # the stages run the sink's code: in its memory settings
    cpu_per_row: dict[str, float] = {}
    per_stage = stages(bench.settings("stages"), min(args.batch, args.events), target, cpu_per_row)
    target.close()
    print(
        "single-threaded stages (rows/s): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in per_stage.items())
        + f"; load {load()}"
    )
    print(
        "CPU per row of the stages on one thread: "
        + ", ".join(f"{k} {v * 1e6:.2f} µs" for k, v in cpu_per_row.items())
    )


class Bench:
    """The run's names (topic, databases, groups) and what to remove at the end."""

    def __init__(self, base: Settings, partitions: int, batch: int) -> None:
        self.base = base
        self.partitions = partitions
        self.batch = batch
        self.bootstrap = kafka_bootstrap(base)
        self.ch_url = clickhouse_url(base, "default")
        self.run_id = uuid.uuid4().hex[:8]
        self.topic = f"bench.sink.{self.run_id}.events.clean"
        self.topics = [self.topic, self.topic.replace("clean", "dropped"), self.topic + ".dlq"]
        self.databases: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-sink-"))

    def database(self, tag: str) -> str:
        name = f"bench_sink_{self.run_id}_{tag}"
        self.databases.append(name)
        return name

    def settings(self, tag: str) -> Settings:
        return settings_for(
            self.base,
            self.bootstrap,
            self.topic,
            self.database(tag),
            f"bench-{self.run_id}-{tag}",
            self.partitions,
            self.batch,
        )

    def clean_up(self) -> None:
        ch = ClickHouse(self.ch_url, "default")
        for database in self.databases:
            ch.execute(f"DROP DATABASE IF EXISTS {database}")
        ch.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # alive until the results
        futures = admin.delete_topics(self.topics, operation_timeout=30)
        for future in futures.values():
            with contextlib.suppress(Exception):
                future.result(timeout=60)


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # figures show up as they come
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--events", type=int, default=300_000)
    parser.add_argument(
        "-p", "--processes", default="1,2", help="comma-separated process counts to run"
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true", help="cProfile one in-process run")
    args = parser.parse_args()
    configure_logging("WARNING")

    bench = Bench(load_settings(), args.partitions, args.batch)
    ensure_topics(bench.bootstrap, bench.topics, args.partitions)
    try:
        print(f"load average before: {load()}")
        fill_s = fill(bench.bootstrap, bench.topic, args.events)
        print(f"filled {args.events:,} events in {fill_s:.1f}s ({args.events / fill_s:,.0f}/s)")
        if args.profile:
            one = bench.settings("profile")
            migrate(ClickHouse(bench.ch_url, one.clickhouse.database))
            profile(one, args.events)
        else:
            measure(args, bench)
    finally:
        bench.clean_up()


if __name__ == "__main__":
    main()
