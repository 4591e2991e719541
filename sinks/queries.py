"""Exact reads: counts that hold before background merges, on every ClickHouse version.

``events`` may hold several rows per ``event_id`` until parts merge (retries,
replays, crash re-deliveries). Every count here first reduces each event to
its latest decision with ``argMax(.., version)`` grouped by ``event_id``, then
counts. The range filter is on ``project`` and ``event_time`` only: both are
part of the sorting key and never change for an event, so filtering before
the reduction cannot pick an outdated row (a filter on ``decision`` before it
could).

Profiles (``users``, ``user_properties``) are AggregatingMergeTree states,
merged at read time with ``-Merge``: exact by construction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sinks.clickhouse import ClickHouse
from sinks.ddl import CLEARED, quote_identifier


@dataclass(frozen=True)
class TimeRange:
    """A half-open range of event time ``[start, end)``, in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("time range bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("the end of a time range must be after its start")

    @classmethod
    def last(cls, duration: dt.timedelta, now: dt.datetime) -> TimeRange:
        """The ``duration`` up to and including ``now`` (end is one second later)."""
        end = now.replace(microsecond=0) + dt.timedelta(seconds=1)
        return cls(end - duration, end)

    def params(self) -> dict[str, int]:
        # Epoch seconds and toDateTime(): independent of the server's timezone.
        return {"start": int(self.start.timestamp()), "end": int(self.end.timestamp())}


@dataclass(frozen=True)
class ProjectStats:
    """What ``eventsieve stats`` prints for one project and range."""

    project: str
    range: TimeRange
    accepted_by_name: list[tuple[str, int]]
    dropped_by_reason: list[tuple[str, int]]
    unique_users: int

    @property
    def accepted(self) -> int:
        return sum(n for _, n in self.accepted_by_name)

    @property
    def dropped(self) -> int:
        return sum(n for _, n in self.dropped_by_reason)


@dataclass(frozen=True)
class UserProfile:
    """The latest profile of one user: each field from the newest event that set it."""

    project: str
    user_id: str
    display_name: str
    email: str
    avatar: str
    updated_at_ms: int
    first_seen_ms: int
    properties: dict[str, str] = field(default_factory=dict)


def _latest(db: str, columns: str) -> str:
    """Subquery: one row per event_id in the range, with its latest decision."""
    return f"""
    SELECT event_id, argMax(decision, version) AS latest_decision, {columns}
    FROM {db}.events
    WHERE project = %(project)s
      AND event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s)
    GROUP BY event_id"""


def latest_decisions(
    ch: ClickHouse, start_s: int, end_s: int | None = None, project: str | None = None
) -> list[tuple[str, str, str]]:
    """(event_id, decision, drop_reason) of every event's latest decision.

    Events with an event time in ``[start_s, end_s)`` (``end_s`` None: no end),
    of one project or all: what a replay compares its decisions with.
    """
    db = quote_identifier(ch.database)
    where = ["event_time >= toDateTime(%(start)s)"]
    params: dict[str, Any] = {"start": start_s}
    if end_s is not None:
        where.append("event_time < toDateTime(%(end)s)")
        params["end"] = end_s
    if project is not None:
        where.append("project = %(project)s")
        params["project"] = project
    sql = f"""
SELECT event_id, toString(argMax(decision, version)), argMax(drop_reason, version)
FROM {db}.events
WHERE {" AND ".join(where)}
GROUP BY event_id"""
    return [(str(e), str(d), str(r)) for e, d, r in ch.execute(sql, params)]


def accepted_by_name(ch: ClickHouse, project: str, span: TimeRange) -> list[tuple[str, int]]:
    """Accepted events per event name, most frequent first."""
    db = quote_identifier(ch.database)
    sql = f"""
SELECT latest_name, count() AS n
FROM ({_latest(db, "argMax(name, version) AS latest_name")})
WHERE latest_decision = 'accepted'
GROUP BY latest_name
ORDER BY n DESC, latest_name"""
    return [(str(a), int(b)) for a, b in ch.execute(sql, {"project": project, **span.params()})]


def dropped_by_reason(ch: ClickHouse, project: str, span: TimeRange) -> list[tuple[str, int]]:
    """Dropped events per drop reason, most frequent first."""
    db = quote_identifier(ch.database)
    sql = f"""
SELECT latest_reason, count() AS n
FROM ({_latest(db, "argMax(drop_reason, version) AS latest_reason")})
WHERE latest_decision = 'dropped'
GROUP BY latest_reason
ORDER BY n DESC, latest_reason"""
    return [(str(a), int(b)) for a, b in ch.execute(sql, {"project": project, **span.params()})]


def unique_users(ch: ClickHouse, project: str, span: TimeRange) -> int:
    """Distinct users (``user_key``) with at least one accepted event in the range."""
    db = quote_identifier(ch.database)
    sql = f"""
SELECT uniqExact(latest_user)
FROM ({_latest(db, "argMax(user_key, version) AS latest_user")})
WHERE latest_decision = 'accepted' AND latest_user != ''"""
    return int(ch.scalar(sql, {"project": project, **span.params()}) or 0)


def decision_counts(
    ch: ClickHouse, project: str, span: TimeRange
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Accepted events by name and dropped events by reason, in one pass over the range."""
    db = quote_identifier(ch.database)
    columns = "argMax(name, version) AS latest_name, argMax(drop_reason, version) AS latest_reason"
    sql = f"""
SELECT toString(latest_decision) AS d,
       if(latest_decision = 'accepted', latest_name, latest_reason) AS label,
       count() AS n
FROM ({_latest(db, columns)})
GROUP BY d, label
ORDER BY d, n DESC, label"""
    accepted: list[tuple[str, int]] = []
    dropped: list[tuple[str, int]] = []
    for decision, label, n in ch.execute(sql, {"project": project, **span.params()}):
        (accepted if decision == "accepted" else dropped).append((str(label), int(n)))
    return accepted, dropped


def project_stats(ch: ClickHouse, project: str, span: TimeRange) -> ProjectStats:
    """Accepted by name, dropped by reason and unique users of one project (two scans)."""
    accepted, dropped = decision_counts(ch, project, span)
    return ProjectStats(
        project=project,
        range=span,
        accepted_by_name=accepted,
        dropped_by_reason=dropped,
        unique_users=unique_users(ch, project, span),
    )


def projects_in(ch: ClickHouse, span: TimeRange) -> list[str]:
    """Projects with any event in the range (for ``stats`` without ``--project``)."""
    db = quote_identifier(ch.database)
    sql = f"""
SELECT DISTINCT project FROM {db}.events
WHERE event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s)
ORDER BY project"""
    return [str(row[0]) for row in ch.execute(sql, span.params())]


def event_count(ch: ClickHouse, project: str | None = None) -> int:
    """Distinct event ids stored (any decision), optionally for one project."""
    db = quote_identifier(ch.database)
    where = "WHERE project = %(project)s" if project is not None else ""
    return int(
        ch.scalar(f"SELECT uniqExact(event_id) FROM {db}.events {where}", {"project": project}) or 0
    )


def resolve_property(
    value: str, set_at: int, unset_at: int, once_value: str, once_at: int, deleted_at: int = 0
) -> str | None:
    """The current value of a user property from its merged states, or None if unset.

    The newest set or unset wins; a set-once value holds when no set is
    current and no unset came after it; nothing from before the user's
    deletion (``deleted_at``) counts. A timestamp of 0 means "never".
    """
    if set_at > deleted_at and set_at >= unset_at:
        return value
    if once_at > deleted_at and once_at > unset_at:
        return once_value
    return None


def user_profiles(
    ch: ClickHouse, project: str, user_ids: list[str] | None = None, limit: int = 1_000
) -> list[UserProfile]:
    """Latest profiles of a project (all, or the given user ids), with their properties.

    A user whose newest profile event is a deletion has no profile; fields
    cleared by a deletion read as ''.
    """
    db = quote_identifier(ch.database)
    params: dict[str, Any] = {"project": project, "limit": limit}
    only = ""
    if user_ids is not None:
        only = "AND user_id IN %(ids)s"
        params["ids"] = tuple(user_ids) or ("",)
    deletions = f"""(SELECT user_id, max(deleted_at_ms) AS deleted_at
    FROM {db}.user_deletions WHERE project = %(project)s {only} GROUP BY user_id)"""
    profiles = ch.execute(
        f"""
SELECT user_id, name, email, avatar, updated_at, first_seen_at, deleted_at
FROM (
    SELECT user_id,
           argMaxIfMerge(display_name) AS name, argMaxIfMerge(email) AS email,
           argMaxIfMerge(avatar) AS avatar,
           maxMerge(updated_at_ms) AS updated_at, minMerge(first_seen_ms) AS first_seen_at
    FROM {db}.users
    WHERE project = %(project)s {only}
    GROUP BY user_id
) AS current ANY LEFT JOIN {deletions} AS deletions USING (user_id)
WHERE updated_at > deleted_at
ORDER BY user_id
LIMIT %(limit)s""",
        params,
    )
    properties: dict[str, dict[str, str]] = {}
    deleted_at = {str(row[0]): int(row[6]) for row in profiles}
    if profiles:
        params["ids"] = tuple(deleted_at)
        rows = ch.execute(
            f"""
SELECT user_id, key,
       argMaxIfMerge(value), maxIfMerge(set_at_ms), maxIfMerge(unset_at_ms),
       argMinIfMerge(once_value), minIfMerge(once_at_ms)
FROM {db}.user_properties
WHERE project = %(project)s AND user_id IN %(ids)s
GROUP BY user_id, key""",
            params,
        )
        for user_id, key, value, set_at, unset_at, once_value, once_at in rows:
            current = resolve_property(
                value, set_at, unset_at, once_value, once_at, deleted_at[str(user_id)]
            )
            if current is not None:
                properties.setdefault(user_id, {})[key] = current
    return [
        UserProfile(
            project=project,
            user_id=str(user_id),
            display_name=_shown(name),
            email=_shown(email),
            avatar=_shown(avatar),
            updated_at_ms=int(updated),
            first_seen_ms=int(first),
            properties=properties.get(user_id, {}),
        )
        for user_id, name, email, avatar, updated, first, _ in profiles
    ]


def _shown(value: str) -> str:
    """A profile field as readers see it: a field cleared by a deletion is ''."""
    return "" if value == CLEARED else value
