"""Cold starts: a worker started on fresh topics decides every record, every time.

Run by hand (not part of ``make test``), with the local stack's Kafka up::

    .venv/bin/python bench/cold_starts.py                      # 50 starts per engine
    .venv/bin/python bench/cold_starts.py --starts 5 --engine faust

Each start gets topics, a consumer group and a data directory of its own.
Only ``events.raw`` exists when the worker starts, already holding the
records, as when a publisher writes before any worker ran: the worker
creates the rest (orders, re-key and changelog topics). The records include
order confirmations, so the order path and its state are exercised from the
first second. A start passes when every record is decided (clean, dropped
or DLQ) within ``--timeout`` seconds with the worker still running.

Prints one line per start (seconds to the first and to the last decision)
and a summary with the load average; exits 1 if any start failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from eventsieve.config import Settings, load_settings, settings_environment
from eventsieve.kafka import admin_client, ensure_topics
from eventsieve.services import kafka_bootstrap
from schemas.canonical import topic_key
from schemas.codecs import decode_clean, decode_dlq, decode_dropped, encode_raw
from schemas.events import new_raw_event
from streams.partitioning import partition_for

ROOT = Path(__file__).resolve().parent.parent
EVENTSIEVE = Path(sys.executable).with_name("eventsieve")


def fresh_settings(base: Settings, engine: str) -> Settings:
    prefix = f"cold.{uuid.uuid4().hex[:10]}."
    topics = base.topics.model_copy(
        update={
            name: prefix + f"events.{name}" for name in ("raw", "orders", "clean", "dropped", "dlq")
        }
    )
    streams = base.streams.model_copy(
        update={"engine": engine, "app_id": prefix + "worker", "metrics_port": 0}
    )
    return base.model_copy(update={"topics": topics, "streams": streams})


def records(settings: Settings, count: int) -> dict[str, tuple[int, bytes, bytes]]:
    """``count`` events by event id, a fifth of them confirmations sharing order ids."""
    partitions = settings.topics.partitions
    out = {}
    for i in range(count):
        user = f"cold-user-{i % 37}"
        if i % 5 == 0:
            event = new_raw_event(
                project="demo",
                name="confirmation",
                user_id=user,
                properties={"orderId": f"order-{i % 15}"},
            )
        else:
            event = new_raw_event(project="demo", name=f"Report {i}", user_id=user)
        key = topic_key("demo", user).encode()
        out[event["event_id"]] = (partition_for(key, partitions), key, encode_raw(event))
    return out


def publish(settings: Settings, events: dict[str, tuple[int, bytes, bytes]]) -> None:
    bootstrap = kafka_bootstrap(settings)
    topics = settings.topics
    ensure_topics(bootstrap, [topics.raw], topics.partitions, topics.replication_factor)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition, key, value in events.values():
        producer.produce(topics.raw, key=key, value=value, partition=partition)
    if producer.flush(30):
        raise RuntimeError("records not published")


def decided_ids(consumer: Consumer, settings: Settings, seen: set[str]) -> None:
    topics = settings.topics
    for message in consumer.consume(1000, 0.5):
        if message.error() is not None:
            continue
        topic, value = message.topic(), message.value()
        if topic == topics.clean:
            seen.add(decode_clean(value)["event_id"])
        elif topic == topics.dropped:
            seen.add(decode_dropped(value)["event_id"])
        else:  # every record here is valid: a DLQ entry is a failure
            dlq = decode_dlq(value)
            seen.add(f"dlq:{dlq['topic']}/{dlq['partition']}/{dlq['offset']}: {dlq['error']}")


def one_start(base: Settings, engine: str, count: int, timeout: float) -> tuple[bool, str]:
    settings = fresh_settings(base, engine)
    events = records(settings, count)
    publish(settings, events)
    data = Path(tempfile.mkdtemp(prefix="cold-start-"))
    env = {
        **os.environ,
        **settings_environment(settings),
        "EVENTSIEVE_STREAMS__DATA_DIR": str(data),
        "EVENTSIEVE_LOG_FORMAT": "json",
    }
    log_path = data / "worker.log"
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(settings),
            "group.id": f"cold-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    t = settings.topics
    consumer.subscribe([t.clean, t.dropped, t.dlq])
    started = time.monotonic()
    first: float | None = None
    seen: set[str] = set()
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [str(EVENTSIEVE), "worker", "--loglevel", "warning"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while len(seen & events.keys()) < len(events):
            if worker.poll() is not None:
                return False, f"worker exited ({worker.returncode}): {_tail(log_path)}"
            if time.monotonic() - started > timeout:
                return False, f"{len(seen & events.keys())}/{len(events)} decided in {timeout}s"
            decided_ids(consumer, settings, seen)
            if dlq := sorted(i for i in seen if i.startswith("dlq:")):
                return False, f"valid records sent to the DLQ: {dlq[:3]}"
            if seen and first is None:
                first = time.monotonic() - started
        last = time.monotonic() - started
        return True, f"first decision {first:.1f}s, all {len(events)} {last:.1f}s"
    finally:
        worker.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(30)
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        consumer.close()
        _delete_topics(settings)
        shutil.rmtree(data, ignore_errors=True)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:]


def _delete_topics(settings: Settings) -> None:
    admin = admin_client(kafka_bootstrap(settings))
    prefix = settings.topics.raw.removesuffix("events.raw")
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=50)
    parser.add_argument("--engine", choices=["kafka", "faust", "both"], default="both")
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--config", type=Path, default=ROOT / "eventsieve.toml")
    args = parser.parse_args()
    base = load_settings(args.config)
    engines = ["kafka", "faust"] if args.engine == "both" else [args.engine]
    failures = 0
    for engine in engines:
        passed = 0
        for n in range(1, args.starts + 1):
            ok, detail = one_start(base, engine, args.records, args.timeout)
            passed += ok
            failures += not ok
            print(f"{engine} start {n:2d}: {'ok  ' if ok else 'FAIL'} {detail}", flush=True)
        print(f"{engine}: {passed}/{args.starts} cold starts decided every record")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
