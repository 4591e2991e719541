"""One log line per interval with a stage's rates, read from its own Prometheus counters.

A person watching ``eventsieve run`` wants to see that events flow, not one
line per request or record. Each stage already counts what it does in its
metrics registry; ``RateLog`` samples chosen counters every ``interval_s``
and logs their per-second rates as one ``rate`` event, only when something
moved (an idle pipeline stays quiet).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry

from eventsieve.logging import get_logger

log = get_logger("eventsieve.rate")


def counter_totals(registry: CollectorRegistry, names: Mapping[str, str]) -> dict[str, float]:
    """``{label: total}``: each counter's value summed over all its label sets.

    ``names`` maps a short label to a counter's name (with or without the
    ``_total`` suffix of its sample).
    """
    wanted = {name.removesuffix("_total"): label for label, name in names.items()}
    totals = dict.fromkeys(names, 0.0)
    for family in registry.collect():
        label = wanted.get(family.name)
        if label is None:
            continue
        for sample in family.samples:
            if sample.name == family.name + "_total":
                totals[label] += sample.value
    return totals


def rates(
    before: Mapping[str, float], after: Mapping[str, float], seconds: float
) -> dict[str, float]:
    """Per-second change of each total between two samples (never negative)."""
    return {
        label: max(0.0, after[label] - before.get(label, 0.0)) / seconds
        for label in after
        if seconds > 0
    }


class RateLog:
    """A daemon thread logging the rates of ``names`` in ``registry`` every ``interval_s``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        names: Mapping[str, str],
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.names = dict(names)
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = (clock(), counter_totals(registry, self.names))

    def start(self) -> RateLog:
        self._thread = threading.Thread(target=self._run, name="rate-log", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> dict[str, float] | None:
        """Log the rates since the last tick if any counter moved; return them (None: idle)."""
        now, totals = self.clock(), counter_totals(self.registry, self.names)
        then, before = self._last
        self._last = (now, totals)
        if totals == before:
            return None
        per_second = rates(before, totals, now - then)
        log.info(
            "rate", window_s=round(now - then), **{k: f"{v:,.1f}/s" for k, v in per_second.items()}
        )
        return per_second

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()
