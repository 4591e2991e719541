"""``eventsieve worker`` — run a stream worker (streams/): raw events in, decisions out."""

from __future__ import annotations

from typing import Annotated

import typer

from ops.cli.context import settings_of


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        ctx: typer.Context,
        loglevel: Annotated[
            str, typer.Option("--loglevel", "-l", help="debug, info, warning or error")
        ] = "info",
    ) -> None:
        """Run a stream worker: dedup, throttling and bot filtering, events.raw → clean/dropped.

        The engine is ``[streams] engine``: ``kafka`` (default, exactly-once) or
        ``faust``. Start more workers with the same configuration to share the
        partitions.
        """
        from streams.worker import run_worker  # the engines are heavy: import only when used

        run_worker(settings_of(ctx), loglevel=loglevel)
