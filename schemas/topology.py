"""The topology: the name of every topic eventsieve keeps besides the configured ones.

The configured topics (raw, orders, clean, dropped, dlq) are in
``Settings.topics``; these are derived from them, shared by both stream
engines, the endpoint, the operators' tools and the tests.
"""

from __future__ import annotations

from eventsieve.config import Settings

USER_STORE = "user-state"
ORDER_STORE = "order-state"


def rekey_topic(settings: Settings) -> str:
    """The internal topic that misplaced raw records are re-keyed through."""
    return f"{settings.streams.app_id}-{settings.topics.raw}-rekey"


def changelog_topic(settings: Settings, store: str) -> str:
    """The compacted changelog topic of one kafka-engine store.

    Not Faust's ``<app_id>-<table>-changelog``: the two engines encode values
    differently, so switching engines never reads the other's changelog.
    """
    return f"{settings.streams.app_id}-{store}-store-changelog"


def faust_changelog_topic(settings: Settings, table: str) -> str:
    """The changelog topic Faust keeps for one of its tables (``<app_id>-<table>-changelog``)."""
    return f"{settings.streams.app_id}-{table}-changelog"


def salts_topic(raw_topic: str) -> str:
    """The topic of the endpoint's daily visitor-id nonces, named after the raw topic it serves."""
    return f"{raw_topic}.salts"
