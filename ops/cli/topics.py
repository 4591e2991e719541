"""``eventsieve tail`` and ``eventsieve publish``: read and write eventsieve topics by hand.

``tail TOPIC`` prints each record as one JSON line (topic, partition, offset,
key, timestamp, format, value), whatever it was written in: Avro of any
eventsieve schema (found by fingerprint), JSON (on the raw topic: checked as a
RawEvent, as the stream will see it), or, when undecodable, the error and
the value in base64.

``publish FILE|-`` reads JSON-lines RawEvents, checks every line first (an
error anywhere publishes nothing), then writes them to ``events.raw`` as Avro
single-object encoding, keyed ``project:user_key``, with an event id for
each event that has none. It prints one JSON line per event: event id, key,
partition, offset.

The deciding parts (``view_record``, ``prepare_events``) are pure; the
commands only add confluent-kafka I/O around them.
"""

from __future__ import annotations

import base64
import datetime
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
import typer
from confluent_kafka import Consumer, KafkaError, Producer

from eventsieve.config import Settings
from eventsieve.errors import EventsieveError, ServiceError
from eventsieve.kafka import (
    durable_producer_config,
    produce_when_room,
    reader_config,
    record_offset,
    record_partition,
    record_topic,
)
from eventsieve.services import kafka_bootstrap
from ops.cli.context import settings_of
from producers.salts import KafkaDailySalts, SaltSource
from schemas import (
    DecodeError,
    RawEvent,
    decode_any,
    decode_raw,
    derived_event_id,
    encode_raw,
    new_event_id,
    now_ms,
    topic_key,
    user_key,
)
from schemas.canonical import visitor_domain, visitor_id_with
from schemas.topology import salts_topic

MAX_REPORTED_ERRORS = 20  # enough to fix a file in one pass without flooding the terminal


class InvalidInputError(EventsieveError):
    """Lines of a ``publish`` input that are not valid events; nothing was published.

    ``problems`` is a list of ``(line number, message)``.
    """

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        total = len(problems)
        shown = "\n".join(f"  line {n}: {msg}" for n, msg in problems[:MAX_REPORTED_ERRORS])
        more = total - min(total, MAX_REPORTED_ERRORS)
        tail = f"\n  ... and {more} more" if more else ""
        super().__init__(f"{total} invalid line(s) in {source}, nothing published:\n{shown}{tail}")


# --- tail -----------------------------------------------------------------------------------


def view_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    timestamp_ms: int | None,
    json_as_raw: bool,
) -> dict[str, Any]:
    """The JSON-able view of one Kafka record, decoded whatever its format.

    ``json_as_raw``: decode JSON values as RawEvents, as the stream does on
    the raw topic (defaults applied, event id derived from the position).
    """
    view: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else key.decode("utf-8", "backslashreplace"),
        "timestamp": timestamp_ms,
    }
    if value is None:
        return view | {"format": "null", "value": None}
    try:
        if value[:1] == b"\xc3":
            schema, record = decode_any(value)
            return view | {"format": f"avro:{schema}", "value": record}
        if json_as_raw:
            raw = decode_raw(
                value,
                event_id=derived_event_id(topic, partition, offset),
                received_at=timestamp_ms,
            )
            return view | {"format": "json:raw_event", "value": raw}
        return view | {"format": "json", "value": orjson.loads(value)}
    except (DecodeError, orjson.JSONDecodeError) as exc:
        code = getattr(exc, "code", "not_json")
        return view | {
            "format": "undecodable",
            "error": f"{code}: {exc}",
            "value_base64": base64.b64encode(value).decode(),
        }


def _json_line(view: dict[str, Any]) -> bytes:
    return orjson.dumps(view, default=_bytes_as_base64) + b"\n"


