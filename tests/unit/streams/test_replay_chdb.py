"""Replay's read of the current decisions on current ClickHouse (chdb, in-process).

The same query runs against the local stack's old server in
tests/integration/replay/test_replay.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from clickhouse_driver import Client
from clickhouse_driver.util.escape import escape_param

from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import Stage
from sinks.ddl import ServerFeatures
from sinks.migrate import migrate
from sinks.rows import Batch, Decision
from streams.replay import ReplayRange
from streams.replay_run import read_latest

chdb_session = pytest.importorskip("chdb.session")

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S0 = T0 // 1000


class Chdb:
    """The subset of sinks.clickhouse.ClickHouse that migrations and replay use, on chdb."""

    def __init__(self, session: Any, database: str) -> None:
        self.session = session
        self.database = database
        self._client = Client("localhost")  # never connects: only formats parameters
        self._context = self._client.connection.context

    def features(self) -> ServerFeatures:
        return ServerFeatures.parse(str(self.scalar("SELECT version()")))

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        if isinstance(params, list):  # INSERT ... VALUES with rows
            values = ", ".join(
                "(" + ", ".join(str(escape_param(v, self._context)) for v in row) + ")"
                for row in params
            )
            self.session.query(f"{sql} {values}")
            return []
        if params:
            sql = self._client.substitute_params(sql, params, self._context)
        result = self.session.query(sql, "JSONCompact")
        text = result.data() if hasattr(result, "data") else str(result)
        if not text.strip():
            return []
        return [tuple(row) for row in json.loads(text)["data"]]

    def scalar(self, sql: str, params: Any = None) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def insert_columns(
        self, table: str, names: Sequence[str], columns: Sequence[list[Any]], token: Any = None
    ) -> int:
        rows = list(zip(*columns, strict=True))
        self.execute(f"INSERT INTO {self.database}.{table} ({', '.join(names)}) VALUES", rows)
        return len(rows)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    s = chdb_session.Session(str(tmp_path_factory.mktemp("chdb")))
    yield s
    s.close()


def raw(event_id: str, ts: int, project: str = "demo") -> Any:
    return new_raw_event(
        project=project, name="x", event_id=event_id, timestamp=ts, received_at=ts, user_id="u"
    )


def write(ch: Chdb, rows: list[tuple[dict, Decision]]) -> None:
    batch = Batch()
    for event, decision in rows:
        batch.add(event, decision)
    ch.insert_columns("events", batch.events.names, batch.events.data)


def accepted(event_id: str, ts: int, decided_at: int, project: str = "demo") -> tuple:
    event = clean_event(
        raw(event_id, ts, project), normalised_name="x", user_key="u", decided_at=decided_at
    )
    return dict(event), Decision.ACCEPTED


def dropped(event_id: str, ts: int, decided_at: int, reason: str) -> tuple:
    event = dropped_event(
        raw(event_id, ts), reason=reason, stage=Stage.BOT, decided_at=decided_at, user_key="u"
    )
    return dict(event), Decision.DROPPED


def test_read_latest_reduces_to_the_newest_decision_within_the_range(session: Any) -> None:
    ch = Chdb(session, f"t_{uuid.uuid4().hex[:10]}")
    migrate(ch)  # type: ignore[arg-type]
    write(
        ch,
        [
            accepted("a", T0, 1),
            dropped("a", T0, 2, "bot"),  # a replay's later decision wins
            accepted("b", T0 + 5_999, 1),
            accepted("b", T0 + 5_999, 1),  # the same row twice: one event
            accepted("c", T0 + 10_000, 1),  # at the end: outside [S0, S0 + 10)
            accepted("d", T0 - 1, 1),  # before the start
            accepted("e", T0 + 1_000, 1, project="other"),
        ],
    )
    assert read_latest(ch, ReplayRange(S0, S0 + 10)) == {  # type: ignore[arg-type]
        "a": "dropped:bot",
        "b": "accepted",
        "e": "accepted",
    }
    assert read_latest(ch, ReplayRange(S0, None, "demo")) == {  # type: ignore[arg-type]
        "a": "dropped:bot",
        "b": "accepted",
        "c": "accepted",
    }
