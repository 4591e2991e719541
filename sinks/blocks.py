"""Decoded column batches → the ``events`` block, and the rows of the profile tables.

The columnar counterpart of ``sinks.rows``, for the records that need nothing
unusual: ``events`` comes out as one Native block per batch and topic, every
column an array operation over the whole batch. The rules are the ones of
``sinks.rows`` (which stays the reference, and the path of every unusual
record); the unit tests check that both give the same values.

``suspects`` picks the records this path does not take: those that did not
decode (``ColumnBatch.bad``) and those ``sinks.rows`` might refuse (empty or
over-long ids, times outside 1970-2106, a drop without a reason, a revenue
that is not a valid amount). The writer runs them one by one through
``schemas.codecs`` and ``sinks.rows``, which names the error of a poison
record exactly, resolves older schema versions and JSON, and builds the rows
of the others.

Profiles: only accepted events of a known user that say something about the
user update the profile tables; those few rows are built by ``sinks.rows``
from a dict of the record's fields.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.columns import (
    BoolColumn,
    ColumnBatch,
    LongColumn,
    OptionalColumn,
    StringColumn,
    StringListColumn,
    StringMapColumn,
)
from schemas.reasons import COPY_REASONS
from sinks.ddl import EVENT_COLUMNS
from sinks.errors import RowError
from sinks.native import (
    NativeBlock,
    NativeColumn,
    empty_strings,
    nullable,
    numbers,
    string_arrays,
    strings,
)
from sinks.rows import (
    DELETE_USER,
    MAX_EVENT_ID_LENGTH,
    MAX_TIMESTAMP_MS,
    PROFILE_KINDS,
    RANK_SHIFT,
    Batch,
    Decision,
    parse_revenue,
    user_deletion_row,
    user_property_rows,
    user_update_row,
)

Bools = npt.NDArray[np.bool_]

_TYPES = dict(EVENT_COLUMNS)
# Event fields copied as they are (absent → ''), by column name.
_TEXT_COLUMNS = (
    "name",
    "normalised_name",
    "kind",
    "source",
    "user_key",
    "user_id",
    "email",
    "anonymous_id",
    "visitor_id",
    "display_name",
    "url",
    "referrer",
    "domain",
    "user_agent",
    "ip_classification",
    "country",
    "context_id",
    "sdk_name",
    "sdk_version",
    "idempotency_key",
    "order_id",
    "fingerprint",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "revenue_currency",
    "source_topic",
)
# What the profile rules of sinks.rows read from an event.
PROFILE_FIELDS = (
    "project",
    "event_id",
    "timestamp",
    "kind",
    "user_id",
    "email",
    "display_name",
    "anonymous_id",
    "user_properties",
    "user_properties_once",
    "user_properties_unset",
)
# Decimal(18, 3) is an Int64 of thousandths; the driver converts with 18 digits.
_REVENUE_SCALE = 1_000
_DECIMAL64_DIGITS = 18


class Revenue:
    """The ``revenue_amount`` column of a batch: NULL, or thousandths as Int64.

    Amounts are decimal text: each present one is parsed like ``sinks.rows``
    does, and scaled exactly as clickhouse-driver would (``int(amount *
    1000)`` with 18 digits of precision). ``invalid`` marks the rows whose
    amount ``sinks.rows`` refuses.
    """

    def __init__(self, batch: ColumnBatch) -> None:
        column = batch.columns["revenue_amount"]
        assert isinstance(column, OptionalColumn)
        assert isinstance(column.inner, StringColumn)
        self.present = column.present.copy()
        self.values = np.zeros(batch.rows, dtype=np.int64)
        self.invalid = np.zeros(batch.rows, dtype=np.bool_)
        # A record that did not decode may hold anything there (not even UTF-8):
        # it goes one by one anyway (``suspects``).
        rows = np.flatnonzero(self.present & ~batch.bad)
        if not len(rows):
            return
        with localcontext() as context:
            context.prec = _DECIMAL64_DIGITS
            for row in rows.tolist():
                try:
                    amount = parse_revenue(batch.text(column.inner, row))
                except RowError:
                    self.invalid[row] = True
                    continue
                self.values[row] = int(Decimal(str(amount)) * _REVENUE_SCALE)

    def select(self, keep: Bools) -> Revenue:
        selected = object.__new__(Revenue)
        selected.present = self.present[keep]
        selected.values = self.values[keep]
        selected.invalid = self.invalid[keep]
        return selected


def suspects(batch: ColumnBatch, decision: Decision, revenue: Revenue) -> Bools:
    """The records to take one by one through ``sinks.rows`` rather than as columns."""
    c = batch.columns
    out = batch.bad | revenue.invalid
    event_id = _text(c["event_id"])
    # Bytes, not characters: a longer id of non-ASCII text is judged one by one.
    out |= (event_id.length == 0) | (event_id.length > MAX_EVENT_ID_LENGTH)
    out |= _text(c["project"]).length == 0
    for name in ("timestamp", "received_at", "decided_at"):
        values = _longs(c[name])
        out |= (values < 0) | (values > MAX_TIMESTAMP_MS)
    if decision is Decision.DROPPED:
        out |= _text(c["reason"]).length == 0
    return out


def events_block(batch: ColumnBatch, decision: Decision, revenue: Revenue) -> NativeBlock:
    """The ``events`` rows of records that passed ``suspects``, as one block."""
    c = batch.columns
    n = batch.rows
    timestamp = _longs(c["timestamp"])
    decided_at = _longs(c["decided_at"])
    server = ~batch.equals(_text(c["credential"]), b"public")
    if decision is Decision.DROPPED:
        reason = _text(c["reason"])
        copy = np.zeros(n, dtype=np.bool_)
        for value in COPY_REASONS:
            copy |= batch.equals(reason, value.encode())
        rank = np.where(copy, 0, 1) + np.where(server, 2, 0)
        drop = {name: strings(f"drop_{name}", _text(c[name])) for name in ("reason", "stage")}
        drop["detail"] = strings("drop_detail", _text(c["detail"]))
    else:
        rank = 1 + np.where(server, 2, 0)
        drop = {name: empty_strings(f"drop_{name}", n) for name in ("reason", "stage", "detail")}
    version = (rank.astype(np.uint64) << np.uint64(RANK_SHIFT)) | decided_at.astype(np.uint64)
    built: dict[str, NativeColumn] = {
        "project": strings("project", _text(c["project"])),
        "event_time": numbers("event_time", "DateTime", timestamp // 1000, "<u4"),
        "event_id": strings("event_id", _text(c["event_id"])),
        "timestamp_ms": numbers("timestamp_ms", "UInt64", timestamp, "<u8"),
        "received_at_ms": numbers("received_at_ms", "UInt64", _longs(c["received_at"]), "<u8"),
        "decided_at_ms": numbers("decided_at_ms", "UInt64", decided_at, "<u8"),
        "version": numbers("version", "UInt64", version, "<u8"),
        "decision": numbers(
            "decision",
            _TYPES["decision"],
            np.full(n, 1 if decision is Decision.ACCEPTED else 2),
            "<i1",
        ),
        "drop_reason": drop["reason"],
        "drop_stage": drop["stage"],
        "drop_detail": drop["detail"],
        "interactive": _nullable("interactive", "UInt8", c["interactive"], "<u1"),
        "scroll_depth": _nullable("scroll_depth", "Int32", c["scroll_depth"], "<i4"),
        "engagement_time_ms": _nullable(
            "engagement_time_ms", "Int64", c["engagement_time_ms"], "<i8"
        ),
        "hash_mode": _nullable("hash_mode", "UInt8", c["hash_mode"], "<u1"),
        "property_keys": _map_part("property_keys", c["properties"], keys=True),
        "property_values": _map_part("property_values", c["properties"], keys=False),
        "user_property_keys": _map_part("user_property_keys", c["user_properties"], keys=True),
        "user_property_values": _map_part("user_property_values", c["user_properties"], keys=False),
        "checks": _list("checks", c["checks"]),
        "source_partition": numbers(
            "source_partition", "Int32", _longs(c["source_partition"]), "<i4"
        ),
        "source_offset": numbers("source_offset", "Int64", _longs(c["source_offset"]), "<i8"),
        "revenue_amount": nullable(
            "revenue_amount", "Decimal(18, 3)", revenue.present, revenue.values, "<i8"
        ),
    }
    for name in _TEXT_COLUMNS:
        built[name] = strings(name, _text(c[name]))
    columns = tuple(built[name] for name, _ in EVENT_COLUMNS)
    assert [(col.name, col.type) for col in columns] == list(EVENT_COLUMNS)
    return NativeBlock(n, columns)


def profile_candidates(batch: ColumnBatch) -> npt.NDArray[np.int64]:
    """Rows (of accepted events) that may update a profile: a known user saying something.

    A superset of what ``sinks.rows`` turns into profile rows; it decides on each.
    """
    c = batch.columns
    email = _text(c["email"]).length > 0
    known = (_text(c["user_id"]).length > 0) | email
    kind = _text(c["kind"])
    says = email | (_text(c["display_name"]).length > 0) | batch.equals(kind, DELETE_USER.encode())
    for value in PROFILE_KINDS:
        says |= batch.equals(kind, value.encode())
    for name in ("user_properties", "user_properties_once", "user_properties_unset"):
        column = c[name]
        assert isinstance(column, StringMapColumn | StringListColumn)
        says |= column.counts > 0
    return np.flatnonzero(known & says)


def add_profiles(batch: ColumnBatch, rows: Batch) -> None:
    """Append the profile-table rows of the accepted events in ``batch`` to ``rows``."""
    for row in profile_candidates(batch).tolist():
        event = batch.record(row, PROFILE_FIELDS)
        try:
            profile = user_update_row(event)
            properties = user_property_rows(event)
            deletion = user_deletion_row(event)
        except (AttributeError, TypeError) as exc:  # schema-valid data never gets here
            raise RowError("invalid_field", f"user fields: {exc}") from None
        if profile is not None:
            rows.user_updates.append(profile)
        for prop in properties:
            rows.user_properties.append(prop)
        if deletion is not None:
            rows.user_deletions.append(deletion)


def _text(column: Any) -> StringColumn:
    inner = column.inner if isinstance(column, OptionalColumn) else column
    assert isinstance(inner, StringColumn)
    return inner


def _longs(column: Any) -> npt.NDArray[np.int64]:
    assert isinstance(column, LongColumn)
    return column.values


def _nullable(name: str, inner: str, column: Any, dtype: str) -> NativeColumn:
    assert isinstance(column, OptionalColumn)
    assert isinstance(column.inner, LongColumn | BoolColumn)
    return nullable(name, inner, column.present, column.inner.values, dtype)


def _map_part(name: str, column: Any, keys: bool) -> NativeColumn:
    assert isinstance(column, StringMapColumn)
    return string_arrays(name, column.counts, column.keys if keys else column.values)


def _list(name: str, column: Any) -> NativeColumn:
    assert isinstance(column, StringListColumn)
    return string_arrays(name, column.counts, column.items)
