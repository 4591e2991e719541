"""What every command shares: the config path from ``--config``, loaded lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

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
