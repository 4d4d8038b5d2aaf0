"""Small POSIX helpers for child processes (and one for the host's, `keep_freed_memory`)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
# Resolved once, at import (in the zygote): the symbols of the running
# program include libc's, so no library search (which may run ldconfig) is needed.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits.

    If ``expected_parent`` is given and the parent is already another process
    (it died before the request), exit at once. A no-op outside Linux; there
    the child notices the closed host channel instead.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)


def set_dumpable(*, dumpable: bool) -> bool:
    """Set this process's ``dumpable`` flag (Linux's ``PR_SET_DUMPABLE``).

    A non-dumpable process's ``/proc/<pid>/environ``, ``mem``, ``maps`` and
    ``fd`` belong to root, and processes of the same user cannot ptrace it or
    read them; it leaves no core dump. ``execve`` makes a process dumpable again.

    Returns:
        Whether the flag is now as asked: ``False`` outside Linux or if the
        kernel refused.
    """
    if _LIBC is None:
        return False
    return bool(
        _LIBC.prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) == 0 and is_dumpable() is dumpable
    )


def is_dumpable() -> bool | None:
    """This process's ``dumpable`` flag; ``None`` where the platform has none."""
    if _LIBC is None:
        return None
    return bool(_LIBC.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 1)


def yield_cpu(*, idle: bool = False) -> None:
    """Let other processes have the CPU before this one, in every thread of it.

    ``nice`` +10, or with ``idle`` the ``SCHED_IDLE`` policy (run only when
    nothing else wants the CPU). On Linux both are per thread, so each thread
    listed in ``/proc/self/task`` is changed. Lowering a priority needs no
    privilege; where it is not possible this does nothing.
    """
    try:
        threads = [int(task.name) for task in Path("/proc/self/task").iterdir()]
    except OSError:
        threads = [0]  # not Linux: the call applies to the whole process there
    for tid in threads:
        try:
            if idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            else:
                os.setpriority(
                    os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + 10, 19)
                )
        except (AttributeError, OSError):
            continue  # a thread that just ended, or a platform without it


# glibc's mallopt(3) parameters, and the values `keep_freed_memory` sets.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 2 << 20
TRIM_THRESHOLD = 16 << 20


def keep_freed_memory() -> bool:
    """Have glibc's allocator reuse freed memory for buffers of up to 2 MiB.

    By default glibc maps each allocation of 128 KiB or more (a 256 KiB
    chunk read from a socket, a 1 MiB batch of a file) with ``mmap`` and
    unmaps it when freed, and gives a freed top of its heap over 128 KiB
    back to the system at once, so a process that keeps passing such buffers
    along touches fresh pages each time: a page fault for every 4 KiB. On a
    virtual machine that cost 0.6-0.7 ms per MiB per copy, against 0.05 ms
    with memory reused. Here allocations under `MMAP_THRESHOLD` come from the
    heap, and up to `TRIM_THRESHOLD` of freed heap stays with the process for
    the next ones (at most that much more resident memory, once it was used).

    Returns:
        Whether the allocator took the settings: ``False`` where it is not
        glibc's (musl, macOS), where this changes nothing.
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
