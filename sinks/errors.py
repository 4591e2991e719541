"""Errors of the sink, all under eventsieve's root error."""

from __future__ import annotations

from eventsieve.errors import EventsieveError, ServiceUnavailableError


class SinkError(EventsieveError):
    """Base of the sink's own errors."""


class MigrationError(SinkError):
    """A migration statement failed; ``version`` names the migration."""

    def __init__(self, version: int, message: str) -> None:
        self.version = version
        super().__init__(f"migration {version} failed: {message}")


class ClickHouseUnavailableError(ServiceUnavailableError):
    """ClickHouse refused or did not answer an insert/query; worth retrying later."""


class ClickHouseRejectedError(SinkError):
    """ClickHouse (or the driver, serializing) refused the data itself: retrying the
    same rows can never succeed. ``code`` is the server's error code (0: client side)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


class RowError(SinkError):
    """A Kafka record cannot become a row; it goes to the DLQ with ``error_type``."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(message)


class DlqUnavailableError(ServiceUnavailableError):
    """Kafka did not acknowledge the batch's DLQ records in time; retry the batch later."""
