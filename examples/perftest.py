"""A performance check of every host of the mesh, by clones of one paglet.

The parent `PerfTest` stays on the host it was created on. Sent ``start``, it
clones itself to every online host of its mesh and protocol version (itself
included, as a local copy). Each clone, a *worker*, is a compute job
(`paglets.services.compute.job.ComputeJob`): where its host serves compute
slots, it waits for a core and the memory and temp storage it will use; then
it runs three bounded checks in its ``run()`` thread, reports them to the
parent (as a job group's member reports to its collector) and disposes of
itself:

- **cpu**: sha256 over a 1 MiB buffer for ``cpu_seconds``: MiB hashed a second
  on one core;
- **memory**: allocate ``memory_mib``, write every page, read every byte back:
  MiB a second each way, and the child's peak resident memory;
- **disk**: write ``disk_mib`` to a file in the worker's work directory (on the
  host's state disk), ``fsync``, read it back, remove it: MiB a second each way.

A host the clone cannot reach is noted as failed and the others go on.
``results`` answers what has come back so far. ``paglets-perf-test``
(`paglets.cli.perftest`) drives it.
"""

from __future__ import annotations

import hashlib
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from paglets import Message, PagletError, PagletState
from paglets.core.errors import ServiceNotFoundError
from paglets.services.compute.contract import COMPUTE_SLOTS, StatusRequest
from paglets.services.compute.group import RESULT as GROUP_RESULT
from paglets.services.compute.job import ComputeJob, ComputeJobState
from paglets.wire.state_json import state_from_json

if TYPE_CHECKING:
    from pathlib import Path

    from paglets import LifecycleEvent

MAX_CPU_SECONDS: Final = 30.0
MAX_MEMORY_MIB: Final = 4096
MAX_DISK_MIB: Final = 4096
_MIB: Final = 1 << 20
_PAGE: Final = 4096
RAM_MARGIN_MIB: Final = 96
"""MiB a worker asks of compute slots beyond ``memory_mib``: its interpreter's own."""


@dataclass
class Sizes(PagletState):
    """How much each check does; bounded by the ``MAX_`` figures."""

    cpu_seconds: float = 1.0
    memory_mib: int = 64
    disk_mib: int = 64

    def check(self) -> None:
        """`ValueError` naming the figure that is out of bounds."""
        if not 0.01 <= self.cpu_seconds <= MAX_CPU_SECONDS:
            raise ValueError(f"cpu_seconds must be from 0.01 to {MAX_CPU_SECONDS:g}")
        if not 1 <= self.memory_mib <= MAX_MEMORY_MIB:
            raise ValueError(f"memory_mib must be from 1 to {MAX_MEMORY_MIB}")
        if not 1 <= self.disk_mib <= MAX_DISK_MIB:
            raise ValueError(f"disk_mib must be from 1 to {MAX_DISK_MIB}")


@dataclass
class Report(PagletState):
    """What one worker measured on its host."""

    host: str
    cpus: int
    cpu_mib_s: float
    memory_mib: int
    memory_write_mib_s: float
    memory_read_mib_s: float
    peak_rss_mib: float
    disk_mib: int
    disk_write_mib_s: float
    disk_read_mib_s: float
    seconds: float
    error: str = ""


def cpu_check(seconds: float) -> float:
    """MiB a second that sha256 hashes on one core, for about ``seconds``."""
    block = os.urandom(_MIB)
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        hashlib.sha256(block).digest()
        done += 1
    return done / elapsed


def memory_check(mib: int) -> tuple[float, float]:
    """MiB a second writing every page of ``mib`` MiB, then reading every byte."""
    started = time.perf_counter()
    buffer = bytearray(mib * _MIB)
    for offset in range(0, len(buffer), _PAGE):
        buffer[offset] = 1
    written = time.perf_counter() - started
    started = time.perf_counter()
    marked = buffer.count(1)  # every byte read, in C
    read = time.perf_counter() - started
    assert marked == len(buffer) // _PAGE  # noqa: S101 - every page was written
    return mib / max(written, 1e-9), mib / max(read, 1e-9)


