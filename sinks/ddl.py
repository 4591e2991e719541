"""The ClickHouse schema, as versioned migrations rendered for one server.

Pure: nothing here talks to a server. ``render(version, target)`` returns the
statements of one migration for one database and one server version, so the
same list is checked against the old server of the local stack (18.16) and
against current ClickHouse (chdb) in the tests.

Every statement is idempotent (``IF NOT EXISTS``): two sinks starting at once
may both run a migration, and a migration interrupted half-way is simply run
again. ClickHouse 18.16 knows no ``ADD COLUMN IF NOT EXISTS``; later
migrations that alter a table must check ``system.columns`` first (see
``sinks.migrate``).

Tables
------
``events``
    One row per ``event_id`` holding its latest decision (accepted, or dropped
    with reason and stage). ReplacingMergeTree on ``version``
    (``sinks.rows.decision_version``) keeps the newest decision when parts
    merge; until then readers collapse with ``FINAL`` or ``argMax(.., version)``
    by ``event_id`` (``sinks.queries``). ORDER BY (project, event_time,
    event_id) serves "this project, this time range" and is stable for an
    event (its event time never changes), unlike the decision.
    Properties are parallel key/value arrays: they run on every version,
    unlike ``Map`` (22.x+).
``users``
    The latest profile per (project, user_id), field by field: each field
    keeps the value of the newest event (by event time) that carried it, so
    an update that only changes the avatar does not erase the name, and a
    late-arriving old update does not overwrite a newer one. Written through
    the Null table ``user_updates`` and a materialized view into an
    AggregatingMergeTree of ``argMaxIf`` states; ``argMax`` is idempotent, so
    a replayed update changes nothing.
``user_properties``
    The same for user properties, one row per (project, user_id, key): the
    newest set or unset wins; a set-once value (the earliest one) holds when
    nothing was set and no unset came after it (``sinks.queries``).
``accepted_events`` / ``dropped_events``
    Views over ``events FINAL`` for ad-hoc queries.
``user_profiles`` / ``user_property_values``
    The merged states of ``users``/``user_properties`` as plain columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_VERSION = re.compile(r"^(\d+)\.(\d+)")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

# insert_deduplication_token (22.2) and the non_replicated_deduplication_window
# table setting both exist from 22.2 on; older servers reject them.
DEDUP_TOKEN_SINCE = (22, 2)
# max_partitions_per_insert_block is unknown to 18.x (which has no such limit);
# 20.1 is a version known to have it, so nothing older is sent the setting.
PARTITION_LIMIT_SINCE = (20, 1)
# ALTER .. ADD COLUMN IF NOT EXISTS: unknown to 18.x; 20.1 is a version known
# to have it. Older servers get the plain form, run only when the column is
# missing (``sinks.migrate``).
ADD_COLUMN_IF_NOT_EXISTS_SINCE = (20, 1)


@dataclass(frozen=True)
class ServerFeatures:
    """What the target server supports, derived from ``SELECT version()``."""

    version: tuple[int, int]

    @classmethod
    def parse(cls, version: str) -> ServerFeatures:
        match = _VERSION.match(version.strip())
        if match is None:
            raise ValueError(f"not a ClickHouse version: {version!r}")
        return cls((int(match.group(1)), int(match.group(2))))

    @property
    def insert_dedup_token(self) -> bool:
        """True when inserts may carry ``insert_deduplication_token``."""
        return self.version >= DEDUP_TOKEN_SINCE

    @property
    def partition_limit_setting(self) -> bool:
        """True when the server limits partitions per insert (and the limit can be lifted)."""
        return self.version >= PARTITION_LIMIT_SINCE

    @property
    def add_column_if_not_exists(self) -> bool:
        """True when ``ALTER TABLE .. ADD COLUMN IF NOT EXISTS`` is understood."""
        return self.version >= ADD_COLUMN_IF_NOT_EXISTS_SINCE

    def insert_settings(self, token: str | None) -> dict[str, object]:
        """Settings of one batch insert on this server.

        A batch of historical events (a backfill, a replay) can span more
        months than the default limit of 100 partitions per insert; the
        server would refuse that batch on every retry and stall the sink, so
        the limit is lifted where the setting exists.
        """
        settings: dict[str, object] = {}
        if token is not None and self.insert_dedup_token:
            settings["insert_deduplication_token"] = token
        if self.partition_limit_setting:
            settings["max_partitions_per_insert_block"] = 0
        return settings


@dataclass(frozen=True)
class Target:
    """Where and for what server the DDL is rendered."""

    database: str
    features: ServerFeatures
    # Recent insert tokens a non-replicated table remembers (modern servers).
    dedup_window: int = 1_000
    # A cluster of the server's <remote_servers>: every statement runs ON
    # CLUSTER and the MergeTree tables are their Replicated* kind, so each
    # replica holds every row and any of them answers exact queries.
    cluster: str = ""

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.database):
            raise ValueError(f"database name {self.database!r} is not a plain identifier")
        if self.cluster and not _IDENTIFIER.match(self.cluster):
            raise ValueError(f"cluster name {self.cluster!r} is not a plain identifier")

    @property
    def on_cluster(self) -> str:
        """`` ON CLUSTER <name>`` for a cluster, else nothing."""
        return f" ON CLUSTER {quote_identifier(self.cluster)}" if self.cluster else ""

    def engine(self, kind: str, table: str, *args: str) -> str:
        """``kind(args)``, or on a cluster its replicated form with the usual macros.

        The ZooKeeper path names the database and table literally (18.16 has
        no {database}/{table} macros); ``{shard}`` and ``{replica}`` come from
        each server's <macros>.
        """
        if not self.cluster:
            return f"{kind}({', '.join(args)})"
        path = f"'/clickhouse/tables/{{shard}}/{self.database}/{table}'"
        replica = "'{replica}'"
        return f"Replicated{kind}({', '.join((path, replica, *args))})"

    def table_settings(self) -> str:
        """The SETTINGS clause of MergeTree tables that receive deduplicated inserts.

        Replicated tables deduplicate retried blocks by themselves (in
        ZooKeeper); only a single server needs the non-replicated window.
        """
        settings = ["index_granularity = 8192"]
        if self.features.insert_dedup_token and self.dedup_window > 0 and not self.cluster:
            settings.append(f"non_replicated_deduplication_window = {self.dedup_window}")
        return "SETTINGS " + ", ".join(settings)


def quote_identifier(name: str) -> str:
    """A backquoted identifier; only plain names are accepted to start with."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain identifier")
    return f"`{name}`"


