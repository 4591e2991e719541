"""The schema and the exact reads on the real ClickHouse server of the test stack.

The same checks run on current ClickHouse (chdb) in tests/unit/sinks/test_ddl_chdb.py.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import DropReason, Stage
from sinks import ddl, queries
from sinks.clickhouse import ClickHouse
from sinks.errors import ClickHouseUnavailableError
from sinks.migrate import migrate
from sinks.rows import Batch, Decision

T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z
SPAN = queries.TimeRange(
    dt.datetime(2025, 11, 27, tzinfo=dt.UTC), dt.datetime(2025, 11, 29, tzinfo=dt.UTC)
)


@pytest.fixture
def ch(clickhouse_url: str, ch_database: str) -> ClickHouse:
    client = ClickHouse(clickhouse_url, ch_database)
    yield client
    client.close()


def acc(event_id: str, decided_at: int, user: str = "u1", **fields: Any) -> dict:
    ts = fields.pop("timestamp", T0)
    fields.setdefault("name", "identify")
    raw = new_raw_event(project="demo", event_id=event_id, timestamp=ts, received_at=ts, **fields)
    return dict(clean_event(raw, normalised_name="x", user_key=user, decided_at=decided_at))


def drop(event_id: str, decided_at: int, reason: str, user: str = "u1", **fields: Any) -> dict:
    raw = new_raw_event(project="demo", event_id=event_id, timestamp=T0, received_at=T0, **fields)
    return dict(
        dropped_event(raw, reason=reason, stage=Stage.BOT, decided_at=decided_at, user_key=user)
    )


def write(ch: ClickHouse, *events: tuple[dict, Decision]) -> None:
    batch = Batch()
    for event, decision in events:
        batch.add(event, decision)
    for table, columns in batch.tables:
        ch.insert_columns(table, columns.names, columns.data, token=f"t-{table}-{id(batch)}")


def test_migrations_run_on_the_server_and_are_idempotent(ch: ClickHouse) -> None:
    first = migrate(ch)
    assert first.applied == tuple(m.version for m in ddl.MIGRATIONS)
    assert migrate(ch).applied == ()
    tables = {row[0] for row in ch.execute(f"SHOW TABLES FROM {ch.database}")}
    assert {"events", "users", "user_properties", "accepted_events", "dropped_events"} <= tables


def test_exact_counts_before_merges_on_the_server(ch: ClickHouse) -> None:
    migrate(ch)
    # Keep every inserted part apart, as a busy server would before merging.
    ch.execute(f"SYSTEM STOP MERGES {ch.database}.events")
    write(ch, (acc("e1", T0 + 1, user="a", name="signup"), Decision.ACCEPTED))
    write(ch, (acc("e1", T0 + 1, user="a", name="signup"), Decision.ACCEPTED))
    write(ch, (acc("e2", T0 + 1, user="b", name="view"), Decision.ACCEPTED))
    write(ch, (drop("e2", T0 + 50, DropReason.BOT, user="b", name="view"), Decision.DROPPED))
    write(ch, (drop("e3", T0 + 2, DropReason.DUPLICATE, user="c", name="signup"), Decision.DROPPED))
    write(ch, (acc("e3", T0 + 60, user="c", name="signup"), Decision.ACCEPTED))
    write(ch, (acc("e4", T0 + 3, user="a", name="view"), Decision.ACCEPTED))
    write(
        ch,
        (
            drop("e4", T0 + 70, DropReason.DUPLICATE_IDEMPOTENCY_KEY, user="a", name="view"),
            Decision.DROPPED,
        ),
    )
    # Nothing merged yet: the duplicates are still there as rows.
    assert ch.scalar(f"SELECT count() FROM {ch.database}.events") == 8
    stats = queries.project_stats(ch, "demo", SPAN)
    assert stats.accepted_by_name == [("signup", 2), ("view", 1)]
    assert stats.dropped_by_reason == [("bot", 1)]
    assert stats.unique_users == 2
    assert ch.scalar(f"SELECT count() FROM {ch.database}.accepted_events") == 3
    assert ch.scalar(f"SELECT count() FROM {ch.database}.dropped_events") == 1
    # And the same after the merge.
    ch.execute(f"SYSTEM START MERGES {ch.database}.events")
    ch.execute(f"OPTIMIZE TABLE {ch.database}.events FINAL")
    assert ch.scalar(f"SELECT count() FROM {ch.database}.events") == 4
    assert queries.project_stats(ch, "demo", SPAN) == stats


def test_profiles_keep_the_newest_values_on_the_server(ch: ClickHouse) -> None:
    migrate(ch)
    newer = acc("p2", T0, user_id="u1", kind="identify", display_name="New", timestamp=T0 + 2000)
    older = acc(
        "p1",
        T0,
        user_id="u1",
        kind="identify",
        display_name="Old",
        email="old@example.com",
        timestamp=T0 + 1000,
        user_properties={"plan": "free"},
    )
    write(ch, (newer, Decision.ACCEPTED))
    write(ch, (older, Decision.ACCEPTED))
    (profile,) = queries.user_profiles(ch, "demo")
    assert (profile.display_name, profile.email) == ("New", "old@example.com")
    assert profile.properties == {"plan": "free"}
    db = ch.database
    assert ch.execute(f"SELECT display_name, email FROM {db}.user_profiles") == [
        ("New", "old@example.com")
    ]
    assert ch.execute(f"SELECT key, value FROM {db}.user_property_values") == [("plan", "free")]


def test_a_dead_server_is_reported_as_unavailable() -> None:
    dead = ClickHouse("clickhouse://default:@127.0.0.1:1/default", "nothing", connect_timeout=1)
    with pytest.raises(ClickHouseUnavailableError):
        dead.scalar("SELECT 1")


def test_deletions_email_only_users_and_revenue_on_the_server(ch: ClickHouse) -> None:
    migrate(ch)
    write(
        ch,
        (
            acc(
                "d1",
                T0,
                kind="identify",
                user_id="u1",
                display_name="Old",
                timestamp=T0 + 1000,
                user_properties={"plan": "pro"},
            ),
            Decision.ACCEPTED,
        ),
        (acc("d2", T0, kind="delete_user", user_id="u1", timestamp=T0 + 2000), Decision.ACCEPTED),
        (
            acc("d3", T0, kind="identify", email="Ann@Example.com", display_name="Ann"),
            Decision.ACCEPTED,
        ),
        (
            acc(
                "d4",
                T0,
                name="purchase",
                user_id="u2",
                revenue_amount="9.99",
                revenue_currency="USD",
            ),
            Decision.ACCEPTED,
        ),
    )
    db = ch.database
    # Deleted: no profile and no properties; the e-mail-only user has one.
    assert [p.user_id for p in queries.user_profiles(ch, "demo")] == ["ann@example.com"]
    assert ch.execute(f"SELECT user_id, display_name FROM {db}.user_profiles") == [
        ("ann@example.com", "Ann")
    ]
    assert ch.execute(f"SELECT count() FROM {db}.user_property_values") == [(0,)]
    # Back after the deletion: only what came since shows.
    write(
        ch,
        (
            acc(
                "d5",
                T0,
                kind="update_user",
                user_id="u1",
                timestamp=T0 + 3000,
                user_properties={"vip": "true"},
            ),
            Decision.ACCEPTED,
        ),
    )
    profile = queries.user_profiles(ch, "demo", ["u1"])[0]
    assert (profile.display_name, profile.properties) == ("", {"vip": "true"})
    assert ch.execute(f"SELECT display_name FROM {db}.user_profiles WHERE user_id = 'u1'") == [
        ("",)
    ]
    assert ch.execute(f"SELECT key, value FROM {db}.user_property_values") == [("vip", "true")]
    assert ch.execute(
        f"SELECT revenue_amount, revenue_currency FROM {db}.events FINAL WHERE event_id = 'd4'"
    ) == [(Decimal("9.99"), "USD")]
    assert ch.execute(
        f"SELECT revenue_amount, revenue_currency FROM {db}.events FINAL WHERE event_id = 'd1'"
    ) == [(None, "")]


def test_a_database_of_version_3_gains_the_revenue_columns(ch: ClickHouse) -> None:
    target = ddl.Target(ch.database, ch.features())
    # Version 1 as released: without the columns added since.
    added = "".join(f"    `{name}` {kind},\n" for name, kind in ddl.ADDED_EVENT_COLUMNS)
    for statement in [ddl.create_database(target), ddl.migrations_table(target)]:
        ch.execute(statement)
    for migration in ddl.MIGRATIONS[:3]:
        for statement in migration.statements(target):
            ch.execute(str(statement).replace(added, ""))
        ch.execute(
            f"INSERT INTO {ch.database}.{ddl.MIGRATIONS_TABLE} (version, name, applied_at) "
            "SELECT toUInt32(%(v)s), 'old', now()",
            {"v": migration.version},
        )
    columns = (
        f"SELECT name FROM system.columns WHERE database = '{ch.database}' AND table = 'events'"
    )
    assert "revenue_amount" not in {r[0] for r in ch.execute(columns)}
    assert migrate(ch).applied == (4,)
    assert {"revenue_amount", "revenue_currency"} <= {r[0] for r in ch.execute(columns)}
