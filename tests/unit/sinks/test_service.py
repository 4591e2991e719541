"""sinks.service: the process settings of a sink."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocates four blocks of 3 MB and frees them, ten times (as a batch's
# chunks do), writing every page; prints the page faults of the last nine
# rounds (the first one faults its pages in).
ROUNDS = """
import resource, sys
import numpy as np
from sinks.service import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
def one_round():
    blocks = [np.ones(3 << 20, dtype=np.uint8) for _ in range(4)]
    del blocks
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    one_round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_batch_memory_is_reused_without_page_faults() -> None:
    pages = 4 * (3 << 20) // 4096  # a round's
    assert faults("default") >= 9 * pages // 2  # every round faults its pages in again
    assert faults("tuned") < pages // 4
