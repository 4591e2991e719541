"""What every command shares: the config path from ``--config``, loaded lazily, and
how data from clients is shown on a terminal."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.text import Text

from eventsieve.config import Settings, load_settings


@dataclass
class CliState:
    config_path: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    """The validated settings of this invocation (raises ConfigError if invalid)."""
    state = ctx.find_root().obj
    if not isinstance(state, CliState):  # a command invoked without the root callback
        state = CliState()
    return state.settings


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object) -> Text:
    """Text that came from clients (event names, projects, error messages) as it is.

    A ``Text`` is never read as rich markup, so a name like ``[/]`` prints as
    itself instead of failing the command; control characters (escape
    sequences included) are shown escaped (``\\x1b``) and never reach the
    operator's terminal.
    """
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)))
