"""Prometheus metrics of the endpoint, in a registry per app (tests build many apps).

With several worker processes each has its own registry: scrape each worker
on its own port, or run one process per port behind the load balancer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Buckets for sub-millisecond to multi-second work: produce acks take ~5-50 ms.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class Metrics:
    """The endpoint's counters and histograms."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "eventsieve_http_requests",
            "HTTP requests answered, by route and status.",
            ("route", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "eventsieve_http_request_seconds",
            "Time from request start to the last byte of the answer, by route.",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.accepted = Counter(
            "eventsieve_events_accepted",
            "Events acknowledged by Kafka, by source API.",
            ("source",),
            registry=self.registry,
        )
        self.rejected = Counter(
            "eventsieve_requests_rejected",
            "Requests refused before publishing, by source API and reason.",
            ("source", "reason"),
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "eventsieve_produce_seconds",
            "Time from produce() to Kafka's acknowledgement of a request's records.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The text format for ``GET /metrics``."""
        return generate_latest(self.registry)
