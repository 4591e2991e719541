"""Which worker instance this process is: a slot under ``data_dir``, held by a file lock.

The kafka engine's ``transactional.id`` must be stable per worker instance
(a restarted worker then aborts the transaction its predecessor left open at
once, instead of readers waiting for the transaction timeout) and distinct
between workers running at the same time (two producers with one id fence
each other). The first free slot ``0, 1, 2, ...`` under ``data_dir`` gives
both: a worker restarted in the same place takes its old slot again, a
second worker beside it the next one; its local stores live in the slot's
directory, so two workers never open the same RocksDB database.
"""

from __future__ import annotations

import fcntl
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Far more workers than one host can run: a bound, so a broken lock never loops.
MAX_SLOTS = 1_024


@dataclass
class Instance:
    slot: int
    directory: Path
    transactional_id: str
    lock: IO[str]

    def release(self) -> None:
        self.lock.close()


def claim_instance(data_dir: Path, app_id: str) -> Instance:
    """Lock the first free slot under ``data_dir/kafka-engine``; held until the process ends."""
    root = data_dir / "kafka-engine"
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        lock = (root / f"instance-{slot}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return Instance(
            slot,
            root / f"instance-{slot}",
            f"{app_id}-{socket.gethostname()}-{slot}",
            lock,
        )
    raise RuntimeError(f"more than {MAX_SLOTS} workers share {root}")
