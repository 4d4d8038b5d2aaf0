"""``ResourceSampler``: this host's `HostResources`, sampled at most every few seconds.

The mesh service asks for a sample at every gossip beat; the sampler reads the
system again only when its last sample is older than ``every`` seconds, so a
beat costs a dictionary copy. On Linux it reads ``/proc/meminfo``,
``os.getloadavg`` and ``os.statvfs`` directly (psutil costs a host ~40 ms to
import); elsewhere it asks psutil.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Final

from paglets.wire.resources import HostResources

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SAMPLE_EVERY: Final = 2.0
"""Seconds a sample is reused before the system is read again."""
_MEMINFO: Final = "/proc/meminfo"


def _meminfo() -> dict[str, int] | None:
    """``/proc/meminfo`` in bytes, or ``None`` where it cannot be read."""
    try:
        with open(_MEMINFO, encoding="ascii") as file:  # noqa: PTH123 - a hot, tiny read
            text = file.read()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _memory() -> tuple[int, int, int, int]:
    """``(total, available, swap_total, swap_used)`` in bytes."""
    info = _meminfo() if sys.platform.startswith("linux") else None
    if info is not None and "MemTotal" in info and "MemAvailable" in info:
        swap_total = info.get("SwapTotal", 0)
        return (
            info["MemTotal"],
            info["MemAvailable"],
            swap_total,
            max(0, swap_total - info.get("SwapFree", swap_total)),
        )
    import psutil  # noqa: PLC0415 - only where /proc/meminfo is not

    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    return int(memory.total), int(memory.available), int(swap.total), int(swap.used)


def _cpus() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _disk(path: Path) -> tuple[int, int]:
    """``(total, free for a user)`` of the file system holding ``path`` (or its parent)."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            stat = os.statvfs(candidate)
            return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    return 0, 0


def sample(work_dir: Path, active: int, inactive: int) -> HostResources:
    """Read this machine's resources now (a few system calls, no subprocess)."""
    try:
        load_1, load_5, load_15 = os.getloadavg()
    except OSError:  # not every system keeps load averages
        load_1 = load_5 = load_15 = 0.0
    memory_total, memory_available, swap_total, swap_used = _memory()
    disk_total, disk_free = _disk(work_dir)
    return HostResources(
        cpu_count=_cpus(),
        load_1=round(load_1, 2),
        load_5=round(load_5, 2),
        load_15=round(load_15, 2),
        memory_total=memory_total,
        memory_available=memory_available,
        swap_total=swap_total,
        swap_used=swap_used,
        disk_total=disk_total,
        disk_free=disk_free,
        paglets_active=active,
        paglets_inactive=inactive,
    )


class ResourceSampler:
    """This host's resources, read again when the last sample is ``every`` s old.

    Args:
        work_dir: the host's work directory, whose file system's free space counts.
        counts: ``(active, inactive)`` paglets on the host now.
        every: seconds a sample is reused.
    """

    def __init__(
        self,
        work_dir: Path,
        counts: Callable[[], tuple[int, int]],
        every: float = SAMPLE_EVERY,
    ) -> None:
        self.work_dir = work_dir
        self.counts = counts
        self.every = every
        self._last: HostResources | None = None
        self._at = 0.0

    def __repr__(self) -> str:
        return f"<ResourceSampler {self.work_dir} every {self.every:g} s>"

    def __call__(self) -> HostResources:
        """The latest sample, with the paglet counts of now."""
        active, inactive = self.counts()
        now = time.monotonic()
        if self._last is None or now - self._at >= self.every:
            self._last = sample(self.work_dir, active, inactive)
            self._at = now
        elif (self._last.paglets_active, self._last.paglets_inactive) != (active, inactive):
            self._last = _with_counts(self._last, active, inactive)
        return self._last


def _with_counts(resources: HostResources, active: int, inactive: int) -> HostResources:
    data = resources.to_dict()
    data.update(paglets_active=active, paglets_inactive=inactive)
    return HostResources(**data)
