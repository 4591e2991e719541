"""The migration runner: brings a database to ``ddl.LATEST_VERSION``, idempotently.

Applied versions are recorded in ``schema_migrations``. Running it again does
nothing; two runners at once both apply the same idempotent statements and
record the version twice, which reads the same (``DISTINCT``). The sink runs
it at start, ``eventsieve migrate`` runs it on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_driver.errors import ServerException

from eventsieve.logging import get_logger
from sinks import ddl
from sinks.clickhouse import ClickHouse
from sinks.errors import ClickHouseUnavailableError, MigrationError

log = get_logger(__name__)


@dataclass(frozen=True)
class MigrationResult:
    """What a run did: the versions applied now and the version reached."""

    applied: tuple[int, ...]
    version: int
    server_version: tuple[int, int]


def applied_versions(ch: ClickHouse) -> set[int]:
    """Versions recorded in the database (empty when nothing was migrated)."""
    db = ddl.quote_identifier(ch.database)
    exists = ch.scalar(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(name)s",
        {"db": ch.database, "name": ddl.MIGRATIONS_TABLE},
    )
    if not exists:
        return set()
    rows = ch.execute(f"SELECT DISTINCT version FROM {db}.{ddl.MIGRATIONS_TABLE}")
    return {int(row[0]) for row in rows}


def _has_column(ch: ClickHouse, add: ddl.AddColumn) -> bool:
    """Whether the column an ``AddColumn`` adds is there already (a fresh table has it)."""
    found = ch.scalar(
        "SELECT count() FROM system.columns "
        "WHERE database = %(db)s AND table = %(table)s AND name = %(column)s",
        {"db": ch.database, "table": add.table, "column": add.column},
    )
    return bool(found)


def migrate(ch: ClickHouse, dedup_window: int = 1_000, cluster: str = "") -> MigrationResult:
    """Apply every pending migration in order; raise MigrationError on a failed statement.

    A server that does not answer raises ClickHouseUnavailableError instead,
    so the caller can tell "wait and retry" from "the DDL is wrong". With a
    ``cluster``, every statement runs ON CLUSTER (see ``ddl.Target``).
    """
    features = ch.features()
    target = ddl.Target(ch.database, features, dedup_window, cluster)
    statement: ddl.Statement
    for statement in (ddl.create_database(target), ddl.migrations_table(target)):
        try:
            ch.execute(statement)
        except ClickHouseUnavailableError as exc:
            if _server_answered(exc):
                raise MigrationError(0, f"database or {ddl.MIGRATIONS_TABLE}: {exc}") from exc
            raise
    done = applied_versions(ch)
    applied: list[int] = []
    for migration in ddl.pending(done):
        for statement in migration.statements(target):
            if isinstance(statement, ddl.AddColumn) and _has_column(ch, statement):
                continue
            try:
                ch.execute(str(statement))
            except ClickHouseUnavailableError as exc:
                if _server_answered(exc):
                    raise MigrationError(migration.version, str(exc)) from exc
                raise
        ch.execute(
            f"INSERT INTO {ddl.quote_identifier(ch.database)}.{ddl.MIGRATIONS_TABLE} "
            "(version, name, applied_at) "
            "SELECT toUInt32(%(version)s), %(name)s, now()",
            {"version": migration.version, "name": migration.name},
        )
        log.info("migration applied", version=migration.version, name=migration.name)
        applied.append(migration.version)
    version = max(done | set(applied), default=0)
    return MigrationResult(tuple(applied), version, features.version)


def _server_answered(exc: ClickHouseUnavailableError) -> bool:
    """True when the server rejected the statement (vs. could not be reached)."""
    return isinstance(exc.__cause__, ServerException)
