"""Where the services are: the configured external ones, else the local stack.

Every part of eventsieve asks here rather than reading ports itself, so
``KAFKA_BOOTSTRAP_SERVERS``/``CLICKHOUSE_URL`` switch the whole system at once.
"""

from __future__ import annotations

from clickhouse_driver import Client

from eventsieve.config import Settings

LOOPBACK = "127.0.0.1"


def kafka_bootstrap(settings: Settings) -> str:
    """Kafka bootstrap servers: the configured cluster, else the local stack's broker."""
    return settings.kafka.bootstrap_servers or f"{LOOPBACK}:{settings.stack.kafka_port}"


def clickhouse_url(settings: Settings, database: str | None = None) -> str:
    """A clickhouse-driver URL: the configured server, else the local stack's.

    ``database`` replaces the URL's database (e.g. ``default`` to create ours).
    """
    if settings.clickhouse.url is not None:
        url = settings.clickhouse.url.get_secret_value()
        if database is None:
            return url
        base, _, _ = url.partition("?")
        head, sep, _old = base.rpartition("/")
        return f"{head}/{database}" if sep and "://" in head else f"{base.rstrip('/')}/{database}"
    db = database if database is not None else settings.clickhouse.database
    return f"clickhouse://default:@{LOOPBACK}:{settings.stack.clickhouse_port}/{db}"


def clickhouse_client(settings: Settings, database: str | None = None, **kwargs: object) -> Client:
    """A clickhouse-driver client for the configured server (connects lazily)."""
    return Client.from_url(clickhouse_url(settings, database), **kwargs)
