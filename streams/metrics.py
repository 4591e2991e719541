"""Prometheus metrics of a worker: events by outcome, drops by reason, lag per partition.

Throughput is ``rate(eventsieve_stream_events_total[1m])``. Counters are
pre-bound per label value, because a label lookup per event costs more than
the increment itself.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from schemas.reasons import DropReason
from streams.processor import Outcome, Sink


class StreamMetrics:
    """The worker's metrics, in their own registry (tests build many workers in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        events = Counter(
            "eventsieve_stream_events",
            "Records decided by the stream, by where they went.",
            ["outcome"],
            registry=self.registry,
        )
        drops = Counter(
            "eventsieve_stream_dropped",
            "Events dropped, by reason (DESIGN.md drop reasons).",
            ["reason"],
            registry=self.registry,
        )
        dlq = Counter(
            "eventsieve_stream_dlq",
            "Records sent to the DLQ, by error type.",
            ["error_type"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "eventsieve_stream_lag",
            "Records not yet decided (high watermark minus next offset), per partition.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.state_keys = Gauge(
            "eventsieve_stream_state_keys",
            "Keys held in a state table on this worker.",
            ["table"],
            registry=self.registry,
        )
        self._events = {sink: events.labels(sink.value) for sink in Sink}
        self._drops = {reason: drops.labels(reason.value) for reason in DropReason}
        self._dlq_counter = dlq
        self._tallies: dict[tuple[Sink, DropReason | None, str | None], int] = {}

    def count(self, outcome: Outcome) -> None:
        self._events[outcome.sink].inc()
        if outcome.dropped is not None:
            self._drops[outcome.dropped.reason].inc()
        elif outcome.error is not None:
            self._dlq_counter.labels(outcome.error).inc()

    def tally(self, outcome: Outcome) -> None:
        """Count ``outcome`` at the next ``flush``: a counter's increment takes a lock,
        several times the cost of this, and the kafka engine flushes every batch."""
        key = (outcome.sink, outcome.dropped.reason if outcome.dropped else None, outcome.error)
        tallies = self._tallies
        tallies[key] = tallies.get(key, 0) + 1

    def flush(self) -> None:
        """Add what ``tally`` counted to the counters."""
        for (sink, reason, error), n in self._tallies.items():
            self._events[sink].inc(n)
            if reason is not None:
                self._drops[reason].inc(n)
            elif error is not None:
                self._dlq_counter.labels(error).inc(n)
        self._tallies.clear()

    def serve(self, port: int) -> None:
        """Expose ``/metrics`` on ``port`` (0: not exposed)."""
        if port:
            start_http_server(port, registry=self.registry)
