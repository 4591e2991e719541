"""The ``eventsieve`` command line: one Typer app, one module per command group.

Each command module defines a ``register(app)`` function; this module only
assembles them and turns EventsieveError into one clear line and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from eventsieve.errors import EventsieveError
from eventsieve.logging import quiet_noisy_loggers
from ops.cli import demo, dlq, replay, run, serve, sink, stack, topics, worker
from ops.cli.context import CliState

app = typer.Typer(
    name="eventsieve",
    help="Tracking events in, clean deduplicated events in ClickHouse out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file (default: $EVENTSIEVE_CONFIG or ./eventsieve.toml)"
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(config_path=config)


stack.register(app)
worker.register(app)
sink.register(app)
serve.register(app)
run.register(app)
demo.register(app)
topics.register(app)
dlq.register(app)
replay.register(app)


def main() -> None:
    """Console-script entry point."""
    quiet_noisy_loggers()
    try:
        app()
    except EventsieveError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
