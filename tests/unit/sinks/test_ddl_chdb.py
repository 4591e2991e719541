"""The schema and the exact reads on current ClickHouse (chdb, in-process).

The same migrations and queries run against the local stack's old server in
tests/integration/sinks/test_schema_server.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import DropReason, Stage
from sinks import ddl, queries
from sinks.ddl import ServerFeatures, Target
from sinks.migrate import migrate
from sinks.rows import Batch, Decision

T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z
DAY = dt.timedelta(days=1)
SPAN = queries.TimeRange(
    dt.datetime(2025, 11, 27, tzinfo=dt.UTC), dt.datetime(2025, 11, 29, tzinfo=dt.UTC)
)


@pytest.fixture
def ch(chdb_clickhouse: Any) -> Any:
    return chdb_clickhouse


def raw(event_id: str, name: str = "signup", project: str = "demo", **fields: Any) -> Any:
    ts = fields.pop("timestamp", T0)
    return new_raw_event(
        project=project, name=name, event_id=event_id, timestamp=ts, received_at=ts, **fields
    )


def acc(event_id: str, decided_at: int, user: str = "u1", **fields: Any) -> dict:
    return dict(
        clean_event(
            raw(event_id, **fields), normalised_name="x", user_key=user, decided_at=decided_at
        )
    )


def drop(event_id: str, decided_at: int, reason: str, user: str = "u1", **fields: Any) -> dict:
    return dict(
        dropped_event(
            raw(event_id, **fields),
            reason=reason,
            stage=Stage.DEDUP,
            decided_at=decided_at,
            user_key=user,
        )
    )


def write(ch: Any, events: list[tuple[dict, Decision]]) -> None:
    batch = Batch()
    for event, decision in events:
        batch.add(event, decision)
    for table, columns in batch.tables:
        if columns.rows:
            ch.insert_columns(table, columns.names, columns.data)


def test_features_follow_the_server_version() -> None:
    assert not ServerFeatures.parse("18.16.1").insert_dedup_token
    assert ServerFeatures.parse("26.9.2.1").insert_dedup_token
    old = Target("db", ServerFeatures.parse("18.16.1")).table_settings()
    new = Target("db", ServerFeatures.parse("25.3.1")).table_settings()
    assert "non_replicated_deduplication_window" not in old
    assert "non_replicated_deduplication_window = 1000" in new


def test_database_names_are_plain_identifiers() -> None:
    with pytest.raises(ValueError, match="identifier"):
        Target("db; DROP TABLE x", ServerFeatures.parse("25.1"))


def test_on_a_cluster_every_statement_runs_on_it_with_replicated_engines(
    ch: Any,
) -> None:
    target = Target("db", ServerFeatures.parse("25.8.1"), cluster="analytics")
    statements = ddl.render_all(target)
    assert all(" ON CLUSTER `analytics`" in s for s in statements)
    engines = [s.split("ENGINE = ", 1)[1].split("(", 1)[0] for s in statements if "ENGINE" in s]
    assert set(engines) == {
        "ReplicatedReplacingMergeTree",
        "ReplicatedAggregatingMergeTree",
        "Null",
        "TinyLog",
    }
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/events', '{replica}', version)"
        in "".join(statements)
    )
    # Replicated tables deduplicate retried blocks themselves.
    assert "non_replicated_deduplication_window" not in "".join(statements)
    # Current ClickHouse parses every statement (executing them needs a keeper).
    for statement in statements:
        assert ch.scalar("SELECT formatQuery(%(q)s)", {"q": statement})


def test_cluster_names_are_plain_identifiers() -> None:
    with pytest.raises(ValueError, match="identifier"):
        Target("db", ServerFeatures.parse("25.1"), cluster="a b")


def test_migrations_apply_once_and_create_every_table(ch: Any) -> None:
    first = migrate(ch)
    assert first.applied == tuple(m.version for m in ddl.MIGRATIONS)
    again = migrate(ch)
    assert again.applied == ()
    assert again.version == ddl.LATEST_VERSION
    tables = {row[0] for row in ch.execute(f"SHOW TABLES FROM {ch.database}")}
    assert {"events", "users", "user_properties", "accepted_events", "dropped_events"} <= tables
    # Rendering everything again on a migrated database is harmless too.
    for statement in ddl.render_all(Target(ch.database, ch.features())):
        ch.execute(statement)


def test_stats_are_exact_before_merges(ch: Any) -> None:
    migrate(ch)
    ch.execute(f"SYSTEM STOP MERGES {ch.database}.events")
    # e1: delivered twice (a retried batch). e2: accepted, then a replay drops it.
    # e3: dropped, then a replay accepts it. e4: accepted; its copy (same id) is
    # dropped as a duplicate key. e5: another project. e6: outside the range.
    write(ch, [(acc("e1", T0 + 1, user="a"), Decision.ACCEPTED)])
    write(ch, [(acc("e1", T0 + 1, user="a"), Decision.ACCEPTED)])
    write(ch, [(acc("e2", T0 + 1, name="view", user="b"), Decision.ACCEPTED)])
    write(ch, [(drop("e2", T0 + 50, DropReason.BOT, name="view", user="b"), Decision.DROPPED)])
    write(ch, [(drop("e3", T0 + 2, DropReason.DUPLICATE, user="c"), Decision.DROPPED)])
    write(ch, [(acc("e3", T0 + 60, user="c"), Decision.ACCEPTED)])
    write(ch, [(acc("e4", T0 + 3, name="view", user="a"), Decision.ACCEPTED)])
    write(
        ch,
        [
            (
                drop("e4", T0 + 70, DropReason.DUPLICATE_IDEMPOTENCY_KEY, name="view", user="a"),
                Decision.DROPPED,
            )
        ],
    )
    write(ch, [(acc("e5", T0 + 1, project="other"), Decision.ACCEPTED)])
    write(ch, [(acc("e6", T0 + 1, timestamp=T0 - 10 * 86_400_000), Decision.ACCEPTED)])

    # Nothing merged: 10 inserts, less the identical repeat of e1's block, which
    # the deduplication window drops on this server version.
    assert ch.scalar(f"SELECT count() FROM {ch.database}.events") == 9
    stats = queries.project_stats(ch, "demo", SPAN)
    assert stats.accepted_by_name == [("signup", 2), ("view", 1)]
    assert stats.dropped_by_reason == [("bot", 1)]
    assert stats.unique_users == 2  # a (e1, e4) and c (e3); b's only event is dropped
    assert queries.projects_in(ch, SPAN) == ["demo", "other"]

    # The views agree once collapsed.
    db = ch.database
    assert ch.scalar(f"SELECT count() FROM {db}.accepted_events WHERE project = 'demo'") == 4
    assert ch.scalar(f"SELECT count() FROM {db}.dropped_events WHERE project = 'demo'") == 1


def test_newest_profile_fields_win_whatever_the_arrival_order(ch: Any) -> None:
    migrate(ch)
    newer = acc(
        "p2",
        T0,
        user_id="u1",
        kind="identify",
        display_name="New Name",
        timestamp=T0 + 2_000,
        user_properties={"plan": "pro"},
    )
    older = acc(
        "p1",
        T0,
        user_id="u1",
        kind="identify",
        display_name="Old Name",
        email="old@example.com",
        timestamp=T0 + 1_000,
        user_properties={"plan": "free", "team": "x"},
        user_properties_once={"source": "ads"},
    )
    unset = acc(
        "p3",
        T0,
        user_id="u1",
        kind="update_user",
        timestamp=T0 + 3_000,
        user_properties_unset=["team"],
        user_properties={"avatar_url": "https://img/a.png"},
    )
    write(ch, [(newer, Decision.ACCEPTED)])
    write(ch, [(unset, Decision.ACCEPTED)])
    write(ch, [(older, Decision.ACCEPTED)])  # arrives last, is oldest
    write(ch, [(older, Decision.ACCEPTED)])  # and is replayed

    (profile,) = queries.user_profiles(ch, "demo", ["u1"])
    assert profile.display_name == "New Name"
    assert profile.email == "old@example.com"  # only the older event carried an email
    assert profile.avatar == "https://img/a.png"
    assert profile.updated_at_ms == T0 + 3_000
    assert profile.first_seen_ms == T0 + 1_000
    assert profile.properties == {
        "plan": "pro",
        "source": "ads",
        "avatar_url": "https://img/a.png",
    }
    # The views for ad-hoc SQL say the same.
    db = ch.database
    assert ch.execute(
        f"SELECT display_name, email, avatar FROM {db}.user_profiles WHERE user_id = 'u1'"
    ) == [("New Name", "old@example.com", "https://img/a.png")]
    assert (
        dict(ch.execute(f"SELECT key, value FROM {db}.user_property_values WHERE user_id = 'u1'"))
        == profile.properties
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (("v", 10, 0, "", 0), "v"),
        (("v", 10, 20, "", 0), None),
        (("v", 10, 20, "o", 30), "o"),
        (("", 0, 0, "o", 5), "o"),
        (("v", 30, 20, "o", 5), "v"),
        (("", 0, 10, "o", 5), None),
    ],
)
def test_property_resolution(state: tuple, expected: str | None) -> None:
    assert queries.resolve_property(*state) == expected


def test_insert_tokens_deduplicate_retried_blocks_on_current_servers(ch: Any) -> None:
    migrate(ch)
    db = ch.database
    insert = f"INSERT INTO {db}.user_property_updates_probe SETTINGS insert_deduplication_token = "
    ch.execute(
        f"CREATE TABLE {db}.user_property_updates_probe (x UInt8) ENGINE = MergeTree "
        f"ORDER BY x {Target(db, ch.features()).table_settings()}"
    )
    ch.execute(insert + "'batch-1' VALUES (1)")
    ch.execute(insert + "'batch-1' VALUES (2)")  # a retry: same token, dropped
    ch.execute(insert + "'batch-2' VALUES (2)")
    assert ch.execute(f"SELECT x FROM {db}.user_property_updates_probe ORDER BY x") == [(1,), (2,)]


def test_insert_settings_follow_the_server_version() -> None:
    assert ServerFeatures.parse("18.16.1").insert_settings("tok") == {}
    assert ServerFeatures.parse("26.9.2.1").insert_settings("tok") == {
        "insert_deduplication_token": "tok",
        "max_partitions_per_insert_block": 0,
    }


def test_a_batch_spanning_many_months_is_accepted(ch: Any) -> None:
    migrate(ch)
    settings = ", ".join(f"{k} = {v!r}" for k, v in ch.features().insert_settings(None).items())
    # 150 months of history in one block: above the server's default limit of 100.
    ch.execute(
        f"INSERT INTO {ch.database}.events (project, event_time, event_id, decision) "
        f"SETTINGS {settings} "
        "SELECT 'demo', toDateTime('2010-01-15 00:00:00') + number * 2678400, "
        "toString(number), 'accepted' FROM numbers(150)"
    )
    assert ch.scalar(f"SELECT uniqExact(toYYYYMM(event_time)) FROM {ch.database}.events") == 150


def test_deletions_email_only_users_and_revenue(ch: Any) -> None:
    migrate(ch)
    identify = {"kind": "identify", "user_id": "u1", "display_name": "Old"}
    write(
        ch,
        [
            (
                acc("d1", T0, **identify, timestamp=T0 + 1, user_properties={"plan": "pro"}),
                Decision.ACCEPTED,
            ),
            (acc("d2", T0, kind="delete_user", user_id="u1", timestamp=T0 + 2), Decision.ACCEPTED),
            (acc("d3", T0, kind="identify", email="Ann@Example.com"), Decision.ACCEPTED),
            (
                acc("d4", T0, user_id="u2", revenue_amount="9.99", revenue_currency="USD"),
                Decision.ACCEPTED,
            ),
        ],
    )
    db = ch.database
    assert [p.user_id for p in queries.user_profiles(ch, "demo")] == ["ann@example.com"]
    assert ch.execute(f"SELECT user_id FROM {db}.user_profiles") == [("ann@example.com",)]
    assert ch.execute(f"SELECT count() FROM {db}.user_property_values") == [(0,)]
    back = acc(
        "d5",
        T0,
        kind="update_user",
        user_id="u1",
        timestamp=T0 + 3,
        user_properties={"vip": "true"},
    )
    write(ch, [(back, Decision.ACCEPTED)])
    (profile,) = queries.user_profiles(ch, "demo", ["u1"])
    assert (profile.display_name, profile.properties) == ("", {"vip": "true"})
    assert ch.execute(f"SELECT key, value FROM {db}.user_property_values") == [("vip", "true")]
    assert ch.execute(
        f"SELECT revenue_amount = toDecimal64('9.99', 3), toTypeName(revenue_amount), "
        f"revenue_currency FROM {db}.events FINAL WHERE event_id = 'd4'"
    ) == [(1, "Nullable(Decimal(18, 3))", "USD")]


def test_current_clickhouse_names_the_event_column_types_as_the_sink_sends_them(ch: Any) -> None:
    """The sink's Native blocks go out only when the table's columns (as the server
    names them in an insert's sample block) are exactly EVENT_COLUMNS."""
    migrate(ch)
    described = ch.execute(f"DESCRIBE TABLE {ch.database}.events")
    assert [(row[0], row[1]) for row in described][: len(ddl.EVENT_COLUMNS)] == list(
        ddl.EVENT_COLUMNS
    )
