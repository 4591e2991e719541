"""The endpoint's parts, built once per process from the settings: projects,
publisher, limits, idempotency store, metrics, salts, clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from producers.apis.base import ParseContext
from producers.body import BodyDeadlines
from producers.edge import IpNetwork, parse_networks
from producers.idempotency import IdempotencyStore
from producers.limits import EdgeLimits
from producers.metrics import Metrics
from producers.projects import ProjectDirectory
from producers.publisher import Publisher, producer_config
from producers.ratelimit import FailedAuthLimiter, RateLimiter
from producers.salts import FixedSalts, KafkaDailySalts
from schemas.topology import salts_topic

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Endpoint:
    """Everything a handler needs, built once per process."""

    settings: Settings
    directory: ProjectDirectory
    publisher: Publisher
    limiter: RateLimiter
    idempotency: IdempotencyStore
    metrics: Metrics
    trusted: tuple[IpNetwork, ...]
    limits: EdgeLimits
    failed_auth: FailedAuthLimiter
    salts: KafkaDailySalts | FixedSalts
    clock: Clock = utc_now
    body_deadlines: BodyDeadlines | None = None

    def __post_init__(self) -> None:
        if self.body_deadlines is None:
            self.body_deadlines = BodyDeadlines(self.limits.body_timeout_s)

    @property
    def context(self) -> ParseContext:
        return ParseContext(self.directory, self.settings.server.max_batch_events)


def build_endpoint(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    clock: Clock = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    limits: EdgeLimits | None = None,
    salts: KafkaDailySalts | FixedSalts | None = None,
) -> Endpoint:
    """The process-wide state of the endpoint (the producer and salts created, not started)."""
    limits = limits or EdgeLimits()
    if salts is None:
        salts = KafkaDailySalts(
            kafka_bootstrap(settings),
            salts_topic(settings.topics.raw),
            settings.privacy.salt_secret.get_secret_value(),
        )
    server = settings.server
    if publisher is None:
        publisher = Publisher(
            producer_config(
                kafka_bootstrap(settings),
                linger_ms=server.linger_ms,
                compression=server.compression,
                delivery_timeout_s=server.delivery_timeout_s,
            ),
            settings.topics.raw,
            delivery_timeout_s=server.delivery_timeout_s,
            retry_after_s=server.retry_after_s,
        )
    return Endpoint(
        settings=settings,
        directory=ProjectDirectory.from_projects(settings.projects),
        publisher=publisher,
        limiter=RateLimiter(
            {p.id: p.rate_limit_per_second for p in settings.projects}, clock=monotonic
        ),
        idempotency=IdempotencyStore(
            server.idempotency_ttl_s, server.idempotency_max_keys, clock=monotonic
        ),
        metrics=Metrics(),
        trusted=parse_networks(server.trusted_proxies),
        limits=limits,
        failed_auth=FailedAuthLimiter(limits.failed_auth_per_minute, clock=monotonic),
        salts=salts,
        clock=clock,
    )
