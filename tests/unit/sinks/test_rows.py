"""Events → rows: one row per event with its decision, versions that order decisions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import DropReason, Stage
from sinks.ddl import (
    CLEARED,
    EVENT_COLUMNS,
    OP_SET,
    OP_SET_ONCE,
    OP_UNSET,
    USER_FIELDS,
    USER_UPDATE_COLUMNS,
)
from sinks.errors import RowError
from sinks.rows import (
    Batch,
    Decision,
    decision_version,
    event_row,
    user_deletion_row,
    user_property_rows,
    user_update_row,
)

T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z


def accepted(**fields: object) -> dict:
    decided_at = fields.pop("decided_at", T0 + 5)
    raw = new_raw_event(project="demo", name="signup", timestamp=T0, received_at=T0 + 1, **fields)
    return dict(clean_event(raw, normalised_name="signup", user_key="u1", decided_at=decided_at))


def dropped(reason: DropReason = DropReason.BOT, decided_at: int = T0 + 9, **fields: object):
    raw = new_raw_event(project="demo", name="signup", timestamp=T0, received_at=T0 + 1, **fields)
    return dict(
        dropped_event(raw, reason=reason, stage=Stage.BOT, detail="ua", decided_at=decided_at)
    )


def as_dict(row: tuple) -> dict:
    return dict(zip([name for name, _ in EVENT_COLUMNS], row, strict=True))


def test_accepted_row_has_every_column_and_no_drop_fields() -> None:
    row = as_dict(event_row(accepted(properties={"plan": "pro"}), Decision.ACCEPTED))
    assert row["decision"] == "accepted"
    assert row["event_time"] == T0 // 1000
    assert row["timestamp_ms"] == T0
    assert row["drop_reason"] == row["drop_stage"] == ""
    assert row["property_keys"] == ["plan"]
    assert row["property_values"] == ["pro"]
    assert row["interactive"] is None


def test_dropped_row_carries_reason_stage_and_detail() -> None:
    row = as_dict(event_row(dropped(), Decision.DROPPED))
    assert (row["decision"], row["drop_reason"], row["drop_stage"], row["drop_detail"]) == (
        "dropped",
        "bot",
        "bot",
        "ua",
    )


def test_later_decision_has_higher_version_whatever_it_is() -> None:
    first = decision_version(T0, Decision.ACCEPTED)
    assert decision_version(T0 + 1, Decision.DROPPED, "bot") > first
    assert decision_version(T0 + 2, Decision.ACCEPTED) > decision_version(
        T0 + 1, Decision.DROPPED, "bot"
    )


def test_a_copy_drop_never_replaces_a_decision_of_the_event_itself() -> None:
    copy = decision_version(T0 + 1_000, Decision.DROPPED, DropReason.DUPLICATE_IDEMPOTENCY_KEY)
    assert copy < decision_version(T0, Decision.ACCEPTED)
    assert copy < decision_version(T0, Decision.DROPPED, DropReason.BOT)
    # Among themselves copies still order by time.
    assert copy > decision_version(T0, Decision.DROPPED, DropReason.DUPLICATE_IDEMPOTENCY_KEY)


@pytest.mark.parametrize(
    ("change", "error_type"),
    [
        ({"event_id": ""}, "missing_field"),
        ({"project": ""}, "missing_field"),
        ({"timestamp": -1}, "out_of_range"),
        ({"timestamp": 2**32 * 1000}, "out_of_range"),
        ({"decided_at": "soon"}, "invalid_field"),
        ({"event_id": "x" * 300}, "invalid_field"),
    ],
)
def test_invalid_events_raise_row_error(change: dict, error_type: str) -> None:
    event = {**accepted(), **change}
    with pytest.raises(RowError) as info:
        event_row(event, Decision.ACCEPTED)
    assert info.value.error_type == error_type


def test_a_dropped_event_without_reason_is_an_error() -> None:
    event = {**dropped(), "reason": ""}
    with pytest.raises(RowError):
        event_row(event, Decision.DROPPED)


def test_profile_row_only_for_events_that_say_something_about_a_user() -> None:
    assert user_update_row(accepted()) is None  # no user id
    assert user_update_row(accepted(user_id="u1")) is None  # a plain track event
    row = user_update_row(
        accepted(user_id="u1", display_name="Ann", user_properties={"avatarUrl": "a.png"})
    )
    assert row is not None
    values = dict(zip([n for n, _ in USER_UPDATE_COLUMNS], row, strict=True))
    assert values["set_display_name"] == "Ann"
    assert values["set_avatar"] == "a.png"
    assert values["version"] == T0
    assert user_update_row(accepted(user_id="u1", kind="identify")) is not None


def test_user_property_rows_cover_set_once_and_unset() -> None:
    rows = user_property_rows(
        accepted(
            user_id="u1",
            user_properties={"plan": "pro"},
            user_properties_once={"first": "x"},
            user_properties_unset=["old"],
        )
    )
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("plan", "pro", OP_SET),
        ("first", "x", OP_SET_ONCE),
        ("old", "", OP_UNSET),
    ]


def test_batch_appends_nothing_of_a_bad_record() -> None:
    batch = Batch()
    batch.add(accepted(user_id="u1", display_name="Ann"), Decision.ACCEPTED)
    with pytest.raises(RowError):
        batch.add(
            {**accepted(user_id="u2", display_name="Bob"), "timestamp": -5}, Decision.ACCEPTED
        )
    assert batch.rows == 1
    assert batch.user_updates.rows == 1
    assert all(len(column) == 1 for column in batch.events.data)


def test_dropped_events_do_not_touch_profiles() -> None:
    batch = Batch()
    batch.add(dropped(user_id="u1", display_name="Bot"), Decision.DROPPED)
    assert batch.rows == 1
    assert batch.user_updates.rows == 0
    assert batch.user_properties.rows == 0


def test_clear_empties_every_table() -> None:
    batch = Batch()
    batch.add(accepted(user_id="u1", user_properties={"a": "b"}), Decision.ACCEPTED)
    batch.clear()
    assert (batch.rows, batch.user_updates.rows, batch.user_properties.rows) == (0, 0, 0)


def test_users_known_only_by_email_have_a_profile_keyed_by_the_lower_cased_email() -> None:
    event = accepted(email=" Ann@Example.com", display_name="Ann")
    row = user_update_row(event)
    assert row is not None
    assert row[1] == "ann@example.com"
    props = user_property_rows(accepted(email="Ann@Example.com", user_properties={"a": "b"}))
    assert [r[1] for r in props] == ["ann@example.com"]
    assert user_update_row(accepted(anonymous_id="anon", display_name="x")) is None


def test_a_deletion_clears_every_profile_field_and_is_recorded() -> None:
    deletion = accepted(user_id="u1", kind="delete_user", user_properties={"plan": "x"})
    row = user_update_row(deletion)
    assert row is not None
    assert row[4:] == (CLEARED,) * len(USER_FIELDS)
    assert user_property_rows(deletion) == []
    assert user_deletion_row(deletion) == ("demo", "u1", T0, deletion["event_id"])
    assert user_deletion_row(accepted(user_id="u1", kind="identify")) is None
    batch = Batch()
    batch.add(deletion, Decision.ACCEPTED)
    batch.add(dropped(user_id="u2", kind="delete_user"), Decision.DROPPED)
    assert batch.user_deletions.rows == 1


def test_revenue_becomes_a_decimal_column() -> None:
    row = as_dict(
        event_row(accepted(revenue_amount="9.99", revenue_currency="USD"), Decision.ACCEPTED)
    )
    assert (row["revenue_amount"], row["revenue_currency"]) == (Decimal("9.99"), "USD")
    assert as_dict(event_row(accepted(), Decision.ACCEPTED))["revenue_amount"] is None
    for amount in ("abc", "1e20", "NaN"):
        with pytest.raises(RowError):
            event_row(accepted(revenue_amount=amount), Decision.ACCEPTED)


def test_a_public_event_never_outranks_a_server_event_with_the_same_id() -> None:
    server = as_dict(event_row(accepted(decided_at=T0 + 5), Decision.ACCEPTED))
    forged = as_dict(
        event_row(accepted(credential="public", decided_at=T0 + 900), Decision.ACCEPTED)
    )
    assert forged["version"] < server["version"]
    replayed = as_dict(
        event_row(accepted(credential="public", decided_at=T0 + 901), Decision.ACCEPTED)
    )
    assert replayed["version"] > forged["version"]  # within a class, newest wins
