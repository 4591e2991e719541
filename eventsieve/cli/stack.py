"""``eventsieve stack up|down|status|logs`` — the local Kafka + ClickHouse stack."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    stack_app = typer.Typer(help="The local Kafka + ClickHouse stack (no Docker needed).")
    app.add_typer(stack_app, name="stack")
