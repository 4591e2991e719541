"""Structured logging for every eventsieve process (structlog over stdlib logging).

Logs are key=value lines on a terminal and JSON lines otherwise
(``EVENTSIEVE_LOG_FORMAT=json|console`` overrides), so the same events read
well by eye and feed a log pipeline unchanged. On a terminal a person reads
them, so lines are short (time of day, no date) and libraries' own progress
lines (uvicorn's start-up, Faust's and aiokafka's internals) are left out
unless they warn: what remains is our events of interest, one line each.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

# clickhouse-driver logs every refused connection as a warning with a full
# traceback, then raises; our callers turn that error into one clear line
# (the CLI) or a "retrying" log event (the sink), so the traceback is noise.
_QUIETED = {"clickhouse_driver.connection": logging.ERROR}
# On a terminal: libraries whose info lines retell what our own events say.
_QUIETED_ON_CONSOLE = dict.fromkeys(
    ("uvicorn.error", "faust", "mode", "aiokafka", "librdkafka"), logging.WARNING
)


def quiet_noisy_loggers(console: bool = False) -> None:
    """Raise the level of libraries' loggers whose lines our own events already say."""
    quieted = {**_QUIETED_ON_CONSOLE, **_QUIETED} if console else _QUIETED
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)


def _colours() -> bool:
    """Colour on a terminal, or when asked by the FORCE_COLOR / NO_COLOR conventions."""
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stderr.isatty()


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog and the stdlib root logger once, at process start."""
    level_name = (level or os.environ.get("EVENTSIEVE_LOG_LEVEL", "INFO")).upper()
    fmt = (
        fmt
        or os.environ.get("EVENTSIEVE_LOG_FORMAT")
        or ("console" if sys.stderr.isatty() else "json")
    )
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=_colours())
    )
    console = fmt != "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="%H:%M:%S" if console else "iso", utc=not console),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    quiet_noisy_loggers(console)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger named after its module."""
    return structlog.stdlib.get_logger(name)
