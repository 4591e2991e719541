"""``eventsieve stats`` arguments: durations and times."""

from __future__ import annotations

import datetime as dt

import pytest

from eventsieve.errors import EventsieveError
from ops.cli.sink import UsageError, parse_duration, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("15m", dt.timedelta(minutes=15)),
        ("24h", dt.timedelta(hours=24)),
        ("7d", dt.timedelta(days=7)),
        ("2w", dt.timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "7x", "-1h", "1.5h"])
def test_bad_durations_are_user_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)
    assert issubclass(UsageError, EventsieveError)


def test_times_without_a_zone_are_utc() -> None:
    assert parse_time("2025-11-28") == dt.datetime(2025, 11, 28, tzinfo=dt.UTC)
    zoned = parse_time("2025-11-28T10:00:00+02:00")
    assert zoned.astimezone(dt.UTC).hour == 8
    with pytest.raises(UsageError):
        parse_time("yesterday")
