"""``server-info.v1``: a host's disks, load, CPU, memory and processes.

The bundled ``launch.toml`` declares it on every host (lazy: its paglet starts
on the first call). ``paglets-sysinfo`` calls it on every host of the mesh at
once; scripts and paglets call it as any service::

    from paglets.builtins.serverinfo import SERVER_INFO, LoadRequest

    reply = client.service(SERVER_INFO, where="beta").load(LoadRequest())
    print(reply.load_1, reply.memory.available)

Operations: ``df`` (mounted file systems), ``load`` (CPU count and usage,
load averages, memory and swap), ``ps`` (processes by name or user, at most
``limit``), ``summary`` (load and disks at once). Processes are shown by pid,
name, user, status, resident memory and CPU time, never by command line (which
may hold another user's secrets). Sizes are bytes.

Importing this module loads neither psutil nor the host: the service's own
process imports psutil on its first call, and a command line only needs the
contract.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from paglets.core.contract import Contract
from paglets.core.errors import RequestError
from paglets.core.state import PagletState
from paglets.runtime.service import Service

if TYPE_CHECKING:
    from collections.abc import Iterator

MAX_DISKS: Final = 256
"""The most file systems ``df`` lists."""
MAX_PROCESSES: Final = 500
"""The largest ``limit`` of ``ps``."""
DEFAULT_PROCESSES: Final = 20
_MAX_PATTERN: Final = 64
_CPU_WINDOW: Final = 0.1  # seconds the first CPU usage is measured over
_CPU_REUSE: Final = 0.5  # a usage measured this recently is given again


@dataclass
class Disk(PagletState):
    """One mounted file system: sizes in bytes, ``percent`` used."""

    mount: str
    device: str
    fstype: str
    total: int
    used: int
    free: int
    percent: float


@dataclass
class Memory(PagletState):
    """Physical memory in bytes: ``available`` to new processes without swapping."""

    total: int
    available: int
    used: int
    percent: float


@dataclass
class Swap(PagletState):
    """Swap space in bytes."""

    total: int
    used: int
    free: int
    percent: float


@dataclass
class Proc(PagletState):
    """One process: ``rss`` bytes of resident memory, ``cpu_seconds`` of user and system time."""

    pid: int
    name: str
    user: str
    status: str
    rss: int
    cpu_seconds: float


@dataclass
class DfRequest(PagletState):
    """``df``: ``all`` lists pseudo and duplicate file systems too."""

    all: bool = False


@dataclass
class DfReply(PagletState):
    """The host's mounted file systems."""

    host: str
    disks: list[Disk] = field(default_factory=list)


@dataclass
class LoadRequest(PagletState):
    """``load``: no arguments."""


@dataclass
class LoadReply(PagletState):
    """CPUs, CPU usage (percent of all CPUs), load averages, memory, swap, uptime (s)."""

    host: str
    cpu_count: int
    cpu_percent: float
    load_1: float
    load_5: float
    load_15: float
    memory: Memory
    swap: Swap
    uptime: float


@dataclass
class PsRequest(PagletState):
    """``ps``: processes whose name holds ``name`` (any case) and run as ``user``.

    An empty ``name`` or ``user`` matches every process; at most ``limit``
    (1 to 500) are returned, the largest resident memory first.
    """

    name: str = ""
    user: str = ""
    limit: int = DEFAULT_PROCESSES


@dataclass
class PsReply(PagletState):
    """``matched`` processes matched; ``processes`` holds the first ``limit`` of them."""

    host: str
    matched: int
    processes: list[Proc] = field(default_factory=list)


@dataclass
class SummaryRequest(PagletState):
    """``summary``: no arguments."""


@dataclass
class SummaryReply(PagletState):
    """``load`` and ``df`` at once, and how many processes run."""

    load: LoadReply
    disks: list[Disk]
    processes: int


SERVER_INFO: Final = Contract(
    "server-info.v1",
    {
        "df": (DfRequest, DfReply),
        "load": (LoadRequest, LoadReply),
        "ps": (PsRequest, PsReply),
        "summary": (SummaryRequest, SummaryReply),
    },
)
"""The contract of the server-info service."""


@dataclass
class ServerInfoState(PagletState):
    """The service keeps nothing between calls but how many it answered."""

    calls: int = 0