MIGRATIONS_TABLE = "schema_migrations"

# The columns of `events`, in insert order, with their ClickHouse types. The
# row builder (sinks.rows) produces exactly these columns.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("project", "String"),
    ("event_time", "DateTime"),
    ("event_id", "String"),
    ("timestamp_ms", "UInt64"),
    ("received_at_ms", "UInt64"),
    ("decided_at_ms", "UInt64"),
    ("version", "UInt64"),
    ("decision", "Enum8('accepted' = 1, 'dropped' = 2)"),
    ("drop_reason", "String"),
    ("drop_stage", "String"),
    ("drop_detail", "String"),
    ("name", "String"),
    ("normalised_name", "String"),
    ("kind", "String"),
    ("source", "String"),
    ("user_key", "String"),
    ("user_id", "String"),
    ("email", "String"),
    ("anonymous_id", "String"),
    ("visitor_id", "String"),
    ("display_name", "String"),
    ("url", "String"),
    ("referrer", "String"),
    ("domain", "String"),
    ("user_agent", "String"),
    ("ip_classification", "String"),
    ("country", "String"),
    ("context_id", "String"),
    ("interactive", "Nullable(UInt8)"),
    ("scroll_depth", "Nullable(Int32)"),
    ("engagement_time_ms", "Nullable(Int64)"),
    ("hash_mode", "Nullable(UInt8)"),
    ("sdk_name", "String"),
    ("sdk_version", "String"),
    ("idempotency_key", "String"),
    ("order_id", "String"),
    ("fingerprint", "String"),
    ("browser", "String"),
    ("browser_version", "String"),
    ("os", "String"),
    ("os_version", "String"),
    ("device", "String"),
    ("property_keys", "Array(String)"),
    ("property_values", "Array(String)"),
    ("user_property_keys", "Array(String)"),
    ("user_property_values", "Array(String)"),
    ("checks", "Array(String)"),
    ("source_topic", "String"),
    ("source_partition", "Int32"),
    ("source_offset", "Int64"),
    ("revenue_amount", "Nullable(Decimal(18, 3))"),
    ("revenue_currency", "String"),
)

