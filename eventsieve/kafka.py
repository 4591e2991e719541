"""Thin helpers over confluent-kafka's admin client: topics exist before anyone uses them.

Faust does not create a source topic that does not exist, and a producer's
auto-created topic gets the broker's default partitions, so eventsieve creates
its topics explicitly, with the configured partitions, at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from eventsieve.config import Settings, TopicSettings
from eventsieve.errors import ServiceError, ServiceUnavailableError
from eventsieve.services import kafka_bootstrap


def topic_names(topics: TopicSettings) -> list[str]:
    """Every eventsieve topic, in pipeline order."""
    return [topics.raw, topics.orders, topics.clean, topics.dropped, topics.dlq]


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


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
    futures = admin.create_topics(
        [NewTopic(n, partitions, replication_factor, config=dict(config or {})) for n in wanted],
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
