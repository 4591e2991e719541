"""The Kafka adapter: client configurations, topic creation, one error type for Kafka failures.

Faust does not create a source topic that does not exist, and a producer's
auto-created topic gets the broker's default partitions, so eventsieve creates
its topics explicitly, with the configured partitions, at start.

Every client is configured here, not where it is used, so the settings that
exactly-once depends on (read_committed, no auto commit, transactional.id,
the partitioner) are written down once. A librdkafka failure
surfaces as ``KafkaFailure``, which keeps the original ``KafkaError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from eventsieve.config import Settings, TopicSettings
from eventsieve.errors import ServiceError, ServiceUnavailableError
from eventsieve.services import kafka_bootstrap

# librdkafka's own log lines (connection refused, coordinator moves) go through
# this logger, so they are rendered like every other line (JSON, or one
# readable line on a terminal) instead of its raw `%3|...` lines on stderr.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def client_config(bootstrap: str) -> dict[str, Any]:
    """What every client shares: where the brokers are, and where its log lines go."""
    return {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG}


class KafkaFailure(ServiceError):
    """A Kafka operation failed; ``error`` is librdkafka's ``KafkaError`` (None if unknown).

    ``fatal``: the client cannot go on (e.g. a fenced transactional producer):
    make a new client or exit. ``abortable``: the open transaction must be
    aborted, after which the client works again.
    """

    def __init__(self, message: str, error: KafkaError | None = None) -> None:
        self.error = error
        self.fatal = bool(error is not None and error.fatal())
        self.abortable = bool(error is not None and error.txn_requires_abort())
        self.retriable = bool(error is not None and error.retriable())
        super().__init__(f"{message}: {error}" if error is not None else message)


def kafka_failure(message: str, exc: BaseException) -> KafkaFailure:
    """``exc`` (a KafkaException or a KafkaError) as a ``KafkaFailure``."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return KafkaFailure(message, exc.args[0])
    if isinstance(exc, KafkaError):
        return KafkaFailure(message, exc)
    return KafkaFailure(f"{message}: {exc!r}")


Header = tuple[str, bytes | None]
"""A record header: (name, value), the value None for a header without one."""
Headers = Sequence[Header]
"""A consumed record's headers."""
TP = tuple[str, int]
"""A (topic, partition) pair, the key of per-partition bookkeeping."""


def consumed_headers(message: Message) -> Headers:
    """The headers of a consumed record, ``()`` when it has none.

    librdkafka gives a consumed record's headers as a list of (str, bytes or
    None); confluent-kafka's types also allow a producer's forms (a dict, str
    values), which a consumer never returns.
    """
    return cast(Headers, message.headers() or ())


# A consumed record's topic, partition and offset, which a record a consumer
# returned (or a delivery report) always has, and its headers as a consumer
# gives them: confluent-kafka's types make the first optional and allow a
# producer's header forms, for a Message made by hand. Message's own C methods,
# typed so: no Python frame added on the per-record paths.
record_topic = cast(Callable[[Message], str], Message.topic)
record_partition = cast(Callable[[Message], int], Message.partition)
record_offset = cast(Callable[[Message], int], Message.offset)
record_headers = cast(Callable[[Message], Headers | None], Message.headers)


# Kafka's (Java) default partitioner: keys land where Faust/aiokafka and Java
# clients put them, which streams/partitioning.py assumes.
JAVA_PARTITIONER = "murmur2_random"


def stream_consumer_config(
    bootstrap: str, group_id: str, session_timeout_s: float, **extra: Any
) -> dict[str, Any]:
    """The stream engine's input consumer: offsets are committed only inside transactions.

    ``range`` assignment, not cooperative-sticky: the raw, re-key and orders
    topics are co-partitioned (partition p of raw and of the re-key topic share
    the user-state partition p), and only the range assignor hands partition p
    of every subscribed topic to the same member. Eager rebalancing costs
    little here: stores stay open across a rebalance and catch up from their
    changelog offset.
    """
    return {
        **client_config(bootstrap),
        "group.id": group_id,
        "partition.assignment.strategy": "range",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(session_timeout_s * 1000),
        # Kafka wants heartbeats well inside the session timeout.
        "heartbeat.interval.ms": int(min(3.0, session_timeout_s / 3) * 1000),
        "enable.partition.eof": False,
        **extra,
    }


def sink_consumer_config(bootstrap: str, group_id: str, **extra: Any) -> dict[str, Any]:
    """The sink's consumer: manual commits only, from the earliest offset of a new group."""
    return {
        **client_config(bootstrap),
        "group.id": group_id,
        # The stream writes in transactions: only committed decisions are rows
        # (librdkafka's default, said here so no override can lose it).
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Eager assignment: a revoke takes every partition back, so a discarded
        # batch is simply re-read from the committed offsets after the assign.
        "partition.assignment.strategy": "range",
        # A crashed sink's partitions move on after this long without heartbeats;
        # librdkafka's 45 s default would stall a restarted sink that long.
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        # Bound the prefetch queue (per consumer) so a paused sink holds little.
        "queued.max.messages.kbytes": 65_536,
        "fetch.max.bytes": 52_428_800,
        # A fetch returns as soon as there is anything (fetch.min.bytes is 1);
        # an idle broker holds it at most this long, the freshness floor.
        "fetch.wait.max.ms": 100,
        **extra,
    }