# Columns added to ``events`` after version 1, each by the migration that adds
# it to existing tables (a fresh table gets them from EVENT_COLUMNS at once).
ADDED_EVENT_COLUMNS: tuple[tuple[str, str], ...] = EVENT_COLUMNS[-2:]

# Profile fields kept per user; each is the value of the newest event carrying it.
USER_FIELDS: tuple[str, ...] = ("display_name", "email", "avatar", "anonymous_id")

USER_UPDATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("project", "String"),
    ("user_id", "String"),
    ("version", "UInt64"),
    ("event_id", "String"),
    # "set_" + field: a plain name would collide with the view's aliases.
    *((f"set_{field}", "String") for field in USER_FIELDS),
)

USER_PROPERTY_UPDATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("project", "String"),
    ("user_id", "String"),
    ("key", "String"),
    ("new_value", "String"),
    # 1 = set, 2 = set once (only while unset), 3 = unset.
    ("op", "UInt8"),
    ("version", "UInt64"),
)

USER_DELETION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("project", "String"),
    ("user_id", "String"),
    ("deleted_at_ms", "UInt64"),
    ("event_id", "String"),
)

# The value a deletion writes into every profile field: newer than what was
# there, so nothing from before the deletion shows again, and non-empty, so
# ``argMaxIf(.., set != '')`` takes it. Readers show it as ''.
CLEARED = "\x00"

OP_SET = 1
OP_SET_ONCE = 2
OP_UNSET = 3


def _columns(columns: tuple[tuple[str, str], ...]) -> str:
    return ",\n    ".join(f"{quote_identifier(name)} {kind}" for name, kind in columns)


def _v1_events(t: Target) -> list[str]:
    db, on = quote_identifier(t.database), t.on_cluster
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}{on}",
        f"""CREATE TABLE IF NOT EXISTS {db}.events{on} (
    {_columns(EVENT_COLUMNS)},
    `inserted_at` DateTime DEFAULT now()
) ENGINE = {t.engine("ReplacingMergeTree", "events", "version")}
PARTITION BY toYYYYMM(event_time)
ORDER BY (project, event_time, event_id)
{t.table_settings()}""",
        # A plain WHERE on a non-key column after FINAL is applied after the
        # merge on 18.16 and on current servers (checked in the tests); an
        # explicit PREWHERE would not be.
        f"""CREATE VIEW IF NOT EXISTS {db}.accepted_events{on} AS
SELECT * FROM {db}.events FINAL WHERE decision = 'accepted'""",
        f"""CREATE VIEW IF NOT EXISTS {db}.dropped_events{on} AS
SELECT * FROM {db}.events FINAL WHERE decision = 'dropped'""",
    ]


