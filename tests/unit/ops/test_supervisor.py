"""The supervisor relays prefixed output and never leaves a child behind."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

from ops.supervisor import Program, Supervisor

PY = sys.executable


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_child_exiting_stops_the_others_and_sets_the_exit_code():
    out = io.StringIO()
    supervisor = Supervisor(
        [
            Program("quick", [PY, "-c", "print('hello'); raise SystemExit(3)"]),
            Program("long", [PY, "-c", "import time; print('up', flush=True); time.sleep(60)"]),
        ],
        out=out,
        grace_s=5,
    )
    started = time.monotonic()
    assert supervisor.run() == 3
    assert time.monotonic() - started < 20
    assert "quick | hello" in out.getvalue()
    assert "quick | exited with code 3" in out.getvalue()
    assert all(child.poll() is not None for child in supervisor.children.values())


def test_sigterm_stops_every_child_even_one_that_ignores_it():
    out = io.StringIO()
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    supervisor = Supervisor(
        [
            Program("a", [PY, "-c", "import time; time.sleep(60)"]),
            Program("b", [PY, "-c", stubborn]),
        ],
        out=out,
        grace_s=1,
    )
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    assert supervisor.run() == 0
    pids = [child.pid for child in supervisor.children.values()]
    assert pids
    assert not any(alive(pid) for pid in pids)
