"""The supervisor's watchdog: hung, idle and oversized children.

Every heartbeat interval it kills the children that missed their heartbeats
(a child beats while it has work: the host judges only those it waits on),
has the keeper deactivate paglets idle past their ``deactivation_policy``,
and measures the children's memory: for admission (`paglets.runtime.admission`)
and to kill a child over the per-child limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Final

from paglets.core.status import ExitReason, PagletStatus

if TYPE_CHECKING:
    from paglets.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)


async def watch(supervisor: Supervisor) -> None:
    """Forever: kill hung children and children over their memory limit."""
    limits = supervisor.limits
    measure = limits.memory_limit is not None or limits.max_child_memory is not None
    while True:
        await asyncio.sleep(limits.heartbeat_interval)
        sweep_heartbeats(supervisor)
        sweep_idle(supervisor)
        if measure:
            await sweep_memory(supervisor, limits.memory_limit)


def sweep_idle(supervisor: Supervisor) -> None:
    """Deactivate paglets idle for longer than their ``deactivation_policy``."""
    keeper = supervisor.keeper
    if keeper is None:
        return
    now = time.monotonic()
    for record in supervisor.list():
        idle = record.idle_timeout
        if (
            idle is not None
            and record.status is PagletStatus.ACTIVE
            and record.pending == 0
            and now - record.last_used > idle
        ):
            record.last_used = now  # once per idle period, even if it fails
            keeper.deactivate_idle(record.agent_id)


def sweep_heartbeats(supervisor: Supervisor) -> None:
    """Kill the children whose heartbeats stopped for longer than ``hang_timeout``."""
    now = time.monotonic()
    for record in supervisor.list():
        handle = record.handle
        if record.status is not PagletStatus.ACTIVE or handle is None or not handle.pending:
            continue  # an idle child sends no heartbeats: it is judged when it has work
        if now - handle.last_beat > supervisor.limits.hang_timeout:
            log.warning("paglet %s missed heartbeats; killing it", record.agent_id)
            handle.kill(ExitReason.HUNG)


async def sweep_memory(supervisor: Supervisor, limit: int | None) -> None:
    """Measure the children's memory (for admission); kill those over ``limit``."""
    handles = {
        r.handle.pid: r.handle
        for r in supervisor.list()
        if r.status is PagletStatus.ACTIVE and r.handle is not None
    }
    sizes = await asyncio.to_thread(_rss_of, list(handles)) if handles else {}
    supervisor.admission.record(list(sizes.values()))
    for pid, rss in sizes.items():
        if limit is not None and rss > limit:
            log.warning("paglet %s uses %d bytes (limit %d)", handles[pid].agent_id, rss, limit)
            handles[pid].kill(ExitReason.MEMORY_LIMIT)


def _rss_of(pids: list[int]) -> dict[int, int]:
    """Each live child's resident memory, in bytes (a child gone meanwhile is left out)."""
    if not _STATM:
        import psutil  # noqa: PLC0415 - not on Linux, where a host starts without it

        sizes: dict[int, int] = {}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                sizes[pid] = psutil.Process(pid).memory_info().rss
        return sizes
    return {pid: rss for pid in pids if (rss := _statm_rss(pid)) is not None}


# On Linux one read of /proc/<pid>/statm gives the resident pages: a tenth of what
# a psutil.Process costs, which counts with hundreds of children every sweep.
_STATM: Final = os.path.exists("/proc/self/statm")  # noqa: PTH110 - once, at import
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if _STATM else 0


def _statm_rss(pid: int) -> int | None:
    try:
        fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    except OSError:
        return None
    try:
        fields = os.read(fd, 128).split()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(fields[1]) * _PAGE if len(fields) > 1 else None
