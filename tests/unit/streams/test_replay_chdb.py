"""Replay's read of the current decisions on current ClickHouse (chdb, in-process).

The same query runs against the local stack's old server in
tests/integration/replay/test_replay.py.
"""

from __future__ import annotations

from typing import Any

from ops.replay import read_latest
from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import Stage
from sinks.migrate import migrate
from sinks.rows import Batch, Decision
from streams.replay import ReplayRange

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S0 = T0 // 1000


def raw(event_id: str, ts: int, project: str = "demo") -> Any:
    return new_raw_event(
        project=project, name="x", event_id=event_id, timestamp=ts, received_at=ts, user_id="u"
    )


def write(ch: Any, rows: list[tuple[dict, Decision]]) -> None:
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


def test_read_latest_reduces_to_the_newest_decision_within_the_range(
    chdb_clickhouse: Any,
) -> None:
    ch = chdb_clickhouse
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
