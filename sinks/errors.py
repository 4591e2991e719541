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


class ColumnsMismatchError(SinkError):
    """A table's columns (names and types, as the server reports them) are not the ones
    a Native block was made for; nothing was inserted. The writer inserts the rows
    through clickhouse-driver's own serialisation instead, which adapts to the table."""

    def __init__(self, actual: list[tuple[str, str]], wanted: list[tuple[str, str]]) -> None:
        self.differences = [
            (a, w) for a, w in zip(actual, wanted, strict=False) if tuple(a) != tuple(w)
        ]
        if len(actual) != len(wanted):
            self.differences.append((("columns", str(len(actual))), ("columns", str(len(wanted)))))
        shown = "; ".join(f"{a[0]} {a[1]} (expected {w[1]})" for a, w in self.differences[:5])
        super().__init__(f"table columns differ: {shown}")


class RowError(SinkError):
    """A Kafka record cannot become a row; it goes to the DLQ with ``error_type``."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(message)


class DlqUnavailableError(ServiceUnavailableError):
    """Kafka did not acknowledge the batch's DLQ records in time; retry the batch later."""
