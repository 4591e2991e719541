"""Start, find and stop a background server process that this stack owns.

A process is ours when its pid file names a live process whose command line
contains our ``marker`` (the absolute path of the config file we generated for
it). That is what lets ``stack down`` stop exactly what ``stack up`` started,
and nothing else, even after a reboot recycled the pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The servers this process started, by pid: their exit status is read from here,
# not guessed from /proc (which a reaped or not-yet-exec'd child misreports).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ManagedProcess:
    """A server process identified by a pid file and a command-line marker."""

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if (child := _children.get(pid)) is not None and child.poll() is None:
            return pid  # ours for sure, even before its exec shows the marker
        if _is_alive(pid) and self.marker in _cmdline(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        """Start ``argv`` detached (own session, output to the log file); return its pid."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C in the caller's terminal does not reach it
                close_fds=True,
            )
        _children[proc.pid] = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def exited(self) -> bool:
        """True when the process we started is no longer running."""
        if (child := self._child()) is not None:
            return child.poll() is not None
        return self.pid() is None

    def exit_status(self) -> str:
        """How the process this one started ended ("exit code 70", "killed by SIGKILL"), or ""."""
        child = self._child()
        if child is None or (code := child.poll()) is None:
            return ""
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def _child(self) -> subprocess.Popen[bytes] | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return _children.get(pid)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True if something was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_alive(pid):
            _signal(pid, signal.SIGKILL)
            while _is_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        _children.pop(pid, None)
        return True

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the process's log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _is_alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie child of ours is reaped here)."""
    if (child := _children.get(pid)) is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""
