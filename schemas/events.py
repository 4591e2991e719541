"""The Python event model: plain dicts typed as TypedDicts, field for field the .avsc files.

Plain dicts are what fastavro reads and writes fastest, so the hot path never
converts to or from objects. Every key is present after decoding (defaults
applied). Timestamps are ``int`` milliseconds since the epoch (UTC)
everywhere, never ``datetime``: cheaper to decode, compare and hash, and
exactly what ClickHouse ``DateTime64(3)`` takes.

``new_raw_event`` builds a complete RawEvent from the few fields a caller
knows; ``clean_event`` and ``dropped_event`` turn a RawEvent into the stream's
outputs, so no stage copies field lists by hand.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, TypedDict

from schemas.reasons import Credential, DropReason, EventKind, Source, Stage


class RawEvent(TypedDict):
    """An event as received (schemas/avro/raw_event.avsc)."""

    event_id: str
    project: str
    name: str
    timestamp: int
    received_at: int
    source: str
    kind: str
    user_id: str | None
    email: str | None
    anonymous_id: str | None
    visitor_id: str | None
    display_name: str | None
    url: str | None
    referrer: str | None
    domain: str | None
    properties: dict[str, str]
    user_properties: dict[str, str]
    user_properties_once: dict[str, str]
    user_properties_unset: list[str]
    ip: str | None
    user_agent: str | None
    ip_classification: str | None
    country: str | None
    context_id: str | None
    interactive: bool | None
    scroll_depth: int | None
    engagement_time_ms: int | None
    hash_mode: bool | None
    sdk_name: str | None
    sdk_version: str | None
    idempotency_key: str | None
    order_id: str | None
    revenue_amount: str | None
    revenue_currency: str | None
    credential: str


class _Derived(TypedDict):
    normalised_name: str
    user_key: str
    fingerprint: str | None
    browser: str | None
    browser_version: str | None
    os: str | None
    os_version: str | None
    device: str | None
    checks: list[str]
    decided_at: int
    source_topic: str
    source_partition: int
    source_offset: int


DERIVED_FIELDS: tuple[str, ...] = tuple(_Derived.__annotations__)
"""The fields the stream adds to a raw event (CleanEvent and DroppedEvent)."""
RESTATED_FIELDS = ("timestamp", "visitor_id")
"""RawEvent fields the stream may change in its outputs: the event time it decided
with, and the visitor id it derived for an event without any user id."""
DROP_FIELDS = ("reason", "stage", "detail")
"""What a DroppedEvent adds to a CleanEvent's fields."""


class CleanEvent(_Derived):
    """An accepted event (schemas/avro/clean_event.avsc): RawEvent minus ``ip``, plus derived."""

    event_id: str
    project: str
    name: str
    timestamp: int
    received_at: int
    source: str
    kind: str
    user_id: str | None
    email: str | None
    anonymous_id: str | None
    visitor_id: str | None
    display_name: str | None
    url: str | None
    referrer: str | None
    domain: str | None
    properties: dict[str, str]
    user_properties: dict[str, str]
    user_properties_once: dict[str, str]
    user_properties_unset: list[str]
    user_agent: str | None
    ip_classification: str | None
    country: str | None
    context_id: str | None
    interactive: bool | None
    scroll_depth: int | None
    engagement_time_ms: int | None
    hash_mode: bool | None
    sdk_name: str | None
    sdk_version: str | None
    idempotency_key: str | None
    order_id: str | None
    revenue_amount: str | None
    revenue_currency: str | None
    credential: str


class DroppedEvent(CleanEvent):
    """A dropped event (schemas/avro/dropped_event.avsc): CleanEvent's fields plus why."""

    reason: str
    stage: str
    detail: str


class DlqHeader(TypedDict):
    key: str
    value: bytes | None


class DlqRecord(TypedDict):
    """An undecodable or unprocessable record, kept byte for byte (dlq_record.avsc)."""

    key: bytes | None
    value: bytes | None
    headers: list[DlqHeader]
    topic: str
    partition: int
    offset: int
    record_timestamp: int | None
    error_type: str
    error: str
    stage: str
    failed_at: int


RAW_DEFAULTS: dict[str, Any] = {
    "source": Source.DIRECT.value,
    "kind": EventKind.TRACK.value,
    "user_id": None,
    "email": None,
    "anonymous_id": None,
    "visitor_id": None,
    "display_name": None,
    "url": None,
    "referrer": None,
    "domain": None,
    "properties": {},
    "user_properties": {},
    "user_properties_once": {},
    "user_properties_unset": [],
    "ip": None,
    "user_agent": None,
    "ip_classification": None,
    "country": None,
    "context_id": None,
    "interactive": None,
    "scroll_depth": None,
    "engagement_time_ms": None,
    "hash_mode": None,
    "sdk_name": None,
    "sdk_version": None,
    "idempotency_key": None,
    "order_id": None,
    "revenue_amount": None,
    "revenue_currency": None,
    "credential": Credential.SERVER.value,
}
"""Default of every optional RawEvent field (mutable defaults are copied on use)."""


def now_ms() -> int:
    """Wall-clock time in ms since the epoch; only for ``received_at``/``decided_at``."""
    return time.time_ns() // 1_000_000


