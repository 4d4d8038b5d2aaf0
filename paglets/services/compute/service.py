"""``ComputeSlots``: a host's compute-slot scheduler, the resident service of ``compute-slots.v1``.

The bundled launch file declares it (``[[services]] name = "compute-slots"``);
its limits come from the launch file's ``[compute]`` table, which the host hands
it on its first call (``compute.attach``). It keeps a `SlotTable` (the pure
admission logic) in memory and feeds it events:

- ``submit`` from a job paglet of this host: refused at once when no host of
  the mesh could ever run it (``Infeasible``, naming the largest host); else
  queued, and the host watches the job's process from then on;
- ``compute.ended``, a message from the host when a watched process ends any
  way (finished, crashed, SIGKILLed, disposed, deactivated, moved): its slot is
  free at once; ``finish``, ``cancel``: the same by request;
- every release and submit admits what now fits and tells each job started
  (a ``compute.granted`` message to its paglet).

While jobs run or wait, ``run`` samples each running job's process tree once a
second (RSS, CPU time, temp bytes and their peaks). A job over its declared RAM
is told (``compute.over_memory``), and stopped at the next sample if it still
is; its history says ``OVER_MEMORY``. The load gate is checked at each sample
too, so jobs held by load alone start when the load falls. With nothing running
or waiting it sleeps on an event: no timer runs.

The table lives in this paglet's memory: the service is never deactivated
while the host runs, and a restart of it forgets its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import InfeasibleError, PagletError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.core.state import PagletState
from paglets.runtime.service import Service
from paglets.services.compute.contract import (
    COMPUTE_SLOTS,
    Ack,
    CancelRequest,
    FinishRequest,
    HostSlots,
    JobInfo,
    JobsReply,
    JobsRequest,
    ProgressRequest,
    StatusRequest,
    SubmitReply,
    SubmitRequest,
    WhyReply,
    WhyRequest,
    check_job_id,
)
from paglets.services.compute.explain import infeasible, size
from paglets.services.compute.names import ENDED
from paglets.services.compute.slots import Job, JobStatus, Resources, SlotTable
from paglets.services.compute.usage import Usage, sample

if TYPE_CHECKING:
    from paglets.core.context import PagletContext
    from paglets.core.message import Message

GRANTED: Final = "compute.granted"
OVER_MEMORY: Final = "compute.over_memory"
SAMPLE_EVERY: Final = 1.0
MAX_CORES: Final = 1 << 16
MAX_BYTES: Final = 1 << 60
MAX_TEXT: Final = 200
MESH_ASK_TIMEOUT: Final = 3.0
ANONYMOUS: Final = "anonymous"
"""The submitter of jobs that name none: they share one turn in the queue."""


@dataclass
class ComputeSlotsState(PagletState):
    """Nothing durable: the table is in memory (see the module docstring)."""

    note: str = ""


@dataclass(slots=True)
class _Running:
    """What the scheduler knows of a job's process and its usage."""

    pid: int
    tmp_dir: Path | None
    progress: float = 0.0
    progress_text: str = ""
    usage: Usage = field(default_factory=lambda: Usage(0, 0.0, 0))
    peak_rss: int = 0
    peak_tmp: int = 0
    warned: bool = False
    ending: JobStatus | None = None  # why the scheduler stopped it, when it did


