"""Errors of the stream processor, all under the one root ``EventsieveError``."""

from __future__ import annotations

from eventsieve.errors import EventsieveError


class StreamsError(EventsieveError):
    """The stream processor cannot start or go on (bad topics, broken store)."""


class InvalidEvent(StreamsError):
    """A decoded record that no rule can decide on; it goes to ``events.dlq``.

    ``field`` names what is wrong, so the DLQ record says it without a traceback.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
