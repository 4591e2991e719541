"""Run the endpoint under uvicorn (uvloop + httptools), one producer per process.

``create_from_environment`` is the app factory every uvicorn worker process
calls: it reads the configuration again (``$EVENTSIEVE_CONFIG``), so workers
need nothing pickled from the parent.
"""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from eventsieve.config import CONFIG_ENV, Settings, load_settings
from eventsieve.errors import ServiceUnavailableError
from eventsieve.kafka import ensure_eventsieve_topics
from eventsieve.logging import configure_logging, get_logger
from producers.app import create_app
from producers.endpoint import build_endpoint
from producers.protocol import HeaderDeadlineProtocol

log = get_logger(__name__)


def create_from_environment() -> ASGIApp:
    """The app of one worker process, from the configuration the parent chose."""
    configure_logging()
    return create_app(build_endpoint(load_settings()))


def serve(
    settings: Settings,
    config_path: Path | None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Create missing topics, then serve until interrupted (SIGINT/SIGTERM drain the producer)."""
    configure_logging()
    try:
        created = ensure_eventsieve_topics(settings)
        if created:
            log.info("topics_created", topics=created)
    except ServiceUnavailableError as exc:
        # Serving anyway is right: requests get 503 until Kafka is back.
        log.warning("kafka_unavailable_at_start", error=str(exc))
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(config_path.resolve())
    server = settings.server
    uvicorn.run(
        "producers.server:create_from_environment",
        factory=True,
        host=host or server.host,
        port=port or server.port,
        workers=workers or server.workers,
        loop="uvloop",
        # httptools, with a deadline for request headers (producers.protocol).
        http=HeaderDeadlineProtocol,
        lifespan="on",
        access_log=False,  # producers.dispatch writes structured access lines instead
        log_config=None,
        server_header=False,
        # X-Forwarded-For is judged by producers.edge against [server] trusted_proxies;
        # uvicorn's own proxy handling would trust loopback peers behind our back.
        proxy_headers=False,
        date_header=False,
        # Slightly above the delivery timeout: in-flight requests finish on shutdown.
        timeout_graceful_shutdown=int(server.delivery_timeout_s) + 5,
    )
