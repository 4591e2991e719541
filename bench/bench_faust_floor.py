"""What Faust itself costs here: a bare copy agent, no rules, no state.

Run: ``.venv/bin/python bench/bench_faust_floor.py [--records 30000]``.

The stream worker (bench_streams.py) cannot be faster than faust-streaming
moving records through one agent: this runs the minimal app of the smoke test
(tests/integration/foundation/faust_copy_app.py: consume, send to another
topic) as a worker process over N records of 500 bytes on 6 partitions and
prints its steady-state rate. Kafka: KAFKA_BOOTSTRAP_SERVERS, else the local
stack. Topics are removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from eventsieve.config import load_settings
from eventsieve.kafka import ensure_topics
from eventsieve.services import kafka_bootstrap

ROOT = Path(__file__).resolve().parent.parent
COPY_APP = ROOT / "tests" / "integration" / "foundation" / "faust_copy_app.py"


def main() -> None:
    parser = argparse.ArgumentParser(description="faust-streaming's own floor on this machine")
    parser.add_argument("--records", type=int, default=30_000)
    args = parser.parse_args()
    bootstrap = kafka_bootstrap(load_settings(ROOT / "eventsieve.toml"))
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench.faust.{tag}.in", f"bench.faust.{tag}.out"
    ensure_topics(bootstrap, [source, sink], 6, 1)
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.records:,} records")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(args.records):
        producer.produce(source, key=f"user-{i % 500}".encode(), value=b"x" * 500)
    producer.flush(60)
    env = {
        **os.environ,
        "SMOKE_APP_ID": f"bench-faust-{tag}",
        "SMOKE_BOOTSTRAP": bootstrap,
        "SMOKE_SOURCE": source,
        "SMOKE_SINK": sink,
    }
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-faust-{tag}-reader",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    reader.subscribe([sink])
    with tempfile.TemporaryDirectory() as datadir:
        worker = subprocess.Popen(
            [sys.executable, str(COPY_APP), f"--datadir={datadir}", "worker", "--loglevel=warn"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen, first_batch, started = 0, 0, 0.0
            deadline = time.monotonic() + 600
            while seen < args.records and time.monotonic() < deadline:
                batch = [m for m in reader.consume(1_000, 1.0) if m.error() is None]
                if batch and not started:
                    started, first_batch = time.monotonic(), len(batch)
                seen += len(batch)
            elapsed = time.monotonic() - started
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
            reader.close()
    rate = (seen - first_batch) / elapsed if elapsed > 0 else 0.0
    print(f"bare Faust copy agent: {seen:,} records copied, steady state {rate:,.0f} records/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([source, sink]).values():
        future.result(30)


if __name__ == "__main__":
    main()
