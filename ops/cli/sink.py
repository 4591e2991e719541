"""``eventsieve sink``, ``eventsieve migrate`` and ``eventsieve stats`` — the ClickHouse side."""

from __future__ import annotations

import datetime as dt
import re
import signal
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eventsieve.errors import EventsieveError
from eventsieve.kafka import ensure_topics
from eventsieve.logging import configure_logging
from eventsieve.services import kafka_bootstrap
from ops.cli.context import printable, settings_of

console = Console()

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UsageError(EventsieveError):
    """A command-line value that cannot be used."""


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` → timedelta."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(f"{text!r} is not a duration like 15m, 24h or 7d")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 date or time; without a zone it is UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO 8601 date/time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def sink(
    ctx: typer.Context,
    loglevel: Annotated[
        str | None,
        typer.Option("--loglevel", "-l", help="debug, info, warning [$EVENTSIEVE_LOG_LEVEL]"),
    ] = None,
) -> None:
    """Write events.clean and events.dropped to ClickHouse (migrates the schema first).

    Offsets are committed only after ClickHouse acknowledged each batch; while
    ClickHouse is down the sink pauses and retries, it does not exit.
    """
    from sinks.service import run_sink

    configure_logging(loglevel)
    settings = settings_of(ctx)
    topics = settings.topics
    ensure_topics(
        kafka_bootstrap(settings),
        [topics.clean, topics.dropped, topics.dlq],
        topics.partitions,
        topics.replication_factor,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_sink(settings, stop)


def migrate(
    ctx: typer.Context,
    show: Annotated[
        bool, typer.Option("--print", help="Print the DDL for this server instead of running it")
    ] = False,
) -> None:
    """Create or upgrade the ClickHouse schema (idempotent; the sink also runs it at start)."""
    from sinks import ddl
    from sinks.migrate import migrate as run_migrations
    from sinks.service import connect

    settings = settings_of(ctx)
    ch = connect(settings)
    try:
        if show:
            target = ddl.Target(
                settings.clickhouse.database,
                ch.features(),
                settings.sink.dedup_window,
                settings.clickhouse.cluster,
            )
            for statement in ddl.render_all(target):
                console.print(f"{statement};\n", highlight=False, soft_wrap=True)
            return
        result = run_migrations(ch, settings.sink.dedup_window, settings.clickhouse.cluster)
    finally:
        ch.close()
    server = ".".join(map(str, result.server_version))
    applied = ", ".join(map(str, result.applied)) or "none (already up to date)"
    console.print(
        f"database {settings.clickhouse.database} on ClickHouse {server}: "
        f"schema version {result.version}; applied: {applied}"
    )


def stats(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Project id (default: every project)")
    ] = None,
    since: Annotated[
        str, typer.Option("--since", help="Range ending now, e.g. 15m, 24h, 7d")
    ] = "24h",
    start: Annotated[
        str | None, typer.Option("--from", help="Range start (ISO 8601, UTC unless zoned)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Range end, exclusive")] = None,
) -> None:
    """Accepted events by name, dropped events by reason, unique users — exact counts."""
    from sinks import queries
    from sinks.errors import ClickHouseUnavailableError
    from sinks.service import connect

    now = dt.datetime.now(dt.UTC)
    try:
        if start is not None:
            span = queries.TimeRange(parse_time(start), parse_time(end) if end else now)
        else:
            span = queries.TimeRange.last(parse_duration(since), now)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ch = connect(settings_of(ctx))
    try:
        projects = [project] if project else queries.projects_in(ch, span)
        results = [queries.project_stats(ch, p, span) for p in projects]
    except ClickHouseUnavailableError as exc:
        raise ClickHouseUnavailableError(
            f"{exc} (is the pipeline running? `make run` or `eventsieve stack up` starts it)"
        ) from exc
    finally:
        ch.close()
    window = f"{span.start:%Y-%m-%d %H:%M:%S} – {span.end:%Y-%m-%d %H:%M:%S} UTC"
    if not results:
        console.print(f"no events in {window}")
    for result in results:
        header = printable(result.project)
        header.stylize("bold")
        header.append(
            f"  {window}\naccepted {result.accepted:,}  dropped {result.dropped:,}  "
            f"unique users {result.unique_users:,}"
        )
        console.print(header)
        accepted = Table("event", "accepted", title="accepted events by name")
        for name, count in result.accepted_by_name:
            accepted.add_row(printable(name), f"{count:,}")
        dropped = Table("reason", "dropped", title="dropped events by reason")
        for reason, count in result.dropped_by_reason:
            dropped.add_row(printable(reason), f"{count:,}")
        console.print(accepted, dropped)


def register(app: typer.Typer) -> None:
    app.command()(sink)
    app.command()(migrate)
    app.command()(stats)
