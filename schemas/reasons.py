"""Closed vocabularies of the contract: drop reasons, stages, sources, kinds.

They travel as Avro *strings*, not Avro enums: adding a member here is not a
schema change, and an old consumer reading a new value sees a plain string.
``str`` enums compare equal to their value, so ``DropReason.BOT == "bot"``.
"""

from __future__ import annotations

from enum import StrEnum


class DropReason(StrEnum):
    """Why an event went to ``events.dropped`` (DESIGN.md, "Semantics")."""

    BOT = "bot"
    SPAM_REFERRER = "spam_referrer"
    DC_IP = "dc_ip"
    THREAT_IP = "threat_ip"
    DUPLICATE = "duplicate"
    DUPLICATE_IDEMPOTENCY_KEY = "duplicate_idempotency_key"
    EMAIL_OPEN_THROTTLED = "email_open_throttled"
    DUPLICATE_ORDER = "duplicate_order"
    SITE_IP_BLOCKLIST = "site_ip_blocklist"
    SITE_COUNTRY_BLOCKLIST = "site_country_blocklist"
    SITE_PAGE_BLOCKLIST = "site_page_blocklist"
    SITE_HOSTNAME_ALLOWLIST = "site_hostname_allowlist"
    INVALID = "invalid"


class Stage(StrEnum):
    """The stream's stages in pipeline order, plus the sink (DESIGN.md diagram)."""

    DECODE = "decode"
    VALIDATE = "validate"
    ENRICH = "enrich"
    BOT = "bot"
    SPAM = "spam"
    IP_CLASSIFICATION = "ip_classification"
    SHIELDS = "shields"
    DEDUP = "dedup"
    THROTTLE = "throttle"
    ORDERS = "orders"
    SINK = "sink"


class Source(StrEnum):
    """The API shape an event came through (RawEvent ``source``)."""

    NATIVE = "native"
    VEMETRIC = "vemetric"
    VERO = "vero"
    VTCDN = "vtcdn"
    PLAUSIBLE = "plausible"
    VIBEFOLLOW = "vibefollow"
    DIRECT = "direct"


# A drop whose reason says "this delivery repeats an event already decided"
# concerns the copy, not the event: when the copy carries the same event_id
# (a publisher retry), its drop must not replace the accepted row. The sink
# ranks it below every other decision (``sinks.rows.decision_version``), so it
# only stands when nothing else exists for that event_id; replay compares
# decisions the same way.
COPY_REASONS = frozenset({DropReason.DUPLICATE_IDEMPOTENCY_KEY.value})


class Credential(StrEnum):
    """What authenticated an event (RawEvent ``credential``)."""

    # A secret credential (server key, Vero token, vtcdn key), or a publisher
    # with write access to events.raw.
    SERVER = "server"
    # A browser's public token, or no credential at all (Plausible).
    PUBLIC = "public"


class EventKind(StrEnum):
    """What an event does (RawEvent ``kind``)."""

    TRACK = "track"
    IDENTIFY = "identify"
    UPDATE_USER = "update_user"
    # The user asked to be forgotten: the profile and its properties go.
    DELETE_USER = "delete_user"
