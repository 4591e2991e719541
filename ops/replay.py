"""Replay, run against Kafka and ClickHouse: the thin I/O around ``streams.replay``.

One replay, in this order:

1. snapshot the raw topic: first and end offset of every partition (stored
   in the checkpoint, so a resumed run reads exactly the same records);
2. read ClickHouse's latest decision per event id in the range (for the
   report of what changes; the dry run stops its output here);
3. read every raw record up to the snapshot, in the order a fresh run
   decides them, through the ``Replayer``;
4. produce each in-range decision to ``events.clean``/``events.dropped``
   (acks=all, idempotent), skipping those a previous run of the same replay
   already had acknowledged;
5. every ``checkpoint_every`` outputs, and at the end, write the checkpoint
   with the acknowledged prefix; the last write marks it done.

The live worker is not involved: its consumer group, offsets and state are
untouched, and it keeps deciding new records meanwhile. The sink stores the
replay's records like any others; ``decision_version`` ranks them above the
older decisions of the same events, so ClickHouse holds one latest row each.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from eventsieve.config import Settings
from eventsieve.errors import EventsieveError, ServiceUnavailableError
from eventsieve.kafka import (
    consumed_headers,
    durable_producer_config,
    produce_when_room,
    reader_config,
    record_offset,
    record_partition,
)
from eventsieve.services import kafka_bootstrap
from schemas.topology import rekey_topic
from sinks import queries
from sinks.clickhouse import ClickHouse
from sinks.errors import ClickHouseUnavailableError
from sinks.service import connect
from streams.partitioning import partition_for
from streams.processor import Output, Record, Sink
from streams.replay import (
    AckTracker,
    Checkpoint,
    ReplayCounts,
    Replayer,
    ReplayRange,
    TimeOrderedMerge,
    changes,
    checkpoint_key,
    label_of,
    record_label,
    rules_fingerprint,
)

Progress = Callable[[int, int], None]
"""Called with (raw records read, raw records in the snapshot) as the replay goes."""

# How many raw records one partition may hold in memory, waiting for the
# others to catch up in the time-ordered merge, before its reads pause.
MAX_BUFFERED = 50_000
PROGRESS_EVERY = 500  # records between progress calls: cheap, still smooth


class ReplayError(EventsieveError):
    """The replay cannot run or cannot go on (its checkpoint keeps what was done)."""


class ReplayInterrupted(ReplayError):
    """The replay stopped before the end; running it again resumes it."""


@dataclass(frozen=True)
class ReplayOptions:
    """How to run one replay. ``stop_after`` stops after that many outputs (tests)."""

    span: ReplayRange
    state_dir: Path
    dry_run: bool = False
    fresh: bool = False  # ignore an unfinished checkpoint of the same replay
    checkpoint_every: int = 20_000  # outputs between checkpoints
    stop_after: int | None = None
    progress: Progress | None = None
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


@dataclass
class ReplayReport:
    """What a replay did (or, dry, would do)."""

    span: ReplayRange
    snapshot: dict[int, tuple[int, int]]
    counts: ReplayCounts
    changes: list[tuple[str, str, int]]
    not_replayed: int  # in ClickHouse in the range, but not among the snapshot's records
    dry_run: bool
    resumed: bool = False
    produced: int = 0  # outputs produced by this run
    skipped: int = 0  # outputs an earlier run had produced and Kafka acknowledged
    checkpoint: Path | None = None
    decided_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # event id → new decision

    @property
    def changed(self) -> int:
        return sum(n for _, _, n in self.changes)


def run_replay(settings: Settings, options: ReplayOptions) -> ReplayReport:
    """Run (or dry-run) one replay; raise ``ReplayInterrupted`` if it stopped early."""
    span = options.span
    raw_topic = settings.topics.raw
    rules = rules_fingerprint(settings)
    key = checkpoint_key(span, raw_topic, rules)
    path = options.state_dir / f"replay-{key}.json"
    bootstrap = kafka_bootstrap(settings)
    # Never commits: the replay's position lives in its checkpoint.
    consumer = Consumer(
        reader_config(
            bootstrap, f"eventsieve-replay-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
    )
    try:
        checkpoint = None if options.fresh or options.dry_run else _load(path)
        resumed = checkpoint is not None and not checkpoint.done
        if checkpoint is None or checkpoint.done:
            checkpoint = Checkpoint(
                key=key,
                span=span.as_dict(),
                raw_topic=raw_topic,
                rules=rules,
                snapshot=snapshot_offsets(consumer, raw_topic),
                decided_at=int(options.now().timestamp() * 1000),
            )
        before = latest_decisions(settings, span)
        replayer = Replayer(
            settings, span, checkpoint.decided_at, rekey_topic=rekey_topic(settings)
        )
        report = ReplayReport(
            span=span,
            snapshot=checkpoint.snapshot,
            counts=replayer.counts,
            changes=[],
            not_replayed=0,
            dry_run=options.dry_run,
            resumed=resumed,
            skipped=checkpoint.acked,
            checkpoint=None if options.dry_run else path,
            decided_at=checkpoint.decided_at,
        )
        labels = report.labels
        emit = None if options.dry_run else _Emitter(settings, checkpoint, path, options)
        total = sum(end - first for first, end in checkpoint.snapshot.values())
        read = 0
        try:
            for record in read_snapshot(consumer, raw_topic, checkpoint.snapshot):
                decisions = replayer.feed(record)
                read += 1
                if options.progress is not None and read % PROGRESS_EVERY == 0:
                    options.progress(read, total)
                for decided in decisions:
                    record_label(labels, decided.event_id, decided.label)
                    if emit is not None:
                        emit.send(decided.output)
            if options.progress is not None:
                options.progress(read, total)
            if emit is not None:
                emit.finish()
        except KeyboardInterrupt:
            if emit is not None:
                emit.interrupt()
            raise ReplayInterrupted(
                f"interrupted; run the same command again to resume ({path})"
            ) from None
        report.produced = emit.produced if emit is not None else 0
        report.changes = changes(before, labels)
        report.not_replayed = sum(1 for event_id in before if event_id not in labels)
        return report
    finally:
        consumer.close()


class _Emitter:
    """Produces the replay's outputs in emission order and checkpoints the acked prefix."""

    def __init__(
        self, settings: Settings, checkpoint: Checkpoint, path: Path, options: ReplayOptions
    ) -> None:
        self.topics = {Sink.CLEAN: settings.topics.clean, Sink.DROPPED: settings.topics.dropped}
        self.partitions = {
            sink: _partition_count(settings, topic) for sink, topic in self.topics.items()
        }
        self.producer = Producer(
            durable_producer_config(kafka_bootstrap(settings), **{"linger.ms": 50})
        )
        self.checkpoint = checkpoint
        self.path = path
        self.options = options
        self.tracker = AckTracker(checkpoint.acked)
        self.index = 0  # emission index of the next output (counts skipped ones too)
        self.produced = 0
        self._save()

    def send(self, output: Output) -> None:
        index = self.index
        self.index += 1
        if index < self.checkpoint.acked:
            return  # acknowledged in an earlier run of this replay
        key = output.key or b""
        partition = partition_for(key, self.partitions[output.sink])  # as Faust places it
        produce_when_room(
            self.producer,
            self.topics[output.sink],
            value=output.value,
            key=output.key,
            partition=partition,
            on_delivery=self.tracker.callback(index),
        )
        self.producer.poll(0)
        self.produced += 1
        self._check_failed()
        if self.produced % self.options.checkpoint_every == 0:
            # Wait for the acks so the checkpoint moves a whole step (one
            # round trip per step: small next to producing the step).
            self.producer.flush(30)
            self._check_failed()
            self._save()
        if self.options.stop_after is not None and self.produced >= self.options.stop_after:
            # As if killed: what was handed over reaches Kafka, the checkpoint
            # keeps its last (older) prefix, so a resume produces some again.
            self.producer.flush(30)
            raise ReplayInterrupted(f"stopped after {self.produced} outputs")

    def finish(self) -> None:
        if self.producer.flush(60) != 0:
            self._save()
            raise ReplayError("Kafka did not acknowledge every replayed decision; run it again")
        self._check_failed()
        self.checkpoint.done = self.tracker.prefix >= self.index
        self._save()

    def interrupt(self) -> None:
        self.producer.flush(10)
        self._save()

    def _check_failed(self) -> None:
        if self.tracker.failed:
            self._save()
            index, error = self.tracker.failed[0]
            raise ReplayError(f"producing replayed decision #{index} failed: {error}")

    def _save(self) -> None:
        self.checkpoint.acked = self.tracker.prefix
        save_checkpoint(self.path, self.checkpoint)


