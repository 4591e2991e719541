"""ManagedProcess: finds and stops only the process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ops.stack.process import ManagedProcess


def sleeper(tmp_path, marker: str) -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path / "run" / "p.pid", tmp_path / "p.log", marker)


def test_start_find_stop(tmp_path):
    proc = sleeper(tmp_path, "eventsieve-test-marker-1")
    pid = proc.start(
        [sys.executable, "-c", "import time; time.sleep(60)", "eventsieve-test-marker-1"]
    )
    assert proc.pid() == pid
    assert proc.stop(timeout=5) is True
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False  # nothing left to stop


def test_a_foreign_process_behind_a_stale_pid_file_is_not_ours(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = sleeper(tmp_path, "eventsieve-test-marker-2")
        proc.pid_file.parent.mkdir(parents=True)
        proc.pid_file.write_text(str(other.pid))
        assert proc.pid() is None  # cmdline lacks our marker
        assert proc.stop() is False
        assert other.poll() is None  # untouched
    finally:
        other.kill()
        other.wait()


def test_log_tail_reads_the_output(tmp_path):
    proc = sleeper(tmp_path, "eventsieve-test-marker-3")
    proc.start([sys.executable, "-c", "print('hello from the server')", "eventsieve-test-marker-3"])
    deadline = time.monotonic() + 30
    while not proc.exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "hello from the server" in proc.log_tail()


def test_a_server_that_fails_says_how_it_ended(tmp_path):
    """A failed start names the exit code or the signal: a silent death is still explained."""
    proc = sleeper(tmp_path, "eventsieve-test-marker-4")
    proc.start([sys.executable, "-c", "raise SystemExit(70)", "eventsieve-test-marker-4"])
    deadline = time.monotonic() + 30
    while not proc.exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.exit_status() == "exit code 70"

    pid = proc.start(
        [sys.executable, "-c", "import time; time.sleep(60)", "eventsieve-test-marker-4"]
    )
    assert proc.pid() == pid  # at once, before the child's exec shows the marker
    assert not proc.exited()
    assert proc.exit_status() == ""
    os.kill(pid, signal.SIGKILL)
    while not proc.exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.exit_status() == "killed by SIGKILL"
