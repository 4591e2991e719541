"""The kafka engine: micro-batches on confluent-kafka, exactly-once with Kafka transactions.

One consumer in the workers' group reads ``events.raw``, the re-key topic and
``events.orders``; one transactional producer writes every output. A
micro-batch is up to ``batch_size`` records or ``batch_interval_ms``, and one
transaction. The commit order, for every batch:

1. each record is decided by the ``Processor`` against its partition's
   ``BatchedState`` (reads see the store plus the batch's writes, and those
   of the batch before while its commit is in flight) and its outputs
   (clean, dropped, dlq, orders, re-key) are kept in order;
2. once the previous batch's transaction has committed (and the stores have
   applied it, step 6), a transaction begins and the outputs are produced;
3. the batch's state changes go to the changelog topics, one record per key;
4. in a background thread: the producer is flushed, the input offsets (the
   next offset to read per partition) are sent to the transaction with the
   consumer's group metadata, and the transaction commits: outputs,
   changelog and offsets become visible together, or none of them;
5. meanwhile this thread consumes and decides the next batch (step 1);
6. only when the commit has succeeded the local stores apply the changes,
   with the changelog offset they reach (a crash before this step leaves a
   store behind its changelog, never ahead; the next assignment catches it up).

So a transaction's wait (the flush, the broker's commit) overlaps with the
next batch's decisions, while outputs, changelog and offsets still commit
together and no transaction is begun before the previous one ended.

A failed commit aborts the transaction: the batch's state is discarded, and
so are the decisions of the batch decided meanwhile (they assumed the failed
one's state); the consumer rewinds to the failed batch's first offsets (and
the next batch's, for partitions only it read), so the same records are
decided again against the same state. A fatal error (a producer fenced
by a newer instance) ends the process with a non-zero exit; a worker that
lost its partitions while paused cannot commit (KIP-447: the offsets carry
its stale group generation), so its batch is aborted, never written twice.

Readers of the outputs must read ``read_committed`` (librdkafka's default).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from eventsieve.config import Settings
from eventsieve.kafka import (
    TP,
    KafkaFailure,
    kafka_failure,
    record_headers,
    record_offset,
    record_partition,
    record_topic,
    stream_consumer_config,
    transactional_producer_config,
)
from eventsieve.logging import get_logger
from eventsieve.services import kafka_bootstrap
from schemas.topology import ORDER_STORE, USER_STORE, changelog_topic, rekey_topic
from streams.batched import BatchedState
from streams.metrics import StreamMetrics
from streams.partitioning import partition_for
from streams.processor import Outcome, Processor, Record, Sink
from streams.restore import restore
from streams.store import Store, StoreFactory

log = get_logger(__name__)

Decide = Callable[[Record, BatchedState], Outcome]

# librdkafka answers within this or the broker is unreachable: the batch is
# aborted (or the process exits) rather than waiting for ever.
KAFKA_TIMEOUT_S = 30.0
# The lag gauge's refresh: often enough for a 15 s scrape, cheap (cached values).
LAG_REPORT_S = 5.0


class Engine:
    """One worker's loop: consume a micro-batch, decide it, commit it in one transaction."""

    def __init__(
        self,
        settings: Settings,
        stores: StoreFactory,
        transactional_id: str,
        *,
        processor: Processor | None = None,
        metrics: StreamMetrics | None = None,
    ) -> None:
        s = settings.streams
        topics = settings.topics
        self.settings = settings
        self.bootstrap = kafka_bootstrap(settings)
        self.store_factory = stores
        self.transactional_id = transactional_id
        self.processor = processor or Processor(settings)
        self.metrics = metrics or StreamMetrics()
        self.batch_size = s.batch_size
        self.interval = s.batch_interval_ms / 1000
        processor_ = self.processor
        self.inputs: dict[str, tuple[str, Decide]] = {
            topics.raw: (USER_STORE, processor_.on_raw),
            rekey_topic(settings): (
                USER_STORE,
                lambda record, state: processor_.on_raw(record, state, check_partition=False),
            ),
            topics.orders: (ORDER_STORE, processor_.on_order),
        }
        self.sink_topics = {
            Sink.CLEAN: topics.clean,
            Sink.DROPPED: topics.dropped,
            Sink.DLQ: topics.dlq,
            Sink.ORDERS: topics.orders,
            Sink.REKEY: rekey_topic(settings),
        }
        self.changelogs = {
            name: changelog_topic(settings, name) for name in (USER_STORE, ORDER_STORE)
        }
        self._store_of_changelog = {topic: name for name, topic in self.changelogs.items()}
        self.stores: dict[TP, Store] = {}  # (store name, partition) -> local store
        self.states: dict[TP, BatchedState] = {}
        # The batch being decided: its outputs (topic, value, key, partition), in order.
        self.outputs: list[tuple[str, bytes, bytes | None, int]] = []
        self.positions: dict[TP, int] = {}  # (topic, partition) -> next offset, this batch
        self.starts: dict[TP, int] = {}  # (topic, partition) -> first offset, this batch
        # The batch whose transaction is committing (step 4), if any.
        self.committing: Future[None] | None = None
        self.committing_starts: dict[TP, int] = {}
        self.committing_states: list[tuple[TP, BatchedState]] = []
        self.committing_offsets: list[TopicPartition] = []
        self.committing_group: Any = None
        self.changelog_offsets: dict[TP, int] = {}
        self.partition_counts: dict[str, int] = {}  # output topic -> its partitions
        self.in_transaction = False
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self._frozen = False
        self.stopping = False
        self.batches = 0
        self._next_lag_report = 0.0
        self.consumer: Any = None
        self.producer: Any = None

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Create the clients; ``init_transactions`` aborts what this instance left open."""
        s = self.settings.streams
        self.producer = Producer(
            transactional_producer_config(
                self.bootstrap, self.transactional_id, s.transaction_timeout_s
            )
        )
        try:
            self.producer.init_transactions(KAFKA_TIMEOUT_S)
            topics = self.producer.list_topics(timeout=KAFKA_TIMEOUT_S).topics
        except KafkaException as exc:
            raise kafka_failure("initialising transactions", exc) from exc
        # Outputs keyed without a partition go where librdkafka's murmur2_random
        # partitioner would put them, computed here (cached per key) rather
        # than by librdkafka for every record.
        for topic in (*self.sink_topics.values(), *self.changelogs.values()):
            if topic in topics and topics[topic].partitions:
                self.partition_counts[topic] = len(topics[topic].partitions)
        self.consumer = Consumer(
            stream_consumer_config(
                self.bootstrap,
                s.app_id,
                s.session_timeout_s,
                # The group's member list names each worker instance.
                **{"client.id": self.transactional_id},
            )
        )
        self.consumer.subscribe(
            list(self.inputs),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("engine started", transactional_id=self.transactional_id)

    def run(self) -> None:
        """Run until ``stopping`` is set (a signal); a fatal error raises ``KafkaFailure``."""
        self.start()
        try:
            while not self.stopping:
                if self.step() and not self._frozen:
                    # What the first records built (compiled codecs, parsers,
                    # caches) lives as long as the process: out of the cyclic
                    # collector's full passes, which otherwise walk it again
                    # and again as records churn through objects.
                    gc.collect()
                    gc.freeze()
                    self._frozen = True
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group (revocation commits an open batch), then close the stores."""
        if self.consumer is not None:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close failed", error=repr(exc))
            self.consumer = None
        if self.committing is not None:  # no consumer left to rewind: wait, apply or abort
            with contextlib.suppress(KafkaFailure):
                self._settle()
        self._committer.shutdown()
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        self.states.clear()

    # -- one micro-batch ----------------------------------------------------

    def step(self) -> int:
        """Consume one micro-batch, decide it and start its commit; return the records decided.

        The commit runs while the next call consumes and decides: records are
        visible when it ends, not when this returns.
        """
        messages = self.consumer.consume(self.batch_size, self.interval)
        decided = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaFailure("consuming", error)
                log.warning("consumer error", error=str(error))
                continue
            self._decide(message)
            decided += 1
        if not self._settle():
            decided = 0  # rewound with the failed batch: decided again
        elif self.positions:
            self._send()
        self.metrics.flush()
        now = time.monotonic()
        if now >= self._next_lag_report:
            self._next_lag_report = now + LAG_REPORT_S
            self._report_lag()
        return decided

    def _report_lag(self) -> None:
        """Set the lag gauge (high watermark minus next offset) for the partitions held now.

        The high watermarks are the ones the last fetches brought (cached): no
        request to the broker.
        """
        gauge = self.metrics.lag
        for tp in self.consumer.position(self.consumer.assignment()):
            if tp.offset < 0:
                continue
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                gauge.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))

    def _decide(self, message: Message) -> None:
        """Step 1: decide one record; its outputs wait in ``outputs``."""
        topic = record_topic(message)
        partition = record_partition(message)
        offset = record_offset(message)
        store_name, decide = self.inputs[topic]
        state = self.states[(store_name, partition)]
        kind, timestamp = message.timestamp()
        record = Record(
            topic,
            partition,
            offset,
            message.key(),
            message.value(),
            None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
            record_headers(message) or (),
        )
        outcome = decide(record, state)
        if outcome.event_time is not None:
            state.advance(outcome.event_time)
        sink_topics = self.sink_topics
        counts = self.partition_counts
        append = self.outputs.append
        for out in outcome.outputs:
            target = sink_topics[out.sink]
            part = out.partition
            if part is None:
                count = counts.get(target)
                key = out.key
                part = -1 if key is None or count is None else partition_for(key, count)
            append((target, out.value, out.key, part))
        tp = (topic, partition)
        if tp not in self.starts:
            self.starts[tp] = offset
        self.positions[tp] = offset + 1
        self.metrics.tally(outcome)
        if outcome.sink is Sink.DLQ:
            log.warning(
                "record sent to dlq",
                topic=topic,
                partition=partition,
                offset=offset,
                error=outcome.error,
            )

    def _send(self) -> None:
        """Steps 2-4: begin, produce the batch and its changelog, commit in the background."""
        try:
            self._begin()
            produce = self.producer.produce
            for target, out_value, out_key, part in self.outputs:
                try:
                    produce(target, out_value, out_key, part)
                except BufferError:  # the local queue is full: the slow path waits
                    self._produce(target, out_key, out_value, part)
            sealed = []
            for (name, partition), state in self.states.items():
                changes = state.seal()
                if not changes:
                    continue
                sealed.append(((name, partition), state))
                topic = self.changelogs[name]
                for key, value in changes[:-1]:
                    self._produce(topic, key, value, partition)
                # One partition, one idempotent producer: records keep their
                # order, so the last one's offset is the store's new offset.
                key, value = changes[-1]
                self._produce(topic, key, value, partition, self._changelog_delivered)
        except KafkaException as exc:
            self._abort(kafka_failure("producing a micro-batch", exc), self.starts)
            return
        self.committing_states = sealed
        self.committing_starts = self.starts
        self.committing_offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]
        self.committing_group = self.consumer.consumer_group_metadata()
        self.committing = self._committer.submit(self._commit)
        self.outputs = []
        self.positions = {}
        self.starts = {}

    def _begin(self) -> None:
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise kafka_failure("beginning a transaction", exc) from exc
        self.in_transaction = True

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        while True:
            try:
                if on_delivery is None:
                    self.producer.produce(topic, value, key, partition)
                else:
                    self.producer.produce(topic, value, key, partition, on_delivery=on_delivery)
                return
            except BufferError:  # the local queue is full: let librdkafka send some
                self.producer.poll(0.05)

    def _changelog_delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            name = self._store_of_changelog[record_topic(message)]
            key = (name, record_partition(message))
            offset = record_offset(message)
            if offset > self.changelog_offsets.get(key, -1):
                self.changelog_offsets[key] = offset

    def _commit(self) -> None:
        """Step 4, in the commit thread: flush, then offsets and commit (``_finish``)."""
        if self.producer.flush(KAFKA_TIMEOUT_S):
            raise KafkaFailure("outputs not delivered in time")
        self._finish()

    def _finish(self) -> None:
        """Offsets into the transaction, then commit: everything of the batch becomes visible."""
        self.producer.send_offsets_to_transaction(
            self.committing_offsets, self.committing_group, KAFKA_TIMEOUT_S
        )
        self.producer.commit_transaction(KAFKA_TIMEOUT_S)

    def _settle(self) -> bool:
        """Wait for the commit in flight; step 6 if it succeeded, else abort.

        False when it failed: the batch decided meanwhile is dropped too, and
        the consumer rewound to decide both again.
        """
        committing = self.committing
        if committing is None:
            return True
        self.committing = None
        try:
            committing.result()
        except KafkaException as exc:
            self._abort(kafka_failure("committing a micro-batch", exc), self.committing_starts)
            return False
        except KafkaFailure as failure:
            self._abort(failure, self.committing_starts)
            return False
        self.in_transaction = False
        self.batches += 1
        for key, state in self.committing_states:
            state.committed(self.changelog_offsets[key])
        self.committing_states = []
        self.committing_starts = {}
        self.changelog_offsets.clear()
        return True

    def _abort(self, failure: KafkaFailure, starts: dict[TP, int]) -> None:
        """Abort the transaction: nothing of it is visible; decide its records again.

        ``starts``: the first offsets of the batch in the transaction; the
        batch being decided, if any, is dropped and rewound as well.
        """
        if failure.fatal:
            log.error("fatal Kafka error; exiting so the worker restarts", error=str(failure))
            raise failure
        log.warning("micro-batch aborted; its records are decided again", error=str(failure))
        try:
            self.producer.abort_transaction(KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            raise kafka_failure("aborting a transaction", exc) from exc
        self.in_transaction = False
        for state in self.states.values():
            state.discard()
        for (topic, partition), offset in {**self.starts, **starts}.items():
            # A partition no longer ours fails to seek: its new owner starts at the commit.
            with contextlib.suppress(KafkaException):
                self.consumer.seek(TopicPartition(topic, partition, offset))
        self.outputs = []
        self.positions = {}
        self.starts = {}
        self.committing_states = []
        self.committing_starts = {}
        self.changelog_offsets.clear()

    # -- rebalances (called inside consume) ---------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Open the stores of the assignment and bring them up to their changelogs.

        Runs before any record of ``partitions`` is delivered. Stores of
        partitions not in the assignment are closed; stores kept across the
        rebalance only read what was committed since their recorded offset.
        """
        self._settle()  # the stores below are the committed state
        wanted = {(self.inputs[tp.topic][0], tp.partition) for tp in partitions}
        for key in [k for k in self.stores if k not in wanted]:
            self.stores.pop(key).close()
            self.states.pop(key, None)
        for key in wanted:
            if key not in self.stores:
                self.stores[key] = self.store_factory.open(*key)
        targets = {(self.changelogs[name], p): self.stores[(name, p)] for name, p in wanted}
        read = restore(self.bootstrap, targets)
        self.states = {key: BatchedState(self.stores[key]) for key in wanted}
        log.info(
            "partitions assigned",
            partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in partitions),
            restored=sum(read.values()),
        )

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Finish the commit in flight before the partitions go (stores stay open for a
        re-assign). No batch is being decided here: callbacks run inside ``consume``."""
        self._settle()
        log.info("partitions revoked", count=len(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: the commit in flight fails (its offsets carry
        a stale generation) and is aborted; one that made it before stands."""
        self._settle()
        log.warning("partitions lost", count=len(partitions))
