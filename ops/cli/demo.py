"""``eventsieve demo`` — send a realistic traffic mix and show what landed in ClickHouse.

Uses the running pipeline when its endpoint answers; otherwise starts what is
needed (stack, topics, schema, endpoint + worker + sink, logs to a file) and
stops it again afterwards. Exits 0 only when every request got its documented
status and ClickHouse holds exactly the expected counts.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eventsieve.config import Settings
from ops.cli.context import settings_of
from ops.cli.run import config_of
from ops.pipeline import (
    check_ports,
    endpoint_ready,
    endpoint_url,
    prepare,
    programs,
    wait_for_endpoint,
)
from ops.stack import LocalStack
from ops.supervisor import Supervisor

console = Console(highlight=False)
PROJECT = "demo"


def demo(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for events to land")] = 120.0,
) -> None:
    """Send traffic through the compatible APIs; print what ClickHouse holds; check it."""
    settings = settings_of(ctx)
    if settings.project(PROJECT) is None:
        raise typer.BadParameter(f"the demo needs the {PROJECT!r} project of eventsieve.toml")
    stack, started, pipeline = LocalStack(settings), [], None
    try:
        if not endpoint_ready(settings):
            check_ports(settings)
            console.print("starting the pipeline (stack, endpoint, worker, sink)...")
            started = stack.up()
            prepare(settings, config_of(ctx))
            log_path = settings.stack.dir / "logs" / "demo-pipeline.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("w")
            pipeline = Supervisor(programs(config_of(ctx)), out=log)
            pipeline.start()
            wait_for_endpoint(settings)
            console.print(f"pipeline logs: {log_path}")
        ok = run_demo(settings, timeout)
    finally:
        if pipeline is not None:
            pipeline.stop_all()
        for service in stack.managed:
            if service.name in started:
                service.stop()
    raise typer.Exit(0 if ok else 1)


def run_demo(settings: Settings, timeout: float) -> bool:
    # Here, not at the top: the demo reads ClickHouse through the sink's code,
    # which loads numba, and every other command would pay for it at start.
    from ops.demo import differences, script, send, wait_for_counts

    traffic = script(uuid.uuid4().hex[:8])
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    console.print(
        f"sending {len(traffic.calls)} requests ({traffic.events} events, "
        f"some malformed on purpose) to {endpoint_url(settings)} ..."
    )
    results = send(endpoint_url(settings), traffic.calls)
    bad = [r for r in results if not r.ok]
    for r in bad:
        console.print(f"[red]{r.call.label}: got {r.status}, expected {r.call.status}: {r.body}")
    accepted, dropped = wait_for_counts(settings, PROJECT, traffic, since, timeout)
    console.print(table("accepted events by name", "event", traffic.accepted, accepted))
    console.print(table("dropped events by reason", "reason", traffic.dropped, dropped))
    matched = not differences(traffic.accepted, accepted) and not differences(
        traffic.dropped, dropped
    )
    rejected = sum(1 for r in results if r.call.status >= 400)
    console.print(
        f"{len(results) - len(bad)}/{len(results)} requests answered as documented "
        f"({rejected} malformed ones rejected, none of them stored)"
    )
    if matched and not bad:
        console.print("[green]demo OK: ClickHouse holds exactly what was sent, each decided once")
        return True
    console.print("[red]demo FAILED: see the differences above")
    return False


def table(title: str, column: str, expected: Counter[str], landed: Counter[str]) -> Table:
    out = Table(column, "sent", "in ClickHouse", "", title=title)
    for key in sorted(set(expected) | set(landed)):
        mark = "[green]✓" if expected[key] == landed[key] else "[red]✗"
        out.add_row(key, str(expected[key]), str(landed[key]), mark)
    return out


def register(app: typer.Typer) -> None:
    app.command()(demo)