def snapshot_offsets(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """First and end offset of every partition of ``topic``, now."""
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"Kafka does not answer: {exc}") from exc
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ReplayError(f"topic {topic!r} does not exist")
    out: dict[int, tuple[int, int]] = {}
    for partition in sorted(found.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        out[partition] = (low, high)
    return out


def read_snapshot(
    consumer: Consumer, topic: str, snapshot: dict[int, tuple[int, int]]
) -> Iterator[Record]:
    """Every record of ``topic`` below the snapshot's end offsets, in the fresh run's order."""
    merge = TimeOrderedMerge(snapshot)
    assigned: list[TopicPartition] = []
    for partition, (first, end) in snapshot.items():
        if first >= end:
            merge.finish(partition)
        else:
            assigned.append(TopicPartition(topic, partition, first))
    if not assigned:
        return
    consumer.assign(assigned)
    paused: set[int] = set()
    started: set[int] = set()
    while merge.open:
        for message in consumer.consume(1000, 1.0):
            partition = record_partition(message)
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if record_offset(message) >= snapshot[partition][1]:
                        _close(consumer, merge, topic, partition)
                    continue
                raise ReplayError(f"reading {topic}: {error}")
            offset = record_offset(message)
            first, end = snapshot[partition]
            if partition not in merge.open or offset >= end:
                continue
            if partition not in started:
                started.add(partition)
                if offset > first:
                    # Retention removed records of the snapshot: the run would not
                    # be the one the snapshot (and a checkpoint's count) describes.
                    raise ReplayError(
                        f"{topic}[{partition}] now starts at offset {offset}, after the "
                        f"snapshot's {first} (retention); start over with --fresh"
                    )
            _, timestamp = message.timestamp()
            merge.push(
                Record(
                    topic,
                    partition,
                    offset,
                    message.key(),
                    message.value(),
                    timestamp if timestamp and timestamp > 0 else None,
                    tuple(consumed_headers(message)),
                )
            )
            if offset + 1 >= end:
                _close(consumer, merge, topic, partition)
            elif merge.buffered(partition) >= MAX_BUFFERED and partition not in paused:
                consumer.pause([TopicPartition(topic, partition)])
                paused.add(partition)
        yield from merge.drain()
        for partition in list(paused):
            if merge.buffered(partition) < MAX_BUFFERED // 2 or partition in merge.waiting_for():
                consumer.resume([TopicPartition(topic, partition)])
                paused.discard(partition)
    yield from merge.drain()


def _close(consumer: Consumer, merge: TimeOrderedMerge, topic: str, partition: int) -> None:
    merge.finish(partition)
    consumer.pause([TopicPartition(topic, partition)])


def latest_decisions(settings: Settings, span: ReplayRange) -> dict[str, str]:
    """ClickHouse's latest decision per event id in the range (``accepted``/``dropped:<r>``)."""
    ch = connect(settings)
    try:
        return read_latest(ch, span)
    except ClickHouseUnavailableError as exc:
        raise ReplayError(f"reading the current decisions failed: {exc}") from exc
    finally:
        ch.close()


def read_latest(ch: ClickHouse, span: ReplayRange) -> dict[str, str]:
    """The latest decision per event id in the range, read through ``ch``."""
    rows = queries.latest_decisions(ch, span.start_s, span.end_s, span.project)
    return {event_id: label_of(d, r) for event_id, d, r in rows}


def load_checkpoint(path: Path) -> Checkpoint | None:
    return _load(path)


def _load(path: Path) -> Checkpoint | None:
    try:
        return Checkpoint.from_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ReplayError(f"unreadable replay checkpoint {path}: {exc}; remove it") from exc


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically (temp file, fsync, rename): a crash leaves the old or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(checkpoint.to_json())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _partition_count(settings: Settings, topic: str) -> int:
    admin_consumer = Consumer(reader_config(kafka_bootstrap(settings), "eventsieve-replay-meta"))
    try:
        found = admin_consumer.list_topics(topic, timeout=10).topics.get(topic)
    finally:
        admin_consumer.close()
    if found is None or found.error is not None or not found.partitions:
        raise ReplayError(f"topic {topic!r} does not exist")
    return len(found.partitions)