def reader_config(bootstrap: str, group_id: str, **extra: Any) -> dict[str, Any]:
    """A consumer of committed records without automatic commits (tools, replay, salts).

    Where it stands is its user's business: a replay's checkpoint, a command's
    options (``group_id`` then a throwaway name librdkafka requires), or
    explicit commits after the work is done (DLQ re-drive).
    """
    return {
        **client_config(bootstrap),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        **extra,
    }


def restore_consumer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A group-less reader of changelog partitions (assign only, never commits)."""
    return {
        **client_config(bootstrap),
        "group.id": "eventsieve-restore",  # required by librdkafka, never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,  # the end of what is committed: restore done
        **extra,
    }


def transactional_producer_config(
    bootstrap: str, transactional_id: str, transaction_timeout_s: float, **extra: Any
) -> dict[str, Any]:
    """The stream engine's producer: outputs, changelogs and offsets commit atomically.

    ``transactional_id`` is stable per worker instance, so a restarted worker
    aborts what its predecessor left open at ``init_transactions``.
    ``transaction_timeout_s`` must exceed the longest micro-batch; it is also
    how long a worker that died elsewhere blocks read_committed readers of the
    partitions its open transaction wrote.

    Records wait for the commit's flush (``linger.ms`` longer than a
    micro-batch): nothing reads them before the commit anyway, and a worker
    that produces a record every 50-100 µs would otherwise send a request of
    a few records per partition every 5 ms, costing librdkafka's thread and
    the broker far more CPU than the records themselves.
    """
    return durable_producer_config(
        bootstrap,
        **{
            "transactional.id": transactional_id,
            "transaction.timeout.ms": int(transaction_timeout_s * 1000),
            "linger.ms": TRANSACTION_LINGER_MS,
            **extra,
        },
    )


# Longer than any micro-batch takes to decide (a flush sends at once).
TRANSACTION_LINGER_MS = 1_000


def durable_producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A producer whose acknowledged records are on every in-sync replica, in order, once.

    For outputs whose acknowledgement gates an input offset (the faust
    engine's outputs and table changelogs), and the base of the transactional one.
    """
    return {
        **client_config(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": JAVA_PARTITIONER,
        "compression.type": "lz4",
        # Flushes and commits close batches anyway; a little linger fills them between.
        "linger.ms": 5,
        "queue.buffering.max.messages": 500_000,
        **extra,
    }


def produce_when_room(producer: Producer, topic: str, **record: Any) -> None:
    """``producer.produce(topic, **record)``, waiting while librdkafka's local queue is full.

    A full queue (``BufferError``) means records are produced faster than the
    broker acknowledges them: serving deliveries for a moment makes room, where
    failing would lose the record's place in the order.
    """
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(0.1)


def topic_names(topics: TopicSettings) -> list[str]:
    """Every eventsieve topic, in pipeline order."""
    return [topics.raw, topics.orders, topics.clean, topics.dropped, topics.dlq]


def admin_client(bootstrap: str) -> AdminClient:
    """An admin client for ``bootstrap``."""
    return AdminClient(client_config(bootstrap))


def topic_config(
    replication_factor: int, config: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A new topic's configuration: ``config``, plus ``min.insync.replicas`` when replicated.

    With ``acks=all`` a write is acknowledged once the in-sync replicas have
    it; Kafka's default of 1 in-sync replica lets one broker's loss lose
    acknowledged writes. Replicated topics require all replicas but one
    (RF=3: 2), the usual practice, unless ``config`` says otherwise.
    """
    out = dict(config or {})
    if replication_factor > 1:
        out.setdefault("min.insync.replicas", str(replication_factor - 1))
    return out


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Existing topics are left as they are (their partition count is not changed:
    that would move keys between partitions and split per-user state).
    """
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"Kafka at {bootstrap} does not answer: {exc}") from exc
    wanted = [n for n in dict.fromkeys(names) if n not in existing]
    if not wanted:
        return []
    new_config = topic_config(replication_factor, config)
    futures = admin.create_topics(
        [NewTopic(n, partitions, replication_factor, config=new_config) for n in wanted],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ServiceError(f"could not create topic {name!r}: {exc}") from exc
    return created


def ensure_eventsieve_topics(settings: Settings) -> list[str]:
    """Create every topic of Settings.topics that is missing."""
    return ensure_topics(
        kafka_bootstrap(settings),
        topic_names(settings.topics),
        settings.topics.partitions,
        settings.topics.replication_factor,
    )