def disk_check(directory: Path, mib: int) -> tuple[float, float]:
    """MiB a second writing ``mib`` MiB to a file (and ``fsync``), then reading it back."""
    path = directory / "perf-test.bin"
    block = os.urandom(_MIB)
    try:
        started = time.perf_counter()
        with path.open("wb") as out:
            out.writelines(block for _ in range(mib))
            out.flush()
            os.fsync(out.fileno())
        written = time.perf_counter() - started
        started = time.perf_counter()
        with path.open("rb") as back:
            while back.read(_MIB):
                pass
        read = time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)
    return mib / max(written, 1e-9), mib / max(read, 1e-9)


# --8<-- [start:walk]
@dataclass
class PerfTestState(ComputeJobState):
    sizes: Sizes = field(default_factory=Sizes)
    role: str = "parent"
    workers: dict[str, str] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class PerfTest(ComputeJob[PerfTestState]):
    """See the module docstring. Messages to the parent: ``start`` (answers the
    hosts it cloned to), a worker's report (as a job group's), ``results``."""

    State = PerfTestState

    def handle_message(self, message: Message) -> Any:
        if message.kind == "start":
            return self._start()
        if message.kind == GROUP_RESULT:
            self._take(message.args)
            return None
        if message.kind == "results":
            return {
                "hosts": sorted(self.state.workers),
                "reports": [asdict(r) for r in self.state.reports.values()],
                "failed": self.state.failed,
            }
        return super().handle_message(message)

    def _take(self, args: dict[str, Any]) -> None:
        """A worker's report, or why it has none."""
        if args.get("phase") == "done":
            report = state_from_json(Report, args["result"])
            self.state.reports[report.host] = report
            return
        hosts = {agent: host for host, agent in self.state.workers.items()}
        host = hosts.get(str(args.get("agent_id")), str(args.get("agent_id")))
        self.state.failed[host] = str(args.get("failure") or args.get("phase"))

    def _start(self) -> list[str]:
        state = self.state
        state.sizes.check()
        # each worker reports to this paglet as a job group's member to its collector
        state.collector, state.collector_host = self.context.agent_id, self.context.host_url
        state.cores, state.name = 1, "perf-test"
        state.ram = (state.sizes.memory_mib + RAM_MARGIN_MIB) * _MIB
        state.tmp = state.sizes.disk_mib * _MIB
        here = self.context.host_name
        for host in self.context.hosts(movable=True):
            target = None if host.name == here else host.name
            try:
                state.workers[host.name] = self.clone(target).agent_id
            except PagletError as exc:  # that host is out of the test, the others go on
                state.failed[host.name] = f"{type(exc).__name__}: {exc}"
        return sorted(state.workers)

    def on_clone(self, event: LifecycleEvent) -> None:
        del event
        self.state.role = "worker"
        self.state.workers, self.state.reports, self.state.failed = {}, {}, {}

    def run(self) -> None:
        if self.state.role != "worker":
            return
        if self._has_slots():
            super().run()  # waits for its slot, computes, reports to the parent
        else:
            self.state.result, self.state.phase = self.compute(), "done"
            self._report()
        self.dispose()

    def _has_slots(self) -> bool:
        """Whether this host serves compute slots (then the checks wait for a slot)."""
        here = self.context.host_name
        try:
            self.context.service(COMPUTE_SLOTS, where=here, timeout=10).status(StatusRequest())
        except ServiceNotFoundError:
            return False
        return True

    def compute(self) -> dict[str, Any]:
        sizes, started = self.state.sizes, time.perf_counter()
        try:
            cpu = cpu_check(sizes.cpu_seconds)
            memory = memory_check(sizes.memory_mib)
            disk = disk_check(self.context.work_dir, sizes.disk_mib)
            error = ""
        except (OSError, MemoryError) as exc:
            cpu, memory, disk, error = 0.0, (0.0, 0.0), (0.0, 0.0), f"{type(exc).__name__}: {exc}"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report = Report(
            host=self.context.host_name,
            cpus=os.cpu_count() or 1,
            cpu_mib_s=round(cpu, 1),
            memory_mib=sizes.memory_mib,
            memory_write_mib_s=round(memory[0], 1),
            memory_read_mib_s=round(memory[1], 1),
            peak_rss_mib=round(peak, 1),
            disk_mib=sizes.disk_mib,
            disk_write_mib_s=round(disk[0], 1),
            disk_read_mib_s=round(disk[1], 1),
            seconds=round(time.perf_counter() - started, 3),
            error=error,
        )
        return asdict(report)


# --8<-- [end:walk]