class ServerInfo(Service[ServerInfoState]):
    """The ``server-info.v1`` service: reads this host with psutil at each call."""

    State = ServerInfoState
    contract = SERVER_INFO

    def df(self, request: DfRequest) -> DfReply:
        """The mounted file systems."""
        self.state.calls += 1
        return DfReply(self.context.host_name, _disks(all_=request.all))

    def load(self, request: LoadRequest) -> LoadReply:
        """CPU, load, memory and swap."""
        del request
        self.state.calls += 1
        return _load(self.context.host_name)

    def ps(self, request: PsRequest) -> PsReply:
        """Processes by name and user, at most ``limit``.

        Raises:
            RequestError: a limit out of 1..500, or a name or user over 64 characters.
        """
        if not 1 <= request.limit <= MAX_PROCESSES:
            raise RequestError(
                f"server-info.v1 ps: limit must be 1 to {MAX_PROCESSES}, not {request.limit}"
            )
        for what, text in (("name", request.name), ("user", request.user)):
            if len(text) > _MAX_PATTERN:
                raise RequestError(
                    f"server-info.v1 ps: {what} is {len(text)} characters; "
                    f"the limit is {_MAX_PATTERN}"
                )
        self.state.calls += 1
        found = sorted(_processes(request.name, request.user), key=lambda p: (-p.rss, p.pid))
        return PsReply(self.context.host_name, len(found), found[: request.limit])

    def summary(self, request: SummaryRequest) -> SummaryReply:
        """Load and disks, and the number of processes."""
        del request
        self.state.calls += 1
        import psutil  # noqa: PLC0415 - see the module docstring

        return SummaryReply(_load(self.context.host_name), _disks(), len(psutil.pids()))


# -- reading the system (psutil, in the service's own process) --------------------------


def _disks(*, all_: bool = False) -> list[Disk]:
    import psutil  # noqa: PLC0415

    disks: list[Disk] = []
    seen: set[str] = set()
    for part in psutil.disk_partitions(all=all_):
        if len(disks) >= MAX_DISKS:
            break
        if not all_ and part.device in seen:
            continue  # a bind mount of a file system listed already
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue  # gone, or not readable by this user
        seen.add(part.device)
        disks.append(
            Disk(
                part.mountpoint,
                part.device,
                part.fstype,
                usage.total,
                usage.used,
                usage.free,
                usage.percent,
            )
        )
    return disks


class _CpuMeter:
    """CPU usage since the previous reading: over 0.1 s the first time, reused 0.5 s."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.value = 0.0

    def percent(self) -> float:
        import psutil  # noqa: PLC0415

        now = time.monotonic()
        if self.at is None:
            self.value = psutil.cpu_percent(interval=_CPU_WINDOW)
        elif now - self.at >= _CPU_REUSE:
            self.value = psutil.cpu_percent(interval=None)
        self.at = time.monotonic()
        return float(self.value)


_CPU: Final = _CpuMeter()


def _load(host: str) -> LoadReply:
    import psutil  # noqa: PLC0415

    load_1, load_5, load_15 = psutil.getloadavg()
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    return LoadReply(
        host=host,
        cpu_count=psutil.cpu_count() or 1,
        cpu_percent=_CPU.percent(),
        load_1=round(load_1, 2),
        load_5=round(load_5, 2),
        load_15=round(load_15, 2),
        memory=Memory(memory.total, memory.available, memory.used, memory.percent),
        swap=Swap(swap.total, swap.used, swap.free, swap.percent),
        uptime=round(max(0.0, time.time() - psutil.boot_time()), 1),
    )


def _processes(name: str, user: str) -> Iterator[Proc]:
    import psutil  # noqa: PLC0415

    wanted = name.lower()
    attrs = ["pid", "name", "username", "status", "memory_info", "cpu_times"]
    for proc in psutil.process_iter(attrs):
        info: dict[str, Any] = proc.info
        pname = info.get("name") or ""
        owner = info.get("username") or ""
        if wanted not in pname.lower() or (user and owner != user):
            continue
        rss, cpu = 0, 0.0
        with contextlib.suppress(AttributeError, TypeError):
            rss = int(info["memory_info"].rss)
        with contextlib.suppress(AttributeError, TypeError):
            cpu = round(float(info["cpu_times"].user + info["cpu_times"].system), 2)
        yield Proc(int(info["pid"]), pname, owner, str(info.get("status") or ""), rss, cpu)
