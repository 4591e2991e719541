"""``eventsieve serve`` — the HTTP ingestion endpoint (all compatible APIs + native)."""

from __future__ import annotations

from typing import Annotated

import typer

from eventsieve.cli.context import CliState, settings_of


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default: server.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port)")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: server.workers)")
    ] = None,
) -> None:
    """Serve the ingestion endpoint; every 2xx is sent after Kafka acknowledged the events."""
    from producers.server import serve as run

    settings = settings_of(ctx)
    state = ctx.find_root().obj
    config_path = state.config_path if isinstance(state, CliState) else None
    run(settings, config_path, host=host, port=port, workers=workers)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
