"""``eventsieve stack up|down|status|logs`` — the local Kafka + ClickHouse stack."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eventsieve.kafka import ensure_eventsieve_topics
from ops.cli.context import settings_of
from ops.stack import LocalStack

console = Console()


def up(ctx: typer.Context) -> None:
    """Start Kafka and ClickHouse (reusing what already runs), create the topics."""
    settings = settings_of(ctx)
    stack = LocalStack(settings)
    names = [s.name for s in stack.managed]
    if to_start := [s.name for s in stack.managed if s.process.pid() is None]:
        console.print(f"starting {', '.join(to_start)} (the first run fetches Kafka's jars)...")
    started = stack.up()
    created = ensure_eventsieve_topics(settings)
    for name in names:
        console.print(f"{name}: {'started' if name in started else 'already running'}")
    if created:
        console.print(f"topics created: {', '.join(created)}")


def down(ctx: typer.Context) -> None:
    """Stop the Kafka and ClickHouse processes that `stack up` started (data is kept)."""
    stopped = LocalStack(settings_of(ctx)).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")


def status(ctx: typer.Context) -> None:
    """Versions, addresses, pids and data sizes of the stack's services."""
    table = Table("service", "state", "address", "version", "pid", "data")
    for s in LocalStack(settings_of(ctx)).status():
        table.add_row(
            s.name,
            s.state,
            s.address,
            s.version or "-",
            str(s.pid) if s.pid else "-",
            _human(s.data_bytes) if s.data_dir else "-",
        )
    console.print(table)
    settings = settings_of(ctx)
    console.print(f"data, logs and pid files: {_relative(settings.stack.dir.resolve())}/")


def logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="kafka or clickhouse")] = "kafka",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many last lines")] = 50,
) -> None:
    """Print (or follow) the log of one service."""
    if service not in ("kafka", "clickhouse"):
        raise typer.BadParameter("service must be kafka or clickhouse")
    path = LocalStack(settings_of(ctx)).log_file(service)
    if not path.exists():
        console.print(f"no log yet at {path}")
        return
    argv = ["tail", f"-n{lines}", *(["-F"] if follow else []), str(path)]
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(argv, check=False)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _human(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def register(app: typer.Typer) -> None:
    stack_app = typer.Typer(
        help="The local Kafka + ClickHouse stack (no Docker needed).", no_args_is_help=True
    )
    for command in (up, down, status, logs):
        stack_app.command()(command)
    app.add_typer(stack_app, name="stack")
