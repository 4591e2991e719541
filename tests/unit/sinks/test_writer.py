"""The writer loop's decisions with in-memory stand-ins for Kafka and ClickHouse.

The real broker and server are exercised in tests/integration/sinks/; here the
order of effects (insert → DLQ → commit), pausing and retrying are checked
step by step with a fake clock, so no test waits for a real interval.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from schemas.codecs import encode_clean, encode_dlq, encode_dropped, to_json_bytes
from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import DropReason, Stage
from sinks.batching import Backoff, FlushPolicy
from sinks.dlq import MAX_PAYLOAD_BYTES, DlqSender, dlq_record
from sinks.errors import (
    ClickHouseRejectedError,
    ClickHouseUnavailableError,
    ColumnsMismatchError,
)
from sinks.metrics import SinkMetrics
from sinks.native import NativeBlock, NativeColumn
from sinks.rows import Decision
from sinks.writer import Route, SinkWriter, routes_for

T0 = 1_764_288_000_000
CLEAN, DROPPED = "events.clean", "events.dropped"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Message:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, T0)


class Consumer:
    """Hands out queued messages; records pauses, resumes and commits in ``log``."""

    def __init__(self, clock: Clock, log: list[Any]) -> None:
        self.clock = clock
        self.log = log
        self.queue: list[Message] = []
        self.assigned = [TopicPartition(CLEAN, 0), TopicPartition(DROPPED, 0)]
        self.on_poll: Any = None

    def consume(self, num: int, timeout: float) -> list[Message]:
        taken, self.queue = self.queue[:num], self.queue[num:]
        return taken

    def poll(self, timeout: float) -> None:
        self.clock.now += timeout  # waiting in poll is where time passes
        if self.on_poll is not None:
            self.on_poll()

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.log.append(("pause", len(partitions)))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.log.append(("resume", len(partitions)))

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.log.append(("commit", sorted((o.topic, o.partition, o.offset) for o in offsets)))

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return partitions

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return (0, -1)


def native_strings(column: NativeColumn) -> list[str]:
    """The values of a Native ``String`` column (each after its LEB128 length)."""
    data = b"".join(bytes(part) for part in column.parts)
    values, at = [], 0
    while at < len(data):
        length, shift = 0, 0
        while True:
            byte = data[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(data[at : at + length].decode())
        at += length
    return values


def as_columns(blocks: list[NativeBlock], python: Any) -> tuple[list[str], list[list[Any]]]:
    """Names and the event ids (the one column the fakes look at) of an insert of blocks."""
    names = [name for name, _ in blocks[0].columns_with_types]
    ids: list[Any] = []
    for block in blocks:
        ids += native_strings(block.columns[names.index("event_id")])
    if python:
        ids += list(python[names.index("event_id")])
    columns: list[list[Any]] = [[] for _ in names]
    columns[names.index("event_id")] = ids
    columns[0] = [None] * len(ids)
    return names, columns


class ClickHouse:
    """Accepts inserts after ``failures`` refusals; records what was inserted."""

    def __init__(self, log: list[Any], failures: int = 0, fail_table: str | None = None) -> None:
        self.log = log
        self.failures = failures
        self.fail_table = fail_table

    def insert_columns(self, table: str, names: Any, columns: Any, token: str | None) -> int:
        if self.failures and (self.fail_table is None or self.fail_table == table):
            self.failures -= 1
            self.log.append(("insert failed", table))
            raise ClickHouseUnavailableError("Connection refused")
        self.log.append(("insert", table, len(columns[0]), token))
        return len(columns[0])

    def insert_blocks(
        self, table: str, blocks: list[NativeBlock], token: str | None, python: Any = None
    ) -> int:
        names, columns = as_columns(blocks, python)
        return self.insert_columns(table, names, columns, token)

    def ping(self) -> bool:
        return self.failures == 0

    def close(self) -> None:
        pass


class Producer:
    def __init__(self, log: list[Any], fail: int = 0) -> None:
        self.log = log
        self.fail = fail
        self.callbacks: list[Any] = []

    def produce(self, topic: str, key: Any, value: bytes, on_delivery: Any) -> None:
        self.log.append(("dlq produce", topic))
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            error = "broker down" if self.fail else None
            callback(error, None)
        if self.fail:
            self.fail -= 1
        self.log.append(("dlq flush",))
        return 0


def clean(i: int, **fields: Any) -> bytes:
    raw = new_raw_event(
        project="demo", name="signup", event_id=f"e{i}", timestamp=T0 + i, received_at=T0, **fields
    )
    return encode_clean(clean_event(raw, normalised_name="signup", user_key="u", decided_at=T0))


def dropped(i: int) -> bytes:
    raw = new_raw_event(project="demo", name="x", event_id=f"d{i}", timestamp=T0, received_at=T0)
    return encode_dropped(dropped_event(raw, reason=DropReason.BOT, stage=Stage.BOT, decided_at=T0))


def make_writer(
    *, max_rows: int = 3, failures: int = 0, fail_table: str | None = None, dlq_fail: int = 0
) -> tuple[SinkWriter, Consumer, list[Any], Clock]:
    log: list[Any] = []
    clock = Clock()
    consumer = Consumer(clock, log)
    writer = SinkWriter(
        consumer=consumer,  # type: ignore[arg-type]
        clickhouse=ClickHouse(log, failures, fail_table),  # type: ignore[arg-type]
        dlq=DlqSender(Producer(log, dlq_fail), "events.dlq"),  # type: ignore[arg-type]
        routes=routes_for(CLEAN, DROPPED),
        policy=FlushPolicy(max_rows=max_rows, max_interval_s=1.0),
        backoff=Backoff(0.5, 4.0, rng=random.Random(1)),
        metrics=SinkMetrics(),
        clock=clock,
    )
    return writer, consumer, log, clock


def test_a_full_batch_is_inserted_then_committed_one_past_the_last_offset() -> None:
    writer, consumer, log, _ = make_writer(max_rows=3)
    consumer.queue = [
        Message(CLEAN, 0, 10, clean(1)),
        Message(CLEAN, 0, 11, clean(2)),
        Message(DROPPED, 0, 7, dropped(1)),
    ]
    writer.step()
    assert [entry[0] for entry in log] == ["insert", "commit"]
    assert log[0][1:3] == ("events", 3)
    assert log[1] == ("commit", [(CLEAN, 0, 12), (DROPPED, 0, 8)])
    assert writer.records == 0


def test_a_lone_record_is_written_at_once_when_the_consumer_has_nothing_more() -> None:
    writer, consumer, log, clock = make_writer(max_rows=100)
    consumer.queue = [Message(CLEAN, 0, 0, clean(1))]
    started = clock.now
    writer.step()
    assert [entry[0] for entry in log] == ["insert", "commit"]
    assert clock.now == started  # no waiting for the batch interval


def test_records_after_a_flush_wait_for_the_minimum_gap_then_go_together() -> None:
    writer, consumer, log, clock = make_writer(max_rows=100)
    consumer.queue = [Message(CLEAN, 0, 0, clean(1))]
    writer.step()
    flushed_at = clock.now
    consumer.queue = [Message(CLEAN, 0, 1, clean(2)), Message(CLEAN, 0, 2, clean(3))]
    writer.step()  # taken, but the previous insert was just now
    assert [entry[0] for entry in log].count("insert") == 1
    writer.step()  # nothing more comes: waits for the gap, then writes both in one insert
    inserts = [entry for entry in log if entry[0] == "insert"]
    assert [entry[2] for entry in inserts] == [1, 2]
    assert clock.now - flushed_at == pytest.approx(writer.policy.min_interval_s)


def test_under_load_a_batch_fills_up_before_it_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sinks.writer._CONSUME_CHUNK", 2)
    writer, consumer, log, _ = make_writer(max_rows=6)
    consumer.queue = [Message(CLEAN, 0, i, clean(i)) for i in range(13)]
    writer.step()  # 2 records, more waiting: not due
    writer.step()
    assert log == []
    writer.step()  # 6 records: full
    writer.step()
    assert [entry[2] for entry in log if entry[0] == "insert"] == [6]


def test_clickhouse_down_pauses_retries_and_commits_only_after_the_insert() -> None:
    writer, consumer, log, clock = make_writer(max_rows=2, failures=3)
    consumer.queue = [Message(CLEAN, 0, 0, clean(1)), Message(CLEAN, 0, 1, clean(2))]
    started = clock.now
    writer.step()
    kinds = [entry[0] for entry in log]
    assert kinds == [
        "insert failed",
        "pause",
        "insert failed",
        "insert failed",
        "insert",
        "commit",
        "resume",
    ]
    # Backoff with jitter: waits of at least 0.25 + 0.5 + 1.0 seconds between attempts.
    assert clock.now - started >= 1.75
    assert writer.metrics.retries._value.get() == 3
    assert writer.metrics.paused._value.get() == 0


def test_the_same_token_is_sent_when_a_batch_is_retried() -> None:
    writer, consumer, log, _ = make_writer(max_rows=1, failures=1)
    consumer.queue = [Message(CLEAN, 0, 5, clean(1))]
    writer.step()
    inserts = [entry for entry in log if entry[0] == "insert"]
    assert len(inserts) == 1
    again, consumer2, log2, _ = make_writer(max_rows=1)
    consumer2.queue = [Message(CLEAN, 0, 5, clean(1))]
    again.step()
    assert next(e for e in log2 if e[0] == "insert")[3] == inserts[0][3]


def test_tables_written_before_a_failure_are_not_written_again() -> None:
    writer, consumer, log, _ = make_writer(max_rows=1, failures=2, fail_table="user_updates")
    consumer.queue = [Message(CLEAN, 0, 0, clean(1, user_id="u1", display_name="Ann"))]
    writer.step()
    inserted = [entry[1] for entry in log if entry[0] == "insert"]
    assert inserted == ["events", "user_updates"]
    assert log[-2][0] == "commit"


def test_a_poison_record_goes_to_the_dlq_before_the_commit_and_the_batch_goes_on() -> None:
    writer, consumer, log, _ = make_writer(max_rows=3)
    consumer.queue = [
        Message(CLEAN, 0, 0, clean(1)),
        Message(CLEAN, 0, 1, b"\xc3\x01garbage"),
        Message(CLEAN, 0, 2, None),
    ]
    writer.step()
    kinds = [entry[0] for entry in log]
    assert kinds == ["dlq produce", "dlq produce", "insert", "dlq flush", "commit"]
    assert log[2][1:3] == ("events", 1)
    assert log[-1] == ("commit", [(CLEAN, 0, 3)])


def test_an_unacknowledged_dlq_record_blocks_the_commit_until_it_is_sent_again() -> None:
    writer, consumer, log, _ = make_writer(max_rows=1, dlq_fail=1)
    consumer.queue = [Message(CLEAN, 0, 0, b"not an event")]
    writer.step()
    kinds = [entry[0] for entry in log]
    assert kinds.index("commit") > kinds.index("dlq flush")
    assert kinds.count("dlq produce") == 2  # sent again after the failed delivery
    assert kinds.count("commit") == 1


def test_a_revoke_during_an_outage_discards_the_uncommitted_batch() -> None:
    writer, consumer, log, _ = make_writer(max_rows=1, failures=100)
    consumer.queue = [Message(CLEAN, 0, 0, clean(1))]
    consumer.on_poll = lambda: writer._on_revoke(consumer, consumer.assigned)  # type: ignore[arg-type]
    writer.step()
    assert "commit" not in [entry[0] for entry in log]
    assert writer.records == 0
    assert not any(writer.pending.values())
    assert not writer.offsets


@pytest.mark.parametrize("records", [0, 1])
def test_flush_of_nothing_commits_nothing(records: int) -> None:
    writer, consumer, log, clock = make_writer(max_rows=10)
    consumer.queue = [Message(CLEAN, 0, 0, clean(1))][:records]
    writer.step()
    clock.now += 5
    writer.step()
    writer.step()
    assert [entry[0] for entry in log].count("commit") == records


def test_an_unexpected_conversion_error_sends_the_record_to_the_dlq_not_the_sink_down() -> None:
    writer, consumer, log, _ = make_writer(max_rows=2)

    def broken(value: bytes) -> dict:
        raise KeyError("surprise")

    writer.routes[CLEAN] = Route(broken, Decision.ACCEPTED)
    consumer.queue = [Message(CLEAN, 0, 0, clean(1)), Message(DROPPED, 0, 0, dropped(1))]
    writer.step()
    kinds = [entry[0] for entry in log]
    assert kinds == ["dlq produce", "insert", "dlq flush", "commit"]
    assert writer.metrics.dlq_records.labels("unexpected_key")._value.get() == 1


def test_a_dlq_record_is_truncated_to_fit_kafka() -> None:
    record = dlq_record(
        key=b"k" * 300_000,
        value=b"v" * 999_000,
        headers=[(f"h{i}", b"x" * 10_000) for i in range(100)],
        topic="t",
        partition=0,
        offset=7,
        timestamp_ms=None,
        error_type="clickhouse_rejected",
        error="insert refused",
        failed_at=1,
    )
    assert len(record["value"] or b"") == len(record["key"] or b"") == MAX_PAYLOAD_BYTES
    assert len(record["headers"]) == 64
    assert all(len(h["value"] or b"") == 4096 for h in record["headers"])
    assert record["error"].startswith("key truncated to 256000 of 300000 bytes; value truncated")
    assert record["error"].endswith("insert refused")
    assert len(encode_dlq(record)) < 1_000_000


class RejectingClickHouse(ClickHouse):
    """Refuses every ``events`` block that holds one of the ``bad`` event ids."""

    def __init__(self, log: list[Any], bad: set[str]) -> None:
        super().__init__(log)
        self.bad = bad
        self.rows: set[str] = set()

    def insert_columns(self, table: str, names: Any, columns: Any, token: str | None) -> int:
        if table == "events":
            ids = set(columns[list(names).index("event_id")])
            if ids & self.bad:
                self.log.append(("rejected", len(ids)))
                raise ClickHouseRejectedError(53, "Type mismatch")
            self.rows |= ids
        return super().insert_columns(table, names, columns, token)


def test_a_rejected_batch_is_split_until_the_rejected_records_alone_are_parked() -> None:
    writer, consumer, log, _ = make_writer(max_rows=8)
    clickhouse = RejectingClickHouse(log, bad={"e2", "e6"})
    writer.clickhouse = clickhouse  # type: ignore[assignment]
    consumer.queue = [Message(CLEAN, 0, i, clean(i)) for i in range(8)]
    writer.step()
    assert clickhouse.rows == {f"e{i}" for i in range(8)} - {"e2", "e6"}
    assert [e for e in log if e[0] == "dlq produce"] == [("dlq produce", "events.dlq")] * 2
    assert log[-1] == ("commit", [(CLEAN, 0, 8)])
    assert writer.metrics.dlq_records.labels("clickhouse_rejected")._value.get() == 2
    # Halves, then quarters, then single records: 1 + 2 + 4 + 2 attempts rejected at most.
    assert sum(1 for e in log if e[0] == "rejected") <= 9


class ClickHouseBackAt(ClickHouse):
    """Down (refusing inserts and probes) until the clock reaches ``up_at``."""

    def __init__(self, log: list[Any], clock: Clock, up_at: float) -> None:
        super().__init__(log)
        self.clock = clock
        self.up_at = up_at

    def insert_columns(self, table: str, names: Any, columns: Any, token: str | None) -> int:
        if self.clock.now < self.up_at:
            self.log.append(("insert failed", table))
            raise ClickHouseUnavailableError("Connection refused")
        return super().insert_columns(table, names, columns, token)

    def ping(self) -> bool:
        return self.clock.now >= self.up_at


def test_the_sink_writes_within_a_probe_interval_of_clickhouse_answering_again() -> None:
    writer, consumer, log, clock = make_writer(max_rows=1)
    writer.backoff = Backoff(30.0, 30.0, rng=random.Random(1))  # long waits between tries
    up_at = clock.now + 7.0
    writer.clickhouse = ClickHouseBackAt(log, clock, up_at)  # type: ignore[assignment]
    consumer.queue = [Message(CLEAN, 0, 0, clean(1))]
    writer.step()
    committed_at = clock.now
    assert ("commit", [(CLEAN, 0, 1)]) in log
    assert up_at <= committed_at <= up_at + 1.5  # not the 15-30 s the backoff asked for


class InsertsById(ClickHouse):
    """Records the event ids of every ``events`` insert (blocks and rows alike)."""

    def __init__(self, log: list[Any], mismatch: bool = False) -> None:
        super().__init__(log)
        self.mismatch = mismatch
        self.ids: list[list[str]] = []

    def insert_columns(self, table: str, names: Any, columns: Any, token: str | None) -> int:
        if table == "events":
            self.ids.append(list(columns[list(names).index("event_id")]))
        return super().insert_columns(table, names, columns, token)

    def insert_blocks(
        self, table: str, blocks: list[NativeBlock], token: str | None, python: Any = None
    ) -> int:
        if self.mismatch:
            raise ColumnsMismatchError([("scroll_depth", "Nullable(Int8)")], [("x", "y")])
        return super().insert_blocks(table, blocks, token, python)


def test_unusual_records_go_one_by_one_into_the_same_insert_and_poison_to_the_dlq() -> None:
    writer, consumer, log, _ = make_writer(max_rows=6)
    clickhouse = InsertsById(log)
    writer.clickhouse = clickhouse  # type: ignore[assignment]
    raw = new_raw_event(project="demo", name="j", event_id="json-1", timestamp=T0, received_at=T0)
    as_json = to_json_bytes(clean_event(raw, normalised_name="j", user_key="u", decided_at=T0))
    consumer.queue = [
        Message(CLEAN, 0, 0, clean(1)),
        Message(CLEAN, 0, 1, as_json),  # JSON: the one-record codec reads it
        Message(CLEAN, 0, 2, b"\xc3\x01garbage"),
        Message(DROPPED, 0, 0, dropped(1)),
        Message(CLEAN, 0, 3, clean(2)),
        Message(CLEAN, 0, 4, None),
    ]
    writer.step()
    (ids,) = clickhouse.ids
    assert sorted(ids) == ["d1", "e1", "e2", "json-1"]
    kinds = [entry[0] for entry in log]
    assert kinds == ["dlq produce", "dlq produce", "insert", "dlq flush", "commit"]
    assert log[-1] == ("commit", [(CLEAN, 0, 5), (DROPPED, 0, 1)])
    assert writer.metrics.dlq_records.labels("empty_value")._value.get() == 1


def test_a_table_whose_columns_differ_is_written_as_rows() -> None:
    writer, consumer, log, _ = make_writer(max_rows=3)
    clickhouse = InsertsById(log, mismatch=True)
    writer.clickhouse = clickhouse  # type: ignore[assignment]
    consumer.queue = [
        Message(CLEAN, 0, i, clean(i, user_id="u", display_name="A")) for i in range(3)
    ]
    writer.step()
    assert clickhouse.ids == [["e0", "e1", "e2"]]
    inserted = [entry[1] for entry in log if entry[0] == "insert"]
    assert inserted == ["events", "user_updates"]
    assert log[-1] == ("commit", [(CLEAN, 0, 3)])


class Held(ClickHouse):
    """Holds every insert until ``release`` is set (an insert that takes its time)."""

    def __init__(self, log: list[Any], failures: int = 0) -> None:
        super().__init__(log, failures)
        self.release = threading.Event()

    def insert_columns(self, table: str, names: Any, columns: Any, token: str | None) -> int:
        assert self.release.wait(10)
        return super().insert_columns(table, names, columns, token)


def concurrent_writer(failures: int = 0) -> tuple[SinkWriter, Consumer, list[Any], Held]:
    writer, consumer, log, _ = make_writer(max_rows=2)
    held = Held(log, failures)
    writer.clickhouse = held  # type: ignore[assignment]
    writer._executor = ThreadPoolExecutor(1)
    return writer, consumer, log, held


def test_the_next_batch_is_read_while_one_is_inserted_and_commits_keep_their_order() -> None:
    writer, consumer, log, held = concurrent_writer()
    consumer.queue = [Message(CLEAN, 0, i, clean(i)) for i in range(5)]
    writer.step()  # batch 1 full: handed to the background insert
    assert writer._inflight is not None
    assert log == []  # held: nothing inserted, nothing committed
    # Batch 2 is read and prepared while batch 1 is held; handing it over waits
    # for batch 1, which is then committed before batch 2 goes.
    threading.Timer(0.3, held.release.set).start()
    writer.step()
    assert [entry[0] for entry in log][:2] == ["insert", "commit"]
    assert log[1] == ("commit", [(CLEAN, 0, 2)])
    writer.step()  # the last record: batch 3 waits for the gap, batch 2 is committed
    assert writer.flush()
    assert [entry[0] for entry in log] == [
        "insert",
        "commit",
        "insert",
        "commit",
        "insert",
        "commit",
    ]
    assert log[3] == ("commit", [(CLEAN, 0, 4)])
    assert log[5] == ("commit", [(CLEAN, 0, 5)])


def test_a_background_insert_that_fails_is_retried_and_committed_only_then() -> None:
    writer, consumer, log, held = concurrent_writer(failures=2)
    held.release.set()
    consumer.queue = [Message(CLEAN, 0, 0, clean(1)), Message(CLEAN, 0, 1, clean(2))]
    writer.step()
    assert writer.flush()
    kinds = [entry[0] for entry in log]
    assert kinds == ["insert failed", "pause", "insert failed", "insert", "commit", "resume"]


def test_a_revoke_waits_for_the_insert_in_flight_and_commits_it() -> None:
    writer, consumer, log, held = concurrent_writer()
    consumer.queue = [Message(CLEAN, 0, 0, clean(1)), Message(CLEAN, 0, 1, clean(2))]
    writer.step()
    assert writer._inflight is not None
    threading.Timer(0.2, held.release.set).start()
    writer._on_revoke(consumer, consumer.assigned)  # type: ignore[arg-type]
    assert [entry[0] for entry in log] == ["insert", "commit"]
    assert writer._inflight is None
    assert writer.records == 0


def test_a_batch_is_decoded_in_chunks_each_a_block_of_one_insert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sinks.writer.DECODE_CHUNK", 2)
    writer, consumer, log, _ = make_writer(max_rows=5)
    clickhouse = InsertsById(log)
    writer.clickhouse = clickhouse  # type: ignore[assignment]
    blocks: list[int] = []
    insert_blocks = clickhouse.insert_blocks

    def count_blocks(table: str, sent: list[NativeBlock], token: Any, python: Any = None) -> int:
        blocks.append(len(sent))
        return insert_blocks(table, sent, token, python)

    clickhouse.insert_blocks = count_blocks  # type: ignore[method-assign]
    poison = Message(CLEAN, 0, 2, b"\xc3\x01garbage")
    consumer.queue = [Message(CLEAN, 0, i, clean(i)) for i in (0, 1)]
    consumer.queue += [poison, *(Message(CLEAN, 0, i, clean(i)) for i in (3, 4))]
    writer.step()
    assert blocks == [3]
    (ids,) = clickhouse.ids
    assert sorted(ids) == ["e0", "e1", "e3", "e4"]
    assert log[-1] == ("commit", [(CLEAN, 0, 5)])
