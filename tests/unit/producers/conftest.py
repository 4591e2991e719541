"""Fixtures for the endpoint's unit tests: requests and credentials without a server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventsieve.config import ProjectSettings
from producers.apis.base import ParseContext
from producers.model import HttpRequest
from producers.projects import ProjectDirectory, hash_key

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

PROJECTS = (
    ProjectSettings(
        id="alpha",
        tokens=("alpha-token",),
        server_keys=(hash_key("alpha-secret"),),
        vero_tokens=(hash_key("alpha-vero"),),
        vtcdn_keys=(hash_key("alpha-vtcdn"),),
        domains=("alpha.example", "www.alpha.example"),
    ),
    ProjectSettings(
        id="beta",
        tokens=("beta-token",),
        server_keys=(hash_key("beta-secret"),),
        vero_tokens=(hash_key("beta-vero"),),
        vtcdn_keys=(hash_key("beta-vtcdn"),),
        domains=("beta.example",),
    ),
)


@pytest.fixture
def ctx() -> ParseContext:
    return ParseContext(ProjectDirectory.from_projects(PROJECTS), max_batch_events=10)


MakeRequest = Callable[..., HttpRequest]


@pytest.fixture
def make_request() -> MakeRequest:
    """``make_request(body, headers=..., query=..., path=...)``: JSON unless bytes are given."""

    def make(
        body: Any = b"",
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        method: str = "POST",
        path: str = "/",
    ) -> HttpRequest:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return HttpRequest(
            method=method,
            path=path,
            headers={k.lower(): v for k, v in (headers or {}).items()},
            query=query or {},
            body=raw,
            received_at=RECEIVED,
        )

    return make
