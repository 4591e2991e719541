"""The ClickHouse server and current ClickHouse (chdb) both run the DDL and queries we write.

The local server is old (Debian's 18.16); production runs current releases.
Every statement here runs on both, so nothing relies on one version's quirks.
"""

from __future__ import annotations

from datetime import datetime

import pytest

DDL = """
CREATE TABLE {table} (
    project String,
    event_id String,
    name String,
    ts DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (project, ts, event_id)
"""
ROWS = [
    ("p1", "e1", "pageview", datetime(2026, 1, 31, 23, 59, 59), 1),
    ("p1", "e2", "signup", datetime(2026, 2, 1, 0, 0, 0), 1),
    ("p1", "e1", "pageview", datetime(2026, 1, 31, 23, 59, 59), 2),  # newer version of e1
    ("p2", "e3", "pageview", datetime(2026, 2, 14, 12, 0, 0), 1),
]
QUERY = """
SELECT project, name, count() AS events
FROM {table} FINAL
GROUP BY project, name
ORDER BY project, name
"""
EXPECTED = [("p1", "pageview", 1), ("p1", "signup", 1), ("p2", "pageview", 1)]


def test_server_runs_partitioned_replacing_table(ch_client):
    ch_client.execute(DDL.format(table="smoke"))
    ch_client.execute("INSERT INTO smoke (project, event_id, name, ts, version) VALUES", ROWS)
    assert ch_client.execute(QUERY.format(table="smoke")) == EXPECTED
    partitions = ch_client.execute(
        "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'smoke' AND active ORDER BY partition"
    )
    assert [p for (p,) in partitions] == ["202601", "202602"]


def test_current_clickhouse_runs_the_same_ddl_and_query(tmp_path):
    chdb_session = pytest.importorskip("chdb.session")
    session = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        session.query("CREATE DATABASE smoke")
        session.query(DDL.format(table="smoke.events"))
        values = ", ".join(
            f"('{p}', '{e}', '{n}', '{ts:%Y-%m-%d %H:%M:%S}', {v})" for p, e, n, ts, v in ROWS
        )
        session.query(f"INSERT INTO smoke.events VALUES {values}")
        out = session.query(QUERY.format(table="smoke.events"), "TabSeparated").bytes().decode()
        version = session.query("SELECT version()", "TabSeparated").bytes().decode().strip()
    finally:
        session.close()
    rows = [tuple(line.split("\t")) for line in out.strip().splitlines()]
    assert [(p, n, int(c)) for p, n, c in rows] == EXPECTED
    assert int(version.split(".")[0]) >= 24  # really a current engine
