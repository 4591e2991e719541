"""Run several eventsieve processes in the foreground, with prefixed output.

``make run`` starts the producer endpoint, a stream worker and the sink as
child processes. Their output is interleaved line by line with a coloured
``name |`` prefix. Ctrl-C (or SIGTERM) stops all of them: SIGTERM first so each
can flush and commit, SIGKILL only after a grace period. When one child exits
on its own, the others are stopped too: a pipeline with a missing stage must
not look healthy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TextIO

_COLOURS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m")
_RESET = "\033[0m"


@dataclass(frozen=True)
class Program:
    """One child: a display name and its argv."""

    name: str
    argv: Sequence[str]


class Supervisor:
    """Start programs, relay their output, stop them all together."""

    def __init__(
        self,
        programs: Sequence[Program],
        out: TextIO = sys.stdout,
        grace_s: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.programs = list(programs)
        self.out = out
        self.grace_s = grace_s
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if out.isatty():  # children write to a pipe, but a person reads the lines
            self.env.setdefault("EVENTSIEVE_LOG_FORMAT", "console")
            self.env.setdefault("FORCE_COLOR", "1")
            # The endpoint's rate line says how many requests came; not one line each.
            self.env.setdefault("EVENTSIEVE_SERVER__ACCESS_LOG", "false")
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._width = max((len(p.name) for p in programs), default=0)
        self._colour = out.isatty()

    def emit(self, name: str, line: str) -> None:
        """Print one line of a child's output with its prefix."""
        index = next((i for i, p in enumerate(self.programs) if p.name == name), 0)
        prefix = f"{name:<{self._width}} |"
        if self._colour:
            prefix = f"{_COLOURS[index % len(_COLOURS)]}{prefix}{_RESET}"
        with self._lock:
            self.out.write(f"{prefix} {line}\n")
            self.out.flush()

    def run(self) -> int:
        """Run until Ctrl-C/SIGTERM or until a child exits; return an exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.start()
            exited = self._wait_for_exit()
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if exited is None:
            return 0
        name, code = exited
        self.emit(name, f"exited with code {code}; stopped the others")
        return code or 1

    def start(self) -> None:
        """Start every program (non-blocking); pair with :meth:`stop_all`."""
        for program in self.programs:
            self._start(program)

    def exited(self) -> tuple[str, int] | None:
        """The first child found to have exited, with its code, or None."""
        for name, child in self.children.items():
            if (code := child.poll()) is not None:
                return name, code
        return None

    def _start(self, program: Program) -> None:
        child = subprocess.Popen(
            list(program.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,  # our signal handling decides how children stop
        )
        self.children[program.name] = child
        threading.Thread(target=self._relay, args=(program.name, child), daemon=True).start()

    def _relay(self, name: str, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        with child.stdout:  # closed at the end of the child's output
            for raw in iter(child.stdout.readline, b""):
                self.emit(name, raw.decode(errors="replace").rstrip("\n"))

    def _wait_for_exit(self) -> tuple[str, int] | None:
        while not self._stop.is_set():
            if (exited := self.exited()) is not None:
                return exited
            self._stop.wait(0.2)
        return None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def stop_all(self) -> None:
        """SIGTERM every child, wait up to the grace period, then SIGKILL the rest."""
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.0, deadline - time.monotonic()))
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
