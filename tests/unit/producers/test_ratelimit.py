from __future__ import annotations

from producers.ratelimit import FailedAuthLimiter, RateLimiter, retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_second_of_events_then_refills_at_rate():
    clock = Clock()
    limiter = RateLimiter({"p": 10.0}, clock=clock)
    assert all(limiter.acquire("p") == 0.0 for _ in range(10))
    wait = limiter.acquire("p")
    assert wait == 0.1
    clock.now += 0.1
    assert limiter.acquire("p") == 0.0
    assert limiter.acquire("p") > 0


def test_batches_may_go_into_debt_which_delays_the_next_request():
    clock = Clock()
    limiter = RateLimiter({"p": 10.0}, clock=clock)
    assert limiter.acquire("p", 30) == 0.0  # bucket 10 -> -20
    assert limiter.acquire("p") == 2.1  # (1 - -20) / 10
    clock.now += 2.1
    assert limiter.acquire("p") == 0.0


def test_projects_are_independent_and_unknown_ones_unlimited():
    limiter = RateLimiter({"a": 1.0, "b": 1.0}, clock=Clock())
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0
    assert limiter.acquire("zzz", 10_000) == 0.0


def test_retry_after_rounds_up():
    assert [retry_after_seconds(w) for w in (0.01, 1.0, 1.2)] == [1, 1, 2]


def test_rates_below_one_per_second_still_admit_single_events():
    clock = Clock()
    limiter = RateLimiter({"p": 0.5}, clock=clock)
    assert limiter.acquire("p") == 0.0
    assert limiter.acquire("p") == 2.0
    clock.now += 2.0
    assert limiter.acquire("p") == 0.0


def test_each_credential_class_of_a_project_has_its_own_bucket() -> None:
    limiter = RateLimiter({"p": 1.0}, clock=Clock())
    assert limiter.acquire("p", lane="server") == 0.0
    assert limiter.acquire("p", lane="server") > 0
    assert limiter.acquire("p", lane="public") == 0.0


def test_failed_authentication_is_limited_per_address_and_recovers() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(per_minute=3, clock=clock)
    assert limiter.wait("1.2.3.4") == 0.0
    for _ in range(3):
        limiter.failed("1.2.3.4")
    assert limiter.wait("1.2.3.4") == 20.0  # one token back after 60 s / 3
    assert limiter.wait("5.6.7.8") == 0.0
    clock.now += 20.0
    assert limiter.wait("1.2.3.4") == 0.0


def test_failed_authentication_tracks_a_bounded_number_of_addresses() -> None:
    limiter = FailedAuthLimiter(per_minute=1, clock=Clock(), max_addresses=2)
    for address in ("a", "b", "c"):
        limiter.failed(address)
    assert limiter.wait("a") == 0.0  # forgotten, least recently seen
    assert limiter.wait("c") > 0
