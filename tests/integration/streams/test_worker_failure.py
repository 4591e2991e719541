"""A worker whose decision loop fails exits non-zero, so a supervisor restarts it.

Faust restarts a crashed agent in place by default: the process stays up and
healthy-looking while the agent fails on every record (seen: an order agent
failing 59 times over, 387 confirmations never decided). Here the order path
fails with an unexpected error; the worker must not live on without it.
"""

from __future__ import annotations

import time
from pathlib import Path

from eventsieve.config import Settings
from schemas.canonical import topic_key
from schemas.codecs import encode_raw
from schemas.events import new_raw_event
from streams.partitioning import partition_for

# Loaded into the worker through PYTHONPATH: every order record fails.
FAULT = """
from streams.processor import Processor


def _failing_on_order(self, record, state):
    raise RuntimeError("order path failed")


Processor.on_order = _failing_on_order
"""


def test_a_failing_agent_takes_the_worker_down(
    test_settings: Settings, worker_factory, kit, tmp_path: Path
) -> None:
    partitions = test_settings.topics.partitions
    records = []
    for i in range(3):
        user = f"failing-{i}"
        event = new_raw_event(
            project="demo",
            name="confirmation",
            user_id=user,
            properties={"orderId": f"order-{i}"},
        )
        key = topic_key("demo", user).encode()
        records.append(kit.Raw(partition_for(key, partitions), key, encode_raw(event)))
    worker = worker_factory(test_settings, "failing", kit.injected(tmp_path / "inject", FAULT))
    kit.publish(test_settings, records)
    deadline = time.monotonic() + 120
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not worker.alive(), f"the worker lives on without its order path:\n{worker.log()}"
    assert worker.process.returncode == 1
    assert "order path failed" in worker.log()
