"""Per-project rate limits: a token bucket per project, in this process.

Each project refills at ``rate`` events per second up to one second's worth
(at least one token, so a rate below 1/s still lets single events through).
A request is let through while the bucket holds a token and takes one per
event, so a batch may leave the bucket in debt; the next request waits until
the debt is repaid. That keeps the long-run rate exact without refusing
batches larger than the bucket. Limits are per process: with N workers a
project gets up to N x rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by project id; ``clock`` is a monotonic seconds source."""

    def __init__(
        self, rates: Mapping[str, float], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rates = dict(rates)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, project_id: str, events: int = 1) -> float:
        """Take ``events`` tokens: 0.0 when allowed, else seconds to wait before retrying."""
        rate = self._rates.get(project_id)
        if rate is None:
            return 0.0  # no configured limit
        now = self._clock()
        bucket = self._buckets.get(project_id)
        capacity = max(rate, 1.0)
        if bucket is None:
            bucket = self._buckets[project_id] = _Bucket(tokens=capacity, updated=now)
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens < 1 - 1e-9:  # tolerance: refills are float sums
            return (1.0 - bucket.tokens) / rate
        bucket.tokens -= events
        return 0.0


def retry_after_seconds(wait: float) -> int:
    """A wait as a ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))