def _v2_users(t: Target) -> list[str]:
    db, on = quote_identifier(t.database), t.on_cluster
    fields = ",\n    ".join(
        f"`{f}` AggregateFunction(argMaxIf, String, UInt64, UInt8)" for f in USER_FIELDS
    )
    states = ",\n    ".join(
        f"argMaxIfState(set_{f}, version, set_{f} != '') AS {f}" for f in USER_FIELDS
    )
    return [
        f"""CREATE TABLE IF NOT EXISTS {db}.users{on} (
    `project` String,
    `user_id` String,
    `updated_at_ms` AggregateFunction(max, UInt64),
    `first_seen_ms` AggregateFunction(min, UInt64),
    {fields}
) ENGINE = {t.engine("AggregatingMergeTree", "users")}
ORDER BY (project, user_id)
SETTINGS index_granularity = 8192""",
        f"""CREATE TABLE IF NOT EXISTS {db}.user_updates{on} (
    {_columns(USER_UPDATE_COLUMNS)}
) ENGINE = Null""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.users_mv{on} TO {db}.users AS
SELECT
    project,
    user_id,
    maxState(version) AS updated_at_ms,
    minState(version) AS first_seen_ms,
    {states}
FROM {db}.user_updates
GROUP BY project, user_id""",
        f"""CREATE TABLE IF NOT EXISTS {db}.user_properties{on} (
    `project` String,
    `user_id` String,
    `key` String,
    `value` AggregateFunction(argMaxIf, String, UInt64, UInt8),
    `set_at_ms` AggregateFunction(maxIf, UInt64, UInt8),
    `unset_at_ms` AggregateFunction(maxIf, UInt64, UInt8),
    `once_value` AggregateFunction(argMinIf, String, UInt64, UInt8),
    `once_at_ms` AggregateFunction(minIf, UInt64, UInt8),
    `updated_at_ms` AggregateFunction(max, UInt64)
) ENGINE = {t.engine("AggregatingMergeTree", "user_properties")}
ORDER BY (project, user_id, key)
SETTINGS index_granularity = 8192""",
        f"""CREATE TABLE IF NOT EXISTS {db}.user_property_updates{on} (
    {_columns(USER_PROPERTY_UPDATE_COLUMNS)}
) ENGINE = Null""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.user_properties_mv{on}
TO {db}.user_properties AS
SELECT
    project,
    user_id,
    key,
    argMaxIfState(new_value, version, op = {OP_SET}) AS value,
    maxIfState(version, op = {OP_SET}) AS set_at_ms,
    maxIfState(version, op = {OP_UNSET}) AS unset_at_ms,
    argMinIfState(new_value, version, op = {OP_SET_ONCE}) AS once_value,
    minIfState(version, op = {OP_SET_ONCE}) AS once_at_ms,
    maxState(version) AS updated_at_ms
FROM {db}.user_property_updates
GROUP BY project, user_id, key""",
    ]


def _v3_profile_views(t: Target) -> list[str]:
    db, on = quote_identifier(t.database), t.on_cluster
    fields = ",\n    ".join(f"argMaxIfMerge({f}) AS {f}_value" for f in USER_FIELDS)
    renamed = ", ".join(f"{f}_value AS {f}" for f in USER_FIELDS)
    # Aliases differ from column names: 18.16 resolves an alias equal to a
    # column name inside the aggregate itself ("aggregate inside aggregate").
    return [
        f"""CREATE VIEW IF NOT EXISTS {db}.user_profiles{on} AS
SELECT project, user_id, {renamed}, updated_at, first_seen_at
FROM (
    SELECT
    project,
    user_id,
    {fields},
    maxMerge(updated_at_ms) AS updated_at,
    minMerge(first_seen_ms) AS first_seen_at
    FROM {db}.users
    GROUP BY project, user_id
)""",
        # The same rule as sinks.queries.resolve_property, in SQL.
        f"""CREATE VIEW IF NOT EXISTS {db}.user_property_values{on} AS
SELECT project, user_id, key,
       if(set_at > 0 AND set_at >= unset_at, last_value, first_once_value) AS value
FROM (
    SELECT project, user_id, key,
           argMaxIfMerge(value) AS last_value,
           maxIfMerge(set_at_ms) AS set_at,
           maxIfMerge(unset_at_ms) AS unset_at,
           argMinIfMerge(once_value) AS first_once_value,
           minIfMerge(once_at_ms) AS once_at
    FROM {db}.user_properties
    GROUP BY project, user_id, key
)
WHERE (set_at > 0 AND set_at >= unset_at) OR (once_at > 0 AND once_at > unset_at)""",
    ]