class ComputeSlots(Service[ComputeSlotsState]):
    """Serves ``compute-slots.v1``; see the module docstring."""

    State = ComputeSlotsState
    contract = COMPUTE_SLOTS
    deactivation_policy = None

    def __init__(self, state: ComputeSlotsState, context: PagletContext) -> None:
        super().__init__(state, context)
        self._slots: SlotTable | None = None
        self._host = ""
        self._cpus = 1
        self._max_queued = 10_000
        self._jobs: dict[str, _Running] = {}  # job id -> its process, pending or running
        self._by_agent: dict[str, str] = {}  # agent id -> job id
        self._wake: asyncio.Event | None = None
        # the last usage figures of ended jobs, for ``history`` (bounded by the history)
        self._kept: dict[str, tuple[Usage, int, int]] = {}

    # -- the table -------------------------------------------------------------------

    @property
    def table(self) -> SlotTable:
        """The admission table, made from the host's limits on first use."""
        if self._slots is None:
            limits = self._host_call("compute.attach")
            self._host = str(limits["host"])
            self._cpus = max(1, int(limits["cpus"]))
            self._max_queued = int(limits["max_queued"])
            self._slots = SlotTable(
                Resources(int(limits["cores"]), int(limits["ram"]), int(limits["tmp"])),
                max_load_per_cpu=float(limits["max_load_per_cpu"]),
                cpu_ids=tuple(int(c) for c in limits["cpu_ids"]),
            )
            self._slots.load_per_cpu = self._load()
        return self._slots

    def _host_call(self, method: str, **args: Any) -> Any:
        return self.context.link.call(method, **args)  # type: ignore[attr-defined]

    def _load(self) -> float:
        return os.getloadavg()[0] / self._cpus

    # -- operations ------------------------------------------------------------------

    def submit(self, request: SubmitRequest) -> SubmitReply:
        """Queue a job of a paglet of this host; admit it at once when it fits."""
        table = self.table
        agent_id = check_id(request.agent_id, IdKind.AGENT)
        wanted = _resources(request)
        if not -1000 <= request.priority <= 1000:  # noqa: PLR2004 - a sane bound
            raise RequestError(f"priority {request.priority} is outside -1000..1000")
        if not 0 <= request.group_limit <= MAX_CORES:
            raise RequestError(f"group_limit {request.group_limit} is outside 0..{MAX_CORES}")
        for name in ("submitter", "name", "group"):
            if len(getattr(request, name)) > MAX_TEXT:
                raise RequestError(f"{name} is longer than {MAX_TEXT} characters")
        if agent_id in self._by_agent:
            raise RequestError(f"paglet {agent_id} has a job here already")
        if table.infeasible(wanted):
            raise InfeasibleError(self._infeasible(wanted))
        if len(table.pending) >= self._max_queued:
            raise RequestError(
                f"host {self._host} has {len(table.pending)} jobs queued, its limit "
                "([compute] max_queued); submit later or to another host"
            )
        watched = self._host_call("compute.watch", agent_id=agent_id)
        job_id = uuid.uuid4().hex[:12]
        tmp_dir = watched.get("work_dir")
        self._jobs[job_id] = _Running(int(watched["pid"]), Path(tmp_dir) if tmp_dir else None)
        self._by_agent[agent_id] = job_id
        job = Job(
            job_id,
            agent_id,
            request.submitter or ANONYMOUS,
            wanted,
            priority=request.priority,
            group=request.group,
            group_limit=request.group_limit,
            name=request.name,
        )
        table.load_per_cpu = self._load()  # the gate as of now, not of the last sample
        started = table.submit(job, time.time())
        self._grant([j for j in started if j is not job])
        self._woken()
        if job.status is JobStatus.RUNNING:
            return SubmitReply(job_id, job.status.value, list(job.cpus))
        blocker = table.why(job_id, time.time())
        position, queued = (blocker.position, blocker.queued) if blocker else (0, 0)
        return SubmitReply(job_id, job.status.value, [], position, queued)

    def progress(self, request: ProgressRequest) -> Ack:
        """Record how far a running job is."""
        running = self._jobs.get(check_job_id(request.job_id))
        if running is None:
            return Ack(ok=False, detail=f"no job {request.job_id} here")
        running.progress = min(1.0, max(0.0, float(request.fraction)))
        running.progress_text = request.text[:MAX_TEXT]
        return Ack()

    def finish(self, request: FinishRequest) -> Ack:
        """A job is over (``DONE`` or ``FAILED``): free its slot, admit the next."""
        job_id = check_job_id(request.job_id)
        if request.status not in ("DONE", "FAILED"):
            raise RequestError(f"a job finishes DONE or FAILED, not {request.status!r:.20}")
        return self._end(job_id, JobStatus(request.status), request.detail[:MAX_TEXT])

    def cancel(self, request: CancelRequest) -> Ack:
        """Cancel a job: a pending one leaves the queue; a running one is stopped."""
        job_id = check_job_id(request.job_id)
        running = self._jobs.get(job_id)
        job = self.table.running.get(job_id)
        if running is not None and job is not None:
            running.ending = JobStatus.CANCELLED
            self._host_call("compute.stop", agent_id=job.agent_id, reason="cancelled")
            return Ack(detail=f"job {job_id} is being stopped")
        return self._end(job_id, JobStatus.CANCELLED, "cancelled")

    def status(self, _request: StatusRequest) -> HostSlots:
        """This host's totals, free figures and load."""
        table = self.table
        table.load_per_cpu = self._load()
        return HostSlots(
            host=self._host,
            cores=table.total.cores,
            ram=table.total.ram,
            tmp=table.total.tmp,
            free_cores=table.free.cores,
            free_ram=table.free.ram,
            free_tmp=table.free.tmp,
            load_per_cpu=table.load_per_cpu,
            max_load_per_cpu=table.max_load_per_cpu,
            running=len(table.running),
            pending=len(table.pending),
        )

    def jobs(self, request: JobsRequest) -> JobsReply:
        """The jobs asked for: pending (in start order), running, ended (newest first)."""
        if request.which not in ("pending", "running", "history", "all"):
            raise RequestError(
                f"which is pending, running, history or all, not {request.which!r:.20}"
            )
        limit = max(0, min(request.limit, 10_000))
        table, now = self.table, time.time()
        found: list[Job] = []
        if request.which in ("running", "all"):
            found += sorted(table.running.values(), key=lambda j: j.started_at or 0.0)
        if request.which in ("pending", "all"):
            found += table.order(now)
        if request.which in ("history", "all"):
            found += reversed(table.history)
        return JobsReply([self._info(j) for j in found[:limit]])

    def why(self, request: WhyRequest) -> WhyReply:
        """Why a job is not running: its reason code, the figures, its place in the queue."""
        job_id = check_job_id(request.job_id)
        table = self.table
        table.load_per_cpu = self._load()
        job = table.pending.get(job_id) or table.running.get(job_id)
        if job is None:
            job = next((j for j in table.history if j.job_id == job_id), None)
        if job is None:
            raise RequestError(f"host {self._host} knows no job {job_id}")
        blocker = table.why(job_id, time.time())
        if blocker is None:
            return WhyReply(self._info(job), detail=job.detail)
        return WhyReply(
            self._info(job), blocker.reason.value, blocker.detail, blocker.position, blocker.queued
        )

    # -- messages from the host ------------------------------------------------------

    async def handle_message(self, message: Message) -> Any:
        """``compute.ended`` from the host; the contract's calls as any service."""
        if message.kind != ENDED:
            return await super().handle_message(message)
        if message.sender is not None:
            return self.not_handled()  # only the host says a process ended
        job_id = self._by_agent.get(str(message.args.get("agent_id")))
        if job_id is not None:
            running = self._jobs.get(job_id)
            ending = running.ending if running and running.ending else None
            detail = str(message.args.get("detail", ""))[:MAX_TEXT]
            if ending is JobStatus.OVER_MEMORY and running is not None:
                detail = f"peak rss {size(running.peak_rss)} over its ram; {detail}"
            if ending is None:
                ending = JobStatus.KILLED if job_id in self.table.running else JobStatus.CANCELLED
            self._end(job_id, ending, detail, watched=False)
        return None

    def _end(self, job_id: str, status: JobStatus, detail: str, *, watched: bool = True) -> Ack:
        table = self.table
        job = table.running.get(job_id) or table.pending.get(job_id)
        if job is None:
            return Ack(ok=False, detail=f"no job {job_id} is pending or running here")
        running = self._jobs.pop(job_id, None)
        self._by_agent.pop(job.agent_id, None)
        if running is not None:
            self._keep_usage(job, running)
        if watched:
            with contextlib.suppress(PagletError):
                self._host_call("compute.unwatch", agent_id=job.agent_id)
        table.load_per_cpu = self._load()
        self._grant(table.release(job_id, time.time(), status, detail))
        return Ack(detail=f"job {job_id} {status.value.lower()}")

    def _grant(self, started: list[Job]) -> None:
        """Tell each job started that it may run (its paglet waits for this message)."""
        for job in started:
            try:
                self.context.proxy(job.agent_id).send_oneway(
                    GRANTED, job_id=job.job_id, cpus=list(job.cpus)
                )
            except PagletError as exc:
                self._end(job.job_id, JobStatus.LOST, f"its paglet could not be told: {exc}")

    def _infeasible(self, wanted: Resources) -> str:
        """The refusal, with every host of the mesh that serves compute slots asked."""
        hosts = [self.status(StatusRequest())]
        for host in self.context.hosts(online=True)[1:]:
            try:
                client = self.context.service(
                    COMPUTE_SLOTS, where=host.name, timeout=MESH_ASK_TIMEOUT
                )
                hosts.append(client.status(StatusRequest()))
            except PagletError:
                continue
        fits = [h.host for h in hosts if wanted.fits_in(Resources(h.cores, h.ram, h.tmp))]
        if fits:
            return (
                f"host {self._host} can never run cpu={wanted.cores} ram={size(wanted.ram)} "
                f"tmp={size(wanted.tmp)}; host {fits[0]} can: submit it there"
            )
        return infeasible(wanted.cores, wanted.ram, wanted.tmp, hosts)

    def _info(self, job: Job) -> JobInfo:
        running = self._jobs.get(job.job_id)
        usage = running.usage if running else Usage(0, 0.0, 0)
        kept = self._kept.get(job.job_id)  # the last figures of an ended job
        if running is None and kept is not None:
            usage, peak_rss, peak_tmp = kept
        else:
            peak_rss = running.peak_rss if running else 0
            peak_tmp = running.peak_tmp if running else 0
        return JobInfo(
            job_id=job.job_id,
            agent_id=job.agent_id,
            host=self._host,
            submitter=job.submitter,
            name=job.name,
            status=job.status.value,
            cores=job.request.cores,
            ram=job.request.ram,
            tmp=job.request.tmp,
            priority=job.priority,
            group=job.group,
            cpus=list(job.cpus),
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
            detail=job.detail,
            progress=running.progress if running else (1.0 if job.status.value == "DONE" else 0),
            progress_text=running.progress_text if running else "",
            cpu_time=usage.cpu_time,
            rss=usage.rss,
            peak_rss=peak_rss,
            tmp_used=usage.tmp,
            peak_tmp=peak_tmp,
        )

    def _keep_usage(self, job: Job, running: _Running) -> None:
        self._kept[job.job_id] = (running.usage, running.peak_rss, running.peak_tmp)
        while len(self._kept) > len(self.table.history) + 1:
            del self._kept[next(iter(self._kept))]

    # -- sampling --------------------------------------------------------------------

    def _woken(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Sample running jobs once a second while there are jobs; else sleep."""
        self._wake = asyncio.Event()
        while True:
            table = self._slots
            if table is None or not (table.running or table.pending):
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(SAMPLE_EVERY)
            await self._sample()

    async def _sample(self) -> None:
        table = self.table
        targets = {job_id: self._jobs[job_id] for job_id in table.running if job_id in self._jobs}
        figures = await asyncio.to_thread(
            lambda: {job_id: sample(r.pid, r.tmp_dir) for job_id, r in targets.items()}
        )
        for job_id, usage in figures.items():
            running, job = self._jobs.get(job_id), table.running.get(job_id)
            if running is None or job is None:
                continue  # it ended meanwhile
            running.usage = usage
            running.peak_rss = max(running.peak_rss, usage.rss)
            running.peak_tmp = max(running.peak_tmp, usage.tmp)
            if job.request.ram and usage.rss > job.request.ram and running.ending is None:
                self._over_memory(job, running, usage)
        if table.pending:
            self._grant(table.set_load(self._load(), time.time()))

    def _over_memory(self, job: Job, running: _Running, usage: Usage) -> None:
        """Tell the job the first time; stop it when it is still over at the next sample."""
        if not running.warned:
            running.warned = True
            with contextlib.suppress(PagletError):
                self.context.proxy(job.agent_id).send_oneway(
                    OVER_MEMORY, rss=usage.rss, ram=job.request.ram
                )
            return
        running.ending = JobStatus.OVER_MEMORY
        with contextlib.suppress(PagletError):
            self._host_call("compute.stop", agent_id=job.agent_id, reason="over_memory")


def _resources(request: SubmitRequest) -> Resources:
    for name, value, limit in (
        ("cores", request.cores, MAX_CORES),
        ("ram", request.ram, MAX_BYTES),
        ("tmp", request.tmp, MAX_BYTES),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise RequestError(f"{name} must be a whole number from 0 to {limit}, not {value!r}")
    return Resources(request.cores, request.ram, request.tmp)