def new_event_id() -> str:
    """A fresh event id (UUID4 text), for events whose publisher gave none."""
    return str(uuid.uuid4())


def derived_event_id(topic: str, partition: int, offset: int) -> str:
    """The event id of a record published without one: stable across replays.

    A UUID5 of the record's position, so re-reading the same record always
    yields the same id and ClickHouse keeps one row for it.
    """
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{topic}/{partition}/{offset}"))


def copy_event_id(event_id: str, event_time: int) -> str:
    """The id a dropped copy is stored under: an event id re-sent at another time.

    Derived from the id and the copy's event time, so a re-read or a replay of
    the copy lands on the same row, and the original keeps its id to itself.
    """
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"copy/{event_id}/{event_time}"))


_EVENT_ID_NAMESPACE = uuid.UUID("6f1d3a52-9a43-4c56-9a7e-3f2b0c9d8e71")


def new_raw_event(
    *,
    project: str,
    name: str,
    event_id: str | None = None,
    timestamp: int | None = None,
    received_at: int | None = None,
    **fields: Any,
) -> RawEvent:
    """A complete RawEvent: unknown keyword names raise TypeError (typos are bugs).

    ``received_at`` defaults to now, ``timestamp`` to ``received_at`` and
    ``event_id`` to a fresh UUID4.
    """
    unknown = set(fields) - RAW_DEFAULTS.keys()
    if unknown:
        raise TypeError(f"unknown RawEvent field(s): {', '.join(sorted(unknown))}")
    received = now_ms() if received_at is None else received_at
    event: dict[str, Any] = {
        "event_id": event_id or new_event_id(),
        "project": project,
        "name": name,
        "timestamp": received if timestamp is None else timestamp,
        "received_at": received,
    }
    for key, default in RAW_DEFAULTS.items():
        value = fields.get(key, default)
        event[key] = value.copy() if isinstance(value, dict | list) else value
    return event  # type: ignore[return-value]


def clean_event(
    raw: RawEvent,
    *,
    normalised_name: str,
    user_key: str,
    decided_at: int,
    fingerprint: str | None = None,
    checks: list[str] | None = None,
    source_topic: str = "",
    source_partition: int = -1,
    source_offset: int = -1,
    **derived: Any,
) -> CleanEvent:
    """The CleanEvent for an accepted raw event: drops ``ip``, adds the derived fields.

    ``derived`` may set ``browser``, ``browser_version``, ``os``,
    ``os_version``, ``device`` and override raw fields (e.g. ``visitor_id``,
    ``country`` found by the stream).
    """
    out: dict[str, Any] = dict(raw)
    out.pop("ip", None)
    out.update(
        normalised_name=normalised_name,
        user_key=user_key,
        fingerprint=fingerprint,
        browser=None,
        browser_version=None,
        os=None,
        os_version=None,
        device=None,
        checks=list(checks or ()),
        decided_at=decided_at,
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
    )
    unknown = set(derived) - out.keys()
    if unknown:
        raise TypeError(f"unknown CleanEvent field(s): {', '.join(sorted(unknown))}")
    out.update(derived)
    return out  # type: ignore[return-value]


def dropped_event(
    raw: RawEvent,
    *,
    reason: DropReason | str,
    stage: Stage | str,
    detail: str = "",
    decided_at: int,
    normalised_name: str = "",
    user_key: str = "",
    **derived: Any,
) -> DroppedEvent:
    """The DroppedEvent for a raw event dropped at ``stage`` for ``reason``.

    Takes the same derived keywords as ``clean_event``; those not known yet
    at the dropping stage keep their defaults.
    """
    out: dict[str, Any] = dict(
        clean_event(
            raw,
            normalised_name=normalised_name,
            user_key=user_key,
            decided_at=decided_at,
            **derived,
        )
    )
    out["reason"] = str(reason)
    out["stage"] = str(stage)
    out["detail"] = detail
    return out  # type: ignore[return-value]


# A DLQ record must fit where the original may not have: Kafka's 1,000,000-byte
# message limit, with its envelope (error text, headers, position). Keys and
# values are cut to this many bytes, headers to 64 of 4 KiB, and the error says so.
MAX_DLQ_PAYLOAD_BYTES = 256_000


def bounded_dlq_payload(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], str]:
    """Key, value and headers cut to fit a DLQ record, and a note of what was cut ('' if nothing).

    An oversized record must not stop the stage that parks it: its first
    bytes are kept, so it can still be looked at and, once cured, re-driven.
    """
    cut = []
    if key is not None and len(key) > MAX_DLQ_PAYLOAD_BYTES:
        cut.append(f"key truncated to {MAX_DLQ_PAYLOAD_BYTES} of {len(key)} bytes")
        key = key[:MAX_DLQ_PAYLOAD_BYTES]
    if value is not None and len(value) > MAX_DLQ_PAYLOAD_BYTES:
        cut.append(f"value truncated to {MAX_DLQ_PAYLOAD_BYTES} of {len(value)} bytes")
        value = value[:MAX_DLQ_PAYLOAD_BYTES]
    kept = [(k[:256], v if v is None else v[:4096]) for k, v in headers[:64]]
    if kept != headers:
        cut.append("headers truncated to 64 of at most 256 + 4096 bytes each")
    return key, value, kept, "; ".join(cut)
