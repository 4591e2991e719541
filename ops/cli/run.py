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

from eventsieve.config import Settings
from ops.cli.context import CliState, settings_of
from ops.pipeline import check_ports, endpoint_url, prepare, programs
from ops.stack import LocalStack
from ops.supervisor import Supervisor

console = Console(highlight=False)


def config_of(ctx: typer.Context) -> Path | None:
    state = ctx.find_root().obj
    return state.config_path if isinstance(state, CliState) else None


def curl_examples(settings: Settings) -> list[tuple[str, str]]:
    """One working request per API, for the demo project of the example config."""
    base = endpoint_url(settings)
    project = settings.project("demo") or (settings.projects[0] if settings.projects else None)
    domain = project.domains[0] if project and project.domains else "example.com"
    token = project.tokens[0] if project and project.tokens else "<public token>"
    json = "-H 'Content-Type: application/json'"
    browser = "-H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Firefox/130.0'"
    return [
        ("Plausible-style", f"curl -X POST {base}/api/event {json} {browser} "
         f"""-d '{{"n":"pageview","u":"https://{domain}/pricing","d":"{domain}"}}'"""),
        ("Vemetric", f"curl -X POST {base}/e {json} -H 'Token: {token}' {browser} "
         """-d '{"name":"signup","userIdentifier":"user-1"}'"""),
        ("Vero", f"curl -X POST '{base}/api/v2/events/track?auth_token=demo-vero-token' {json} "
         """-d '{"identity":{"id":"user-2"},"event_name":"Viewed Product","data":{"sku":"A1"}}'"""),
        ("vtcdn", f"curl -X POST {base}/v1/event/ {json} -H 'Authorization: demo-vtcdn-key' "
         """-d '{"user":{"_id":"user-3"},"event":{"confirmation":{"orderId":"o-1"}}}'"""),
        ("VibeFollow", f"curl -X POST {base}/api/v1/events {json} "
         "-H 'Authorization: Bearer demo-secret-key' "
         """-d '{"external_user_id":"user-4","name":"Plan Upgraded"}'"""),
        ("native", f"curl -X POST {base}/v1/events {json} "
         "-H 'Authorization: Bearer demo-secret-key' "
         """-d '{"events":[{"name":"Report Exported","user_id":"user-5"}]}'"""),
    ]  # fmt: skip


def banner(settings: Settings) -> str:
    """What a newcomer needs once the system is up: where to send, how to look."""
    base = endpoint_url(settings)
    lines = [
        f"eventsieve endpoint: {base}   (health: {base}/healthz, metrics: {base}/metrics)",
        "",
        "Send an event through each API (the demo project's credentials, eventsieve.toml):",
    ]
    for api, command in curl_examples(settings):
        lines += [f"  # {api}", f"  {command}"]
    lines += [
        "",
        "See what landed (exact counts, straight from ClickHouse):",
        "  .venv/bin/eventsieve stats --project demo --since 1h",
        "  .venv/bin/eventsieve tail events.dropped --max 10   # drops and their reasons",
        "  .venv/bin/eventsieve demo                           # a scripted traffic mix, checked",
        "",
        "Ctrl-C stops everything this command started.",
    ]
    return "\n".join(lines)


def run(ctx: typer.Context) -> None:
    """Run the whole pipeline in the foreground: endpoint, stream worker and sink."""
    settings = settings_of(ctx)
    check_ports(settings)
    stack = LocalStack(settings)
    if stack.managed:
        console.print("starting the local stack (the first run fetches Kafka's jars)...")
    started = stack.up()
    try:
        prepare(settings, config_of(ctx))
        console.print(banner(settings), markup=False, highlight=False, soft_wrap=True)
        code = Supervisor(programs(config_of(ctx))).run()
    finally:
        for service in stack.managed:
            if service.name in started:
                service.stop()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
