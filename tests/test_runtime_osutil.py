"""`yield_cpu`: a departed paglet's process lowers the priority of every thread it has."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's"
)

# In a fresh process (lowering a priority cannot be undone without privilege):
# start a second thread, lower, and report each thread's nice value and policy.
_SCRIPT = """
import json, os, sys, threading
from pathlib import Path
from paglets.runtime.osutil import yield_cpu

started, stop = threading.Event(), threading.Event()
def wait():
    started.set()
    stop.wait()
worker = threading.Thread(target=wait)
worker.start()
started.wait()
yield_cpu(idle=sys.argv[1] == "idle")
seen = {}
for task in Path("/proc/self/task").iterdir():
    tid = int(task.name)
    seen[tid] = [os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)]
stop.set()
worker.join()
print(json.dumps(seen))
"""


def _threads_after(mode: str) -> list[list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return list(json.loads(out).values())


def test_every_thread_is_niced() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    threads = _threads_after("nice")
    assert len(threads) == 2
    assert all(nice == min(base + 10, 19) for nice, _ in threads), threads
    assert all(policy == os.SCHED_OTHER for _, policy in threads), threads


def test_every_thread_goes_idle() -> None:
    threads = _threads_after("idle")
    assert len(threads) == 2
    assert all(policy == os.SCHED_IDLE for _, policy in threads), threads
