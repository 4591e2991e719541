"""``eventsieve run`` — the main job: stack, schema, endpoint, worker and sink in one terminal.

Starts the local stack (or uses the configured external services), creates
the topics, migrates ClickHouse, then runs the producer endpoint, one stream
worker and the sink in the foreground with prefixed logs. Ctrl-C stops the
three processes and the stack services this run started.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from eventsieve.cli.context import CliState, settings_of
from eventsieve.config import Settings
from eventsieve.pipeline import endpoint_url, prepare, programs
from eventsieve.stack import LocalStack
from eventsieve.supervisor import Supervisor

console = Console(highlight=False)


def config_of(ctx: typer.Context) -> Path | None:
    state = ctx.find_root().obj
    return state.config_path if isinstance(state, CliState) else None


def banner(settings: Settings) -> str:
    """What a newcomer needs once the system is up: where to send, how to look."""
    base = endpoint_url(settings)
    project = settings.projects[0] if settings.projects else None
    token = project.tokens[0] if project and project.tokens else "<project token>"
    domain = project.domains[0] if project and project.domains else "example.com"
    project_id = project.id if project else "<project>"
    return f"""
eventsieve is starting. Endpoint: {base}   (health: {base}/healthz, metrics: {base}/metrics)

Send events (the demo project's public token is {token!r}):
  Plausible-style:  curl -X POST {base}/api/event -H 'Content-Type: application/json' \\
                      -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0' \\
                      -d '{{"n":"pageview","u":"https://{domain}/pricing","d":"{domain}"}}'
  Vemetric:         curl -X POST {base}/e -H 'Content-Type: application/json' \\
                      -d '{{"token":"{token}","name":"signup","userIdentifier":"user-1"}}'
  More routes (native, Vero, vtcdn, VibeFollow) and their auth: docs/apis/.

See the results:
  .venv/bin/eventsieve stats --project {project_id}
  .venv/bin/eventsieve tail events.dropped --from-beginning --max 10

Ctrl-C stops everything this command started.
"""


def run(ctx: typer.Context) -> None:
    """Run the whole pipeline in the foreground: endpoint, stream worker and sink."""
    settings = settings_of(ctx)
    stack = LocalStack(settings)
    if stack.managed:
        console.print("starting the local stack (the first run fetches Kafka's jars)...")
    started = stack.up()
    try:
        prepare(settings, config_of(ctx))
        console.print(banner(settings))
        code = Supervisor(programs(config_of(ctx))).run()
    finally:
        for service in stack.managed:
            if service.name in started:
                service.stop()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
