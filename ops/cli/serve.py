"""``eventsieve serve`` — the HTTP ingestion endpoint (all compatible APIs + native)."""

from __future__ import annotations

from typing import Annotated

import typer

from eventsieve.config import PrivacySettings, Settings
from eventsieve.errors import EventsieveError
from ops.cli.context import CliState, settings_of

# The value eventsieve ships with: anyone can read it, so visitor ids derived
# from it reverse to IP addresses by brute force.
SHIPPED_SECRET = PrivacySettings().salt_secret.get_secret_value()
# 128 bits of hex; shorter secrets are guessable.
MIN_SECRET_CHARS = 32


def secret_problem(settings: Settings) -> str | None:
    """Why the visitor-id secret is unfit for real traffic, or None.

    Only with external services: the local stack (``make run``) is a
    development setup, and its default keeps the first start one command.
    """
    if settings.kafka.bootstrap_servers is None:
        return None
    secret = settings.privacy.salt_secret.get_secret_value()
    if secret == SHIPPED_SECRET:
        what = "is the shipped default"
    elif len(secret.strip()) < MIN_SECRET_CHARS:
        what = f"is shorter than {MIN_SECRET_CHARS} characters"
    else:
        return None
    return (
        f"privacy.salt_secret {what}, so visitor ids would reverse to IP addresses; "
        "set EVENTSIEVE_PRIVACY__SALT_SECRET to a random value, e.g. $(openssl rand -hex 32)"
    )


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
    problem = secret_problem(settings)
    if problem is not None:
        raise EventsieveError(problem)
    state = ctx.find_root().obj
    config_path = state.config_path if isinstance(state, CliState) else None
    run(settings, config_path, host=host, port=port, workers=workers)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
