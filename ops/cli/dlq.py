"""``eventsieve dlq list`` and ``eventsieve dlq redrive``: what is in events.dlq, and re-driving it.

The logic lives in ops/dlq.py; this module parses options and prints
(a rich table for people, ``--json`` for scripts).
"""

from __future__ import annotations

import datetime
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ops import dlq
from ops.cli.context import printable, settings_of

SAMPLES = 20  # re-drives shown one by one on a dry run: enough to check, not a flood


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _groups_table(title: str, groups: list[dlq.Group]) -> Table:
    table = Table(title=title, show_lines=False)
    for name in ("source topic", "error", "stage", "count", "last failed (UTC)", "examples"):
        table.add_column(name, justify="right" if name == "count" else "left", overflow="fold")
    for g in groups:
        table.add_row(
            printable(g.topic),
            printable(g.error_type),
            printable(g.stage),
            str(g.count),
            _when(g.last_failed_at),
            Text("\n").join(printable(e[:160]) for e in g.examples),
        )
    return table


# Options both commands take.
IdleTimeout = Annotated[
    float | None,
    typer.Option(
        min=0.1, help="Stop after this many seconds without a record (default: dlq.idle_timeout_s)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]


def list_command(
    ctx: typer.Context,
    max_records: Annotated[
        int | None, typer.Option("--max", min=1, help="Read at most this many records.")
    ] = None,
    idle_timeout: IdleTimeout = None,
    as_json: AsJson = False,
) -> None:
    """Show what is in events.dlq, from the beginning, grouped by source topic and error."""
    settings = settings_of(ctx)
    groups, total = dlq.list_dlq(settings, max_records=max_records, idle_timeout_s=idle_timeout)
    if as_json:
        doc = {
            "topic": settings.topics.dlq,
            "records": total,
            "groups": [g.as_dict() for g in groups],
        }
        typer.echo(orjson.dumps(doc).decode())
        return
    console = Console()
    if not groups:
        console.print(f"{settings.topics.dlq} is empty.")
        return
    console.print(_groups_table(f"{settings.topics.dlq}: {total} record(s)", groups))


def redrive_command(
    ctx: typer.Context,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Only records from this source topic (repeatable)."),
    ] = None,
    error: Annotated[
        list[str] | None,
        typer.Option("--error", help="Only records with this error code (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would happen; publish nothing.")
    ] = False,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Every DLQ record again, not only those added since the last re-drive.",
        ),
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", min=1, help="Handle at most this many records.")
    ] = None,
    idle_timeout: IdleTimeout = None,
    as_json: AsJson = False,
) -> None:
    """Publish DLQ records again to the topic they came from, to be processed once more.

    Run it after the fix is deployed. Each event keeps a stable event id, so
    re-driving twice never counts anything twice. Records that still fail
    with the current codecs and rules are reported and left in the DLQ.
    """
    settings = settings_of(ctx)
    console = Console(stderr=as_json)
    errors_console = Console(stderr=True)
    progress = Progress(
        TextColumn("re-driving" if not dry_run else "checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=errors_console,
        transient=True,
        disable=not errors_console.is_terminal,
    )
    task = progress.add_task("dlq", total=None)

    def advance(report: dlq.Report, span: dlq.Span) -> None:
        total = min(span.pending, max_records) if max_records else span.pending
        progress.update(task, total=total, completed=report.read)

    with progress:
        report = dlq.redrive(
            settings,
            sources=tuple(source or ()),
            errors=tuple(error or ()),
            from_beginning=from_beginning,
            dry_run=dry_run,
            max_records=max_records,
            idle_timeout_s=idle_timeout,
            samples=SAMPLES if dry_run else 0,
            on_batch=advance,
        )
    if as_json:
        typer.echo(orjson.dumps({"dry_run": dry_run, **report.as_dict()}).decode())
        return
    verb = "would re-drive" if dry_run else "re-drove"
    for p in report.samples:
        target = p.event_id or "original bytes"
        console.print(f"  {p.entry.position} → {p.topic} ({target})")
    if report.redriven:
        table = Table(title=f"{verb} {report.redriven_total} record(s)")
        table.add_column("to topic")
        table.add_column("had failed with")
        table.add_column("count", justify="right")
        for (topic, code), n in sorted(report.redriven.items()):
            table.add_row(topic, code, str(n))
        console.print(table)
    if report.still_failing:
        console.print(
            _groups_table(
                f"still failing, left in the DLQ: {report.still_failing_total}",
                report.still_failing,
            )
        )
        console.print(
            "After a further fix, re-check them with --from-beginning "
            "(records already re-driven are published again, harmlessly: their ids are stable)."
        )
    console.print(
        f"read {report.read}, {verb} {report.redriven_total}, "
        f"still failing {report.still_failing_total}, repeats {report.repeats}, "
        f"filtered out {report.filtered}"
        + (" (dry run: nothing published or committed)" if dry_run else "")
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The dead-letter queue: list it, re-drive it after a fix.")
    group.command("list")(list_command)
    group.command("redrive")(redrive_command)
    app.add_typer(group, name="dlq")
