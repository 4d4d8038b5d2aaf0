"""The machine's floor for ``foundation.py``: one round trip between two processes.

Two processes bounce 64 bytes over a socketpair, blocking reads, ``N`` times;
prints the median-free mean round trip in microseconds as JSON, for the two
placements: each process on its own CPU, and both on one CPU. On a virtual
machine a process woken on an idle CPU costs far more than one woken on the
CPU it shares with its waker, and every hop of a message between processes
pays that once: it bounds what any multi-process design can reach here.

    python bench/_pingpong.py [N]
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5000


def round_trip(cpus: tuple[int, int]) -> float:
    """Mean round trip in seconds with the two ends pinned to ``cpus``."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {cpus[1]})
        for _ in range(ROUNDS + 1):
            theirs.sendall(theirs.recv(64))
        os._exit(0)
    os.sched_setaffinity(0, {cpus[0]})
    ours.sendall(b"x" * 64)
    ours.recv(64)  # both ends running before the clock starts
    started = time.perf_counter()
    for _ in range(ROUNDS):
        ours.sendall(b"x" * 64)
        ours.recv(64)
    elapsed = time.perf_counter() - started
    os.waitpid(pid, 0)
    ours.close()
    theirs.close()
    return elapsed / ROUNDS


def main() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    result = {"one_cpu": round_trip((cpus[0], cpus[0]))}
    if len(cpus) > 1:
        result["two_cpus"] = round_trip((cpus[0], cpus[1]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