def _bytes_as_base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to read, e.g. events.raw, events.dlq.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record, not the newest.")
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many records.")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--idle-timeout", min=0.1, help="Stop after this many seconds without a record."
        ),
    ] = None,
    raw_events: Annotated[
        bool | None,
        typer.Option(
            "--raw-events/--plain-json",
            help="Check JSON values as RawEvents (default: only on the raw topic).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the records of a topic as JSON lines (key, partition, offset, value)."""
    settings = settings_of(ctx)
    as_raw = topic == settings.topics.raw if raw_events is None else raw_events
    out = sys.stdout.buffer
    for view in _tail(settings, topic, from_beginning, max_records, idle_timeout, as_raw):
        out.write(_json_line(view))
        out.flush()


def _tail(
    settings: Settings,
    topic: str,
    from_beginning: bool,
    max_records: int | None,
    idle_timeout: float | None,
    json_as_raw: bool,
) -> Iterator[dict[str, Any]]:
    consumer = Consumer(
        reader_config(
            kafka_bootstrap(settings),
            f"eventsieve-tail-{uuid.uuid4().hex[:12]}",
            **{
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "client.id": "eventsieve-tail",
            },
        )
    )
    seen = 0
    idle = 0.0
    poll_s = 0.25
    try:
        consumer.subscribe([topic])
        while max_records is None or seen < max_records:
            msg = consumer.poll(poll_s)
            if msg is None:
                idle += poll_s
                if idle_timeout is not None and idle >= idle_timeout:
                    return
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise ServiceError(f"reading {topic}: {error}")
            idle = 0.0
            seen += 1
            ts_type, ts = msg.timestamp()
            yield view_record(
                topic=record_topic(msg),
                partition=record_partition(msg),
                offset=record_offset(msg),
                key=msg.key(),
                value=msg.value(),
                timestamp_ms=ts if ts_type else None,
                json_as_raw=json_as_raw,
            )
    except KeyboardInterrupt:
        return
    finally:
        consumer.close()


# --- publish --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One event ready to produce: its key, its Avro value, and the event."""

    key: bytes
    value: bytes
    event: RawEvent


def prepare_events(
    lines: Iterable[bytes],
    settings: Settings,
    *,
    salts: SaltSource | None = None,
    received_at: int | None = None,
    source: str = "input",
) -> list[Prepared]:
    """Parse and check JSON-lines events; raise InvalidInputError listing every bad line.

    Blank lines are skipped. Each event gets an ``event_id`` when it has none,
    ``received_at`` (now) when it has none, a ``visitor_id`` when it names no
    user but has an IP (as the endpoint would: under the random salt of the
    receive day, from ``salts``), and the key ``project:user_key``. When
    projects are configured, the project must be one of them.
    """
    now = now_ms() if received_at is None else received_at
    known = {p.id for p in settings.projects}
    prepared: list[Prepared] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = decode_raw(line, event_id=new_event_id(), received_at=now)
        except DecodeError as exc:
            problems.append((number, str(exc)))
            continue
        if known and event["project"] not in known:
            problems.append(
                (
                    number,
                    f"unknown project {event['project']!r} (known: {', '.join(sorted(known))})",
                )
            )
            continue
        if not event["name"].strip():
            problems.append((number, "empty event name"))
            continue
        who = user_key(event)
        if not who and event["ip"]:
            day = datetime.datetime.fromtimestamp(event["received_at"] / 1000, datetime.UTC).date()
            salt = salts.salt(day) if salts is not None else None
            if salt is None:
                problems.append(
                    (
                        number,
                        f"no visitor-id salt for {day} (each day's salt is deleted after 48 h): "
                        "give the event a user_id or anonymous_id",
                    )
                )
                continue
            domain = visitor_domain(event["domain"], event["url"], event["project"])
            event["visitor_id"] = who = visitor_id_with(
                salt, event["ip"], event["user_agent"] or "", domain
            )
        key = topic_key(event["project"], who).encode()
        prepared.append(Prepared(key, encode_raw(event), event))
    if problems:
        raise InvalidInputError(source, problems)
    return prepared


def publish(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="JSON-lines file of events, or - for stdin.")],
    topic: Annotated[
        str | None, typer.Option("--topic", help="Topic to write to (default: the raw topic).")
    ] = None,
) -> None:
    """Write JSON-lines events to events.raw as Avro (validated, keyed, with event ids)."""
    settings = settings_of(ctx)
    lines = _read_lines(source)
    with _salts_on_demand(settings) as salts:
        prepared = prepare_events(
            lines, settings, salts=salts, source="stdin" if source == "-" else source
        )
    target = topic or settings.topics.raw
    out = sys.stdout.buffer
    for report in _produce(settings, target, prepared):
        out.write(orjson.dumps(report) + b"\n")
    out.flush()
    typer.echo(f"published {len(prepared)} event(s) to {target}", err=True)


class _SaltsOnDemand:
    """The endpoint's daily salts (``producers.salts``), read only if an event needs one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: KafkaDailySalts | None = None

    def salt(self, day: datetime.date) -> bytes | None:
        if self.store is None:
            self.store = KafkaDailySalts(
                kafka_bootstrap(self.settings),
                salts_topic(self.settings.topics.raw),
                self.settings.privacy.salt_secret.get_secret_value(),
            )
            self.store.start()
            if not self.store.wait_ready(30):
                raise ServiceError(
                    f"no visitor-id salt from {salts_topic(self.settings.topics.raw)} in 30 s"
                )
        return self.store.salt(day)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


@contextmanager
def _salts_on_demand(settings: Settings) -> Iterator[_SaltsOnDemand]:
    salts = _SaltsOnDemand(settings)
    try:
        yield salts
    finally:
        salts.close()


def _read_lines(source: str) -> list[bytes]:
    if source == "-":
        stream: BinaryIO = sys.stdin.buffer
        return stream.read().splitlines()
    path = Path(source)
    try:
        return path.read_bytes().splitlines()
    except OSError as exc:
        raise EventsieveError(f"cannot read {source}: {exc.strerror}") from None


def _produce(settings: Settings, topic: str, prepared: list[Prepared]) -> list[dict[str, Any]]:
    producer = Producer(
        durable_producer_config(
            kafka_bootstrap(settings),
            **{"message.timeout.ms": 30_000, "client.id": "eventsieve-publish"},
        )
    )
    reports: list[dict[str, Any]] = [{} for _ in prepared]
    failures: list[str] = []

    def delivered(index: int) -> Any:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))
                return
            reports[index] = {
                "event_id": prepared[index].event["event_id"],
                "key": prepared[index].key.decode(),
                "partition": msg.partition(),
                "offset": msg.offset(),
            }

        return callback

    for index, item in enumerate(prepared):
        produce_when_room(
            producer, topic, value=item.value, key=item.key, on_delivery=delivered(index)
        )
        producer.poll(0)
    remaining = producer.flush(35)
    if failures or remaining:
        detail = failures[0] if failures else f"{remaining} record(s) not acknowledged in time"
        raise ServiceError(f"publishing to {topic} failed: {detail}")
    return reports


def register(app: typer.Typer) -> None:
    app.command("tail")(tail)
    app.command("publish")(publish)
