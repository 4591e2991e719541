"""Rate limits in this process: per project and credential class, and per client
address for failed authentication.

Each project has a bucket per credential class (``lane``: the browsers'
public credentials, and servers' secret keys), so a backend draining its
budget never answers 429 to the browsers, nor the reverse. Each bucket
refills at ``rate`` events per second up to one second's worth (at least one
token, so a rate below 1/s still lets single events through).
A request is let through while the bucket holds a token and takes one per
event, so a batch may leave the bucket in debt; the next request waits until
the debt is repaid. That keeps the long-run rate exact without refusing
batches larger than the bucket. Limits are per process: with N workers a
project gets up to N x rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


def _take(bucket: _Bucket, rate: float, events: int, now: float) -> float:
    """Refill ``bucket`` to ``now``, then take ``events`` tokens: 0.0, or the wait."""
    capacity = max(rate, 1.0)
    bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
    bucket.updated = now
    if bucket.tokens < 1 - 1e-9:  # tolerance: refills are float sums
        return (1.0 - bucket.tokens) / rate
    bucket.tokens -= events
    return 0.0


class RateLimiter:
    """Token buckets per (project, lane); ``clock`` is a monotonic seconds source."""

    def __init__(
        self, rates: Mapping[str, float], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rates = dict(rates)
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def acquire(self, project_id: str, events: int = 1, lane: str = "public") -> float:
        """Take ``events`` tokens: 0.0 when allowed, else seconds to wait before retrying."""
        rate = self._rates.get(project_id)
        if rate is None:
            return 0.0  # no configured limit
        now = self._clock()
        bucket = self._buckets.get((project_id, lane))
        if bucket is None:
            bucket = self._buckets[project_id, lane] = _Bucket(max(rate, 1.0), now)
        return _take(bucket, rate, events, now)


class FailedAuthLimiter:
    """How many failed authentications a client address may make per minute.

    A bucket per address, refilled at ``per_minute`` a minute; ``wait``
    answers before the request is parsed, ``failed`` spends a token. At most
    ``max_addresses`` are tracked (least recently seen forgotten first), so
    a spray of addresses cannot grow memory without bound.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 65_536,
    ) -> None:
        self._rate = per_minute / 60.0
        self._capacity = float(per_minute)
        self._clock = clock
        self._max = max_addresses
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def wait(self, address: str | None) -> float:
        """Seconds this address must wait before trying again (0.0: go ahead)."""
        bucket = self._buckets.get(address or "")
        if bucket is None:
            return 0.0
        self._refill(bucket)
        return 0.0 if bucket.tokens >= 1 - 1e-9 else (1.0 - bucket.tokens) / self._rate

    def failed(self, address: str | None) -> None:
        """Record one failed authentication of this address."""
        key = address or ""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._capacity, self._clock())
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            self._refill(bucket)
        bucket.tokens -= 1

    def _refill(self, bucket: _Bucket) -> None:
        now = self._clock()
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now


def retry_after_seconds(wait: float) -> int:
    """A wait as a ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))
