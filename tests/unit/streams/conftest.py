"""Factories for the streams unit tests: Facts with sensible defaults, fixed times."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import count
from typing import Any

import pytest

from streams.facts import Facts

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, in ms
MIN = 60_000

_ids = count()


def facts(**fields: Any) -> Facts:
    """Facts of one event; each call gets a fresh event id unless one is given."""
    base = Facts(
        event_id=f"e{next(_ids)}",
        project="demo",
        user_key="u1",
        name="viewed_product",
        fingerprint="fp-a",
        time=T0,
    )
    return replace(base, **fields)


@pytest.fixture
def make_facts() -> Callable[..., Facts]:
    return facts
