"""What every API module provides: its routes, and its own words for the common errors.

Rate limiting, body-size limits and Kafka outages are decided outside the
parsers, but each API answers them in its documented shape; ``ApiErrors``
is that vocabulary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from producers.errors import Rejection
from producers.model import HttpRequest, Parsed
from producers.projects import ProjectDirectory
from schemas.reasons import Source


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What parsers may consult besides the request: credentials and limits."""

    directory: ProjectDirectory
    max_batch_events: int = 1_000


Parser = Callable[[HttpRequest, ParseContext], Parsed]


class ApiErrors(ABC):
    """An API's documented answers to the failures every route shares."""

    @abstractmethod
    def invalid(self, field: str, message: str) -> Rejection:
        """The body or a field failed validation."""

    @abstractmethod
    def unauthorized(self, message: str = "invalid credentials") -> Rejection:
        """No credential, or one no project owns."""

    @abstractmethod
    def rate_limited(self, retry_after: int) -> Rejection:
        """The project is over its rate limit; try again in ``retry_after`` s."""

    @abstractmethod
    def unavailable(self, retry_after: int) -> Rejection:
        """Kafka did not acknowledge the write; nothing was accepted."""

    def idempotency_conflict(self) -> Rejection:
        """The ``Idempotency-Key`` was used before with another body (422)."""
        message = "was already used with a different body"
        return self._as(422, "idempotency_key_reused", "Idempotency-Key", message)

    def too_large(self, limit: int) -> Rejection:
        """The body is over ``limit`` bytes (413 in every API)."""
        return self._as(413, "too_large", "body", f"must be at most {limit} bytes")

    def record_too_large(self, field: str, size: int, limit: int) -> Rejection:
        """Events, encoded, are over what the pipeline carries (413)."""
        message = f"{size} bytes encoded; the pipeline carries at most {limit}"
        return self._as(413, "too_large", field, message)

    def headers_too_large(self, message: str) -> Rejection:
        """Too many or too large request headers (431)."""
        return self._as(431, "headers_too_large", "headers", message)

    def request_timeout(self, seconds: float) -> Rejection:
        """The body did not arrive in time (408)."""
        return self._as(408, "timeout", "body", f"did not arrive within {seconds:g} s")

    def _as(self, status: int, reason: str, field: str, message: str) -> Rejection:
        """This API's validation answer for ``field``, with another status and reason."""
        rejection = self.invalid(field, message)
        return Rejection(
            status, rejection.body, media_type=rejection.media_type, field=field, reason=reason
        )


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP route: ``parse`` turns a request into events or a rejection.

    ``idempotent`` routes honour ``Idempotency-Key`` (replay of the first answer).
    """

    method: str
    path: str
    source: Source
    parse: Parser
    errors: ApiErrors
    idempotent: bool = False
    name: str = ""

    @property
    def label(self) -> str:
        """The metrics/log label of this route."""
        return self.name or f"{self.source.value}:{self.method} {self.path}"


def retry_after_header(seconds: int) -> dict[str, str]:
    """The ``Retry-After`` header for ``seconds`` (at least 1: 0 would invite a busy loop)."""
    return {"retry-after": str(max(1, int(seconds)))}