def _profile_views(t: Target) -> list[str]:
    """The v4 readable views: deletions hide a user's profile and older properties."""
    db, on = quote_identifier(t.database), t.on_cluster
    fields = ",\n    ".join(f"argMaxIfMerge({f}) AS {f}_value" for f in USER_FIELDS)
    renamed = ", ".join(f"if({f}_value = '{CLEARED}', '', {f}_value) AS {f}" for f in USER_FIELDS)
    deletions = f"""(SELECT project, user_id, max(deleted_at_ms) AS deleted_at
    FROM {db}.user_deletions GROUP BY project, user_id)"""
    return [
        f"DROP TABLE IF EXISTS {db}.user_profiles{on}",
        f"""CREATE VIEW IF NOT EXISTS {db}.user_profiles{on} AS
SELECT project, user_id, {renamed}, updated_at, first_seen_at
FROM (
    SELECT
    project,
    user_id,
    {fields},
    maxMerge(updated_at_ms) AS updated_at,
    minMerge(first_seen_ms) AS first_seen_at
    FROM {db}.users
    GROUP BY project, user_id
) AS current ANY LEFT JOIN {deletions} AS deletions USING (project, user_id)
WHERE updated_at > deleted_at""",
        f"DROP TABLE IF EXISTS {db}.user_property_values{on}",
        # The same rule as sinks.queries.resolve_property, in SQL.
        f"""CREATE VIEW IF NOT EXISTS {db}.user_property_values{on} AS
SELECT project, user_id, key,
       if(set_at > deleted_at AND set_at >= unset_at, last_value, first_once_value) AS value
FROM (
    SELECT project, user_id, key,
           argMaxIfMerge(value) AS last_value,
           maxIfMerge(set_at_ms) AS set_at,
           maxIfMerge(unset_at_ms) AS unset_at,
           argMinIfMerge(once_value) AS first_once_value,
           minIfMerge(once_at_ms) AS once_at
    FROM {db}.user_properties
    GROUP BY project, user_id, key
) AS current ANY LEFT JOIN {deletions} AS deletions USING (project, user_id)
WHERE (set_at > deleted_at AND set_at >= unset_at)
   OR (once_at > deleted_at AND once_at > unset_at)""",
    ]


def _v4_revenue_and_deletions(t: Target) -> list[str | AddColumn]:
    db, on = quote_identifier(t.database), t.on_cluster
    return [
        *(AddColumn(t, "events", name, kind) for name, kind in ADDED_EVENT_COLUMNS),
        f"""CREATE TABLE IF NOT EXISTS {db}.user_deletions{on} (
    {_columns(USER_DELETION_COLUMNS)}
) ENGINE = {t.engine("ReplacingMergeTree", "user_deletions", "deleted_at_ms")}
ORDER BY (project, user_id)
SETTINGS index_granularity = 8192""",
        *_profile_views(t),
    ]


@dataclass(frozen=True)
class AddColumn:
    """``ALTER TABLE .. ADD COLUMN``, run only when the column is missing.

    ClickHouse 18.16 knows no ``ADD COLUMN IF NOT EXISTS``, so the runner
    (``sinks.migrate``) looks in ``system.columns`` first; ``str()`` is the
    statement for the target's server (with ``IF NOT EXISTS`` where known).
    """

    target: Target
    table: str
    column: str
    kind: str

    def __str__(self) -> str:
        db, on = quote_identifier(self.target.database), self.target.on_cluster
        guard = "IF NOT EXISTS " if self.target.features.add_column_if_not_exists else ""
        return (
            f"ALTER TABLE {db}.{quote_identifier(self.table)}{on} "
            f"ADD COLUMN {guard}{quote_identifier(self.column)} {self.kind}"
        )


Statement = str | AddColumn


@dataclass(frozen=True)
class Migration:
    """One schema version: a name and the statements that reach it."""

    version: int
    name: str
    statements: Callable[[Target], Sequence[Statement]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events table and decision views", _v1_events),
    Migration(2, "users and user properties, latest value per field", _v2_users),
    Migration(3, "readable views of user profiles and properties", _v3_profile_views),
    Migration(4, "revenue columns; user deletions hide profiles", _v4_revenue_and_deletions),
)

LATEST_VERSION = MIGRATIONS[-1].version


def create_database(target: Target) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {quote_identifier(target.database)}{target.on_cluster}"


def migrations_table(target: Target) -> str:
    """DDL of the table recording applied migrations (TinyLog: tiny, every version).

    On a cluster each server has its own: a runner connected to another
    replica finds its versions missing and applies the same idempotent
    statements again, which changes nothing.
    """
    db = quote_identifier(target.database)
    return f"""CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE}{target.on_cluster} (
    `version` UInt32,
    `name` String,
    `applied_at` DateTime
) ENGINE = TinyLog"""


def pending(applied: set[int]) -> list[Migration]:
    """The migrations not applied yet, oldest first."""
    return [m for m in MIGRATIONS if m.version not in applied]


def render_all(target: Target) -> list[str]:
    """Every statement of every migration, in order (for tests and ``migrate --print``)."""
    statements = [create_database(target), migrations_table(target)]
    for migration in MIGRATIONS:
        statements.extend(str(s) for s in migration.statements(target))
    return statements
