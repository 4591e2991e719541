"""Errors of the producer endpoint.

A request that cannot be accepted is a :class:`Rejection`: it carries the exact
HTTP answer that the imitated API documents (status, body, media type, extra
headers), so the ASGI layer only writes it out. Publishing failures are
:class:`PublishError`; the handler turns them into 503 + ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventsieve.errors import EventsieveError, ServiceUnavailableError


class ProducerError(EventsieveError):
    """Base of every error raised by ``producers``."""


class Rejection(ProducerError):
    """A request refused with a documented HTTP answer; nothing was published.

    ``field`` names the offending input (``events[3].name``) when there is one,
    ``reason`` is a short machine-readable cause used in logs and metrics.
    """

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        media_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        field: str | None = None,
        reason: str = "invalid",
    ) -> None:
        self.status = status
        self.body = body
        self.media_type = media_type
        self.headers = dict(headers or {})
        self.field = field
        self.reason = reason
        super().__init__(f"{status} {reason}" + (f" ({field})" if field else ""))


class PublishError(ProducerError, ServiceUnavailableError):
    """Kafka did not acknowledge a record; ``kafka_error`` keeps librdkafka's error."""

    def __init__(
        self, message: str, retry_after: float = 1.0, kafka_error: object | None = None
    ) -> None:
        self.kafka_error = kafka_error
        ServiceUnavailableError.__init__(self, message, retry_after)
