"""The root of every error eventsieve raises on purpose.

Errors carry data (what to install, which key is bad, when to retry) so the
CLI can print one clear line and callers can act on it without parsing text.
Each package may subclass these in its own ``exceptions``/``errors`` module.
"""

from __future__ import annotations


class EventsieveError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits non-zero, no traceback."""


class ConfigError(EventsieveError):
    """The configuration file or an environment override is invalid.

    ``problems`` maps the dotted key (``projects.0.tokens``) to what is wrong.
    """

    def __init__(self, source: str, problems: dict[str, str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {key}: {msg}" for key, msg in problems.items())
        super().__init__(f"invalid configuration ({source}):\n{lines}")


class MissingDependencyError(EventsieveError):
    """A program the local stack needs is not installed.

    ``hint`` tells the user what to install, or to use Docker instead.
    """

    def __init__(self, what: str, hint: str) -> None:
        self.what = what
        self.hint = hint
        super().__init__(f"{what} not found. {hint}")


class ServiceError(EventsieveError):
    """A service (Kafka, ClickHouse) did not start or does not answer."""


class ServiceUnavailableError(ServiceError):
    """A service is down for now; ``retry_after`` seconds is a fair wait."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)
