"""``eventsieve replay``: decide a time range of events.raw again with the current rules.

The logic lives in streams/replay.py (pure) and ops/replay.py (I/O);
this module parses options, shows progress and prints the report.
"""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ops.cli.context import settings_of
from ops.cli.sink import UsageError, parse_time


class _RateColumn(ProgressColumn):
    """Records per second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rec/s", style="progress.data.speed")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "open end"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def replay(
    ctx: typer.Context,
    start: Annotated[
        str, typer.Option("--from", help="Start of the range (ISO 8601; UTC without a zone).")
    ],
    end: Annotated[
        str | None, typer.Option("--to", help="End of the range, excluded (default: open).")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project.")] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Write nothing; print which decisions would change."),
    ] = False,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Where checkpoints live (default: <stack dir>/replay)."),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="Start over, ignoring an unfinished checkpoint."),
    ] = False,
) -> None:
    """Decide the raw events of a time range again with the current rules, while live goes on.

    Events before --from are read as context (a duplicate of an event
    accepted just before the range is still a duplicate). Only events whose
    time lies in [--from, --to) get a new decision; nothing else changes.
    Interrupted, the same command resumes where it stopped.
    """
    from ops.replay import ReplayOptions, run_replay
    from streams.replay import ReplayRange

    settings = settings_of(ctx)
    t1 = parse_time(start)
    t2 = parse_time(end) if end is not None else None
    if t2 is not None and t2 <= t1:
        raise UsageError("--to must be after --from")
    if project is not None and project not in {p.id for p in settings.projects}:
        raise UsageError(f"unknown project {project!r}")
    # Whole seconds: ClickHouse's event_time has no finer resolution.
    span = ReplayRange(int(t1.timestamp()), None if t2 is None else int(t2.timestamp()), project)
    # `kill` stops it like Ctrl-C: acknowledged outputs are checkpointed first.
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("dry run" if dry_run else "replay", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        options = ReplayOptions(
            span=span,
            state_dir=state_dir or settings.stack.dir / "replay",
            dry_run=dry_run,
            fresh=fresh,
            progress=advance,
        )
        report = run_replay(settings, options)
    out = Console()
    what = project or "all projects"
    out.print(f"range {_when(span.start_s)} → {_when(span.end_s)}, {what}")
    c = report.counts
    out.print(
        f"read {c.records:,} raw records up to the snapshot: {c.context:,} context, "
        f"{c.in_range:,} in range, {c.dlq:,} undecodable (left to the DLQ)"
    )
    if report.resumed:
        out.print(f"resumed: {report.skipped:,} decisions were already produced")
    verb = "would change" if dry_run else "changed"
    if report.changes:
        out.print(f"{report.changed:,} decision(s) {verb}:")
        width = max(len(f"{old} → {new}") for old, new, _ in report.changes)
        for old, new, n in report.changes:
            out.print(f"  {f'{old} → {new}':<{width}}  {n:>9,}", highlight=False, markup=False)
    else:
        out.print(f"no decision {verb}")
    if report.not_replayed:
        out.print(
            f"{report.not_replayed:,} event(s) in ClickHouse in this range are not in the "
            "snapshot (published after it started, or not from the raw topic): left as they are"
        )
    if not dry_run:
        out.print(f"produced {report.produced:,} decision(s); the sink stores them shortly")


def register(app: typer.Typer) -> None:
    app.command()(replay)
