"""Decoded events → ClickHouse rows, column by column. Pure: no I/O.

A ``Batch`` collects rows for the insert targets (``events``,
``user_updates``, ``user_property_updates``, ``user_deletions``) as per-column
lists, which is the shape clickhouse-driver's ``columnar=True`` insert takes
without copying.
A record that cannot become a row raises ``RowError`` *before* anything of it
is appended, so a poison record never leaves half a row behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from schemas.reasons import COPY_REASONS
from sinks.ddl import (
    CLEARED,
    EVENT_COLUMNS,
    OP_SET,
    OP_SET_ONCE,
    OP_UNSET,
    USER_DELETION_COLUMNS,
    USER_FIELDS,
    USER_PROPERTY_UPDATE_COLUMNS,
    USER_UPDATE_COLUMNS,
)
from sinks.errors import RowError

# DateTime is a UInt32 of seconds on every ClickHouse version.
MAX_TIMESTAMP_MS = (2**32 - 1) * 1000
# Event ids are UUIDs or publisher ids; anything longer is not an id.
MAX_EVENT_ID_LENGTH = 256
# decided_at in ms fits in 44 bits until the year 2527; the bits above rank decisions.
RANK_SHIFT = 44
# User-property keys whose value is also the profile's avatar (Vemetric's "avatarUrl").
AVATAR_KEYS = ("avatar", "avatarUrl", "avatar_url")
# Kinds that are about the user rather than an action of the user.
PROFILE_KINDS = frozenset({"identify", "update_user"})
DELETE_USER = "delete_user"
# Decimal(18, 3): 15 digits before the point.
MAX_REVENUE = Decimal("1e15")


class Decision(StrEnum):
    """The decision a row records; the values of the ``decision`` Enum8 column."""

    ACCEPTED = "accepted"
    DROPPED = "dropped"


def decision_version(
    decided_at_ms: int, decision: Decision, reason: str = "", credential: str = "server"
) -> int:
    """The ReplacingMergeTree version of a decision: newest decision wins.

    Ordered by rank first, then by ``decided_at``: a replay with changed rules
    decides later, so its decision replaces the old one, and re-reading the
    same record gives the same version, so nothing is counted twice. Ranks:
    an event sent with a server credential outranks any sent with a public
    one (a browser reusing a server event's id can never replace its row),
    and within each, a copy-drop ranks below any other decision.
    """
    rank = 0 if decision is Decision.DROPPED and reason in COPY_REASONS else 1
    if credential != "public":
        rank += 2
    return (rank << RANK_SHIFT) | decided_at_ms


def _text(value: Any) -> str:
    return "" if value is None else value


def _millis(event: Mapping[str, Any], field: str) -> int:
    value = event.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RowError("invalid_field", f"{field} is {value!r}, expected ms since the epoch")
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise RowError("out_of_range", f"{field}={value} is outside 1970..2106")
    return value


def _check_identity(event: Mapping[str, Any]) -> None:
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise RowError("missing_field", "event_id is empty")
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise RowError("invalid_field", f"event_id is {len(event_id)} characters long")
    project = event.get("project")
    if not isinstance(project, str) or not project:
        raise RowError("missing_field", "project is empty")


def event_row(event: Mapping[str, Any], decision: Decision) -> tuple[Any, ...]:
    """One ``events`` row (in ``EVENT_COLUMNS`` order) of a CleanEvent or DroppedEvent.

    The hot path of the sink: one dict lookup per column, no helper calls
    (``or ""`` maps an absent optional string to the column's empty value).
    """
    _check_identity(event)
    timestamp = _millis(event, "timestamp")
    decided_at = _millis(event, "decided_at")
    received_at = _millis(event, "received_at")
    g = event.get
    if decision is Decision.DROPPED:
        reason = g("reason") or ""
        if not reason:
            raise RowError("missing_field", "a dropped event without a reason")
        stage, detail = g("stage") or "", g("detail") or ""
    else:
        reason = stage = detail = ""
    properties = g("properties") or {}
    user_properties = g("user_properties") or {}
    interactive, hash_mode = g("interactive"), g("hash_mode")
    try:
        return (
            event["project"],
            timestamp // 1000,
            event["event_id"],
            timestamp,
            received_at,
            decided_at,
            decision_version(decided_at, decision, reason, g("credential") or "server"),
            decision.value,
            reason,
            stage,
            detail,
            event["name"],
            g("normalised_name") or "",
            g("kind") or "",
            g("source") or "",
            g("user_key") or "",
            g("user_id") or "",
            g("email") or "",
            g("anonymous_id") or "",
            g("visitor_id") or "",
            g("display_name") or "",
            g("url") or "",
            g("referrer") or "",
            g("domain") or "",
            g("user_agent") or "",
            g("ip_classification") or "",
            g("country") or "",
            g("context_id") or "",
            None if interactive is None else int(interactive),
            g("scroll_depth"),
            g("engagement_time_ms"),
            None if hash_mode is None else int(hash_mode),
            g("sdk_name") or "",
            g("sdk_version") or "",
            g("idempotency_key") or "",
            g("order_id") or "",
            g("fingerprint") or "",
            g("browser") or "",
            g("browser_version") or "",
            g("os") or "",
            g("os_version") or "",
            g("device") or "",
            list(properties),
            list(properties.values()),
            list(user_properties),
            list(user_properties.values()),
            g("checks") or [],
            g("source_topic") or "",
            g("source_partition", -1),
            g("source_offset", -1),
            parse_revenue(g("revenue_amount")),
            g("revenue_currency") or "",
        )
    except KeyError as exc:
        raise RowError("missing_field", f"{exc.args[0]} is missing") from None
    except (AttributeError, TypeError) as exc:
        raise RowError("invalid_field", f"properties are not a map: {exc}") from None


def parse_revenue(amount: str | None) -> Decimal | None:
    """The ``revenue_amount`` column's value: the decimal text as a Decimal, or NULL."""
    if amount is None:
        return None
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError):
        raise RowError("invalid_field", f"revenue_amount {amount!r} is not a number") from None
    if not value.is_finite() or abs(value) >= MAX_REVENUE:
        raise RowError("invalid_field", f"revenue_amount {amount!r} is out of range")
    return value


def profile_key(event: Mapping[str, Any]) -> str:
    """Whose profile an event is about: the user id, else the (lower-cased) e-mail, else ''.

    Users known only by e-mail (vtcdn, Vero) have profiles too, keyed like
    the Kafka key's user part (``schemas.canonical.user_key``); anonymous
    visitors have none.
    """
    user_id = event.get("user_id")
    if user_id:
        return str(user_id)
    email = event.get("email")
    return email.strip().lower() if email else ""


def avatar_of(user_properties: Mapping[str, str]) -> str:
    """The avatar URL carried as a user property, or ''."""
    if user_properties:
        for key in AVATAR_KEYS:
            if value := user_properties.get(key):
                return value
    return ""


def user_update_row(event: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The ``user_updates`` row of an accepted event, or None if it says nothing of a user.

    Only events of a known user (``profile_key``) update a profile; the
    version is the event time, so the newest event wins whatever the arrival
    order. A deletion clears every field (``CLEARED``), so nothing from
    before it shows again if the user comes back.
    """
    user = profile_key(event)
    if not user:
        return None
    kind = event.get("kind")
    if kind == DELETE_USER:
        return (event["project"], user, event["timestamp"], event["event_id"]) + (CLEARED,) * len(
            USER_FIELDS
        )
    user_properties = event.get("user_properties") or {}
    values = {
        "display_name": _text(event.get("display_name")),
        "email": _text(event.get("email")),
        "avatar": avatar_of(user_properties),
        "anonymous_id": _text(event.get("anonymous_id")),
    }
    profile = (
        kind in PROFILE_KINDS
        or any(values[f] for f in ("display_name", "email", "avatar"))
        or bool(user_properties)
        or bool(event.get("user_properties_once"))
        or bool(event.get("user_properties_unset"))
    )
    if not profile:
        return None  # a plain action of a known user: nothing about the profile
    return (
        event["project"],
        user,
        event["timestamp"],
        event["event_id"],
        *(values[f] for f in USER_FIELDS),
    )


def user_property_rows(event: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The ``user_property_updates`` rows of an accepted event (set, set once, unset)."""
    user = profile_key(event)
    if not user or event.get("kind") == DELETE_USER:
        return []
    project, version = event["project"], event["timestamp"]
    rows: list[tuple[Any, ...]] = []
    for key, value in (event.get("user_properties") or {}).items():
        rows.append((project, user, key, value, OP_SET, version))
    for key, value in (event.get("user_properties_once") or {}).items():
        rows.append((project, user, key, value, OP_SET_ONCE, version))
    for key in event.get("user_properties_unset") or ():
        rows.append((project, user, key, "", OP_UNSET, version))
    return rows


def user_deletion_row(event: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The ``user_deletions`` row of an accepted deletion: the profile and older properties go."""
    if event.get("kind") != DELETE_USER:
        return None
    user = profile_key(event)
    if not user:
        return None
    return (event["project"], user, event["timestamp"], event["event_id"])


class Columns:
    """Rows of one table, handed to clickhouse-driver column by column.

    Rows are kept as tuples and transposed once per insert (``zip`` in C),
    which is several times cheaper than appending every value to its own
    column list as it arrives.
    """

    def __init__(self, columns: tuple[tuple[str, str], ...]) -> None:
        self.names = tuple(name for name, _ in columns)
        self._rows: list[tuple[Any, ...]] = []

    def append(self, row: tuple[Any, ...]) -> None:
        self._rows.append(row)

    @property
    def rows(self) -> int:
        return len(self._rows)

    @property
    def data(self) -> list[list[Any]]:
        """The rows as one list per column (clickhouse-driver's ``columnar=True`` shape)."""
        if not self._rows:
            return [[] for _ in self.names]
        return [list(column) for column in zip(*self._rows, strict=True)]

    def clear(self) -> None:
        self._rows.clear()


class Batch:
    """The rows of one batch for the four insert targets."""

    def __init__(self) -> None:
        self.events = Columns(EVENT_COLUMNS)
        self.user_updates = Columns(USER_UPDATE_COLUMNS)
        self.user_properties = Columns(USER_PROPERTY_UPDATE_COLUMNS)
        self.user_deletions = Columns(USER_DELETION_COLUMNS)

    @property
    def tables(self) -> tuple[tuple[str, Columns], ...]:
        """Each insert target with its rows, in the order the writer inserts them."""
        return (
            ("events", self.events),
            ("user_updates", self.user_updates),
            ("user_property_updates", self.user_properties),
            ("user_deletions", self.user_deletions),
        )

    @property
    def rows(self) -> int:
        """Event rows in the batch (what the size limit counts)."""
        return self.events.rows

    def add(self, event: Mapping[str, Any], decision: Decision) -> None:
        """Append the rows of one decoded event; raises RowError, appending nothing."""
        row = event_row(event, decision)
        profile: tuple[Any, ...] | None = None
        properties: list[tuple[Any, ...]] = []
        deletion: tuple[Any, ...] | None = None
        if decision is Decision.ACCEPTED:
            # Profiles follow accepted events only: a bot's "identify" changes no one.
            try:
                profile = user_update_row(event)
                properties = user_property_rows(event)
                deletion = user_deletion_row(event)
            except (AttributeError, TypeError) as exc:
                raise RowError("invalid_field", f"user fields: {exc}") from None
        self.events.append(row)
        if profile is not None:
            self.user_updates.append(profile)
        for prop in properties:
            self.user_properties.append(prop)
        if deletion is not None:
            self.user_deletions.append(deletion)

    def clear(self) -> None:
        self.events.clear()
        self.user_updates.clear()
        self.user_properties.clear()
        self.user_deletions.clear()
