"""The periodic rate line: per-second rates of a stage's counters, silent when idle."""

from prometheus_client import CollectorRegistry, Counter

from eventsieve.ratelog import RateLog, counter_totals
from producers.metrics import Metrics
from producers.operations import RATES as endpoint_rates
from sinks.metrics import SinkMetrics
from sinks.service import RATES as sink_rates
from streams.metrics import StreamMetrics
from streams.worker import RATES as worker_rates


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_registry() -> tuple[CollectorRegistry, Counter, Counter]:
    registry = CollectorRegistry()
    decided = Counter("eventsieve_stream_events", "decided", ["outcome"], registry=registry)
    dlq = Counter("eventsieve_stream_dlq", "dlq", registry=registry)
    return registry, decided, dlq


NAMES = {"decided": "eventsieve_stream_events", "dlq": "eventsieve_stream_dlq"}


def test_totals_sum_every_label_set_and_ignore_other_metrics() -> None:
    registry, decided, _ = make_registry()
    decided.labels("clean").inc(3)
    decided.labels("dropped").inc(2)
    Counter("other", "not asked for", registry=registry).inc(7)
    assert counter_totals(registry, NAMES) == {"decided": 5.0, "dlq": 0.0}


def test_rates_are_per_second_since_the_last_tick() -> None:
    registry, decided, dlq = make_registry()
    clock = FakeClock()
    rate_log = RateLog(registry, NAMES, clock=clock)
    decided.labels("clean").inc(40)
    decided.labels("dropped").inc(10)
    dlq.inc(5)
    clock.now += 10
    assert rate_log.tick() == {"decided": 5.0, "dlq": 0.5}
    decided.labels("clean").inc(20)
    clock.now += 4
    assert rate_log.tick() == {"decided": 5.0, "dlq": 0.0}


def test_an_idle_stage_logs_nothing() -> None:
    registry, decided, _ = make_registry()
    clock = FakeClock()
    rate_log = RateLog(registry, NAMES, clock=clock)
    clock.now += 10
    assert rate_log.tick() is None
    decided.labels("clean").inc()
    clock.now += 10
    assert rate_log.tick() == {"decided": 0.1, "dlq": 0.0}
    clock.now += 10
    assert rate_log.tick() is None


def test_every_stage_names_counters_its_metrics_have() -> None:
    """A renamed counter must not leave a stage's rate line silently at zero."""
    for rates, registry in [
        (endpoint_rates, Metrics().registry),
        (worker_rates, StreamMetrics().registry),
        (sink_rates, SinkMetrics().registry),
    ]:
        families = {family.name for family in registry.collect()}
        assert {name.removesuffix("_total") for name in rates.values()} <= families
