"""``SlotTable``: the pure admission logic of a host's compute-slot scheduler.

No I/O, no clock of its own (every call passes ``now``), no threads: the
scheduler service (`paglets.services.compute.service`) owns one and feeds it
events; the unit tests drive it directly.

- A job asks for ``cores``, ``ram`` and ``tmp`` (bytes); it starts only when all
  three fit in what is free and the host's load per CPU is at most the gate.
- Admission runs on events only: a submit, a release (finish, kill, cancel) and
  a new load figure. Every one returns the jobs it started.
- Order: the highest priority first; within a priority, the submitter with the
  least recent usage (decayed core-seconds plus the cores it holds now), ties
  to the one served longest ago (round robin); within a submitter, FIFO.
- No backfill: when the job whose turn it is does not fit, those behind it
  wait (reason ``Priority``), so a large job is never starved by small ones.
  A job over its group's running limit is skipped (``GroupLimit``).
- Invariant, checked by `check`: free + allocated = total in every dimension,
  and nothing is negative.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

HALF_LIFE: Final = 600.0
"""Seconds after which a submitter's past usage counts half in the queue order."""
MAX_HISTORY: Final = 1000


class Reason(StrEnum):
    """Why a pending job is not running (``why``)."""

    RESOURCES = "Resources"
    LOAD_GATE = "LoadGate"
    PRIORITY = "Priority"
    GROUP_LIMIT = "GroupLimit"
    HOST_LOST = "HostLost"
    INFEASIBLE = "Infeasible"


class JobStatus(StrEnum):
    """Where a job is in its life."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    KILLED = "KILLED"
    OVER_MEMORY = "OVER_MEMORY"
    LOST = "LOST"


@dataclass(frozen=True, slots=True)
class Resources:
    """Cores, RAM bytes and temp-storage bytes."""

    cores: int = 0
    ram: int = 0
    tmp: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cores + other.cores, self.ram + other.ram, self.tmp + other.tmp)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cores - other.cores, self.ram - other.ram, self.tmp - other.tmp)

    def fits_in(self, other: Resources) -> bool:
        """Whether every figure is at most ``other``'s."""
        return self.cores <= other.cores and self.ram <= other.ram and self.tmp <= other.tmp

    def short_of(self, other: Resources) -> list[str]:
        """The dimensions (``cpu``, ``ram``, ``tmp``) where this asks more than ``other``."""
        names = ("cpu", "ram", "tmp")
        pairs = zip(
            names,
            (self.cores, self.ram, self.tmp),
            (other.cores, other.ram, other.tmp),
            strict=True,
        )
        return [name for name, mine, theirs in pairs if mine > theirs]

    def nonnegative(self) -> bool:
        """Whether no figure is below zero."""
        return min(self.cores, self.ram, self.tmp) >= 0


@dataclass(slots=True)
class Job:
    """One job the table knows: pending, running or (in the history) ended."""

    job_id: str
    agent_id: str
    submitter: str
    request: Resources
    priority: int = 0
    group: str = ""
    group_limit: int = 0  # at most this many of its group running (0: no limit)
    name: str = ""
    submitted_at: float = 0.0
    status: JobStatus = JobStatus.PENDING
    started_at: float | None = None
    ended_at: float | None = None
    cpus: tuple[int, ...] = ()
    detail: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why a pending job does not start now: its reason and the figures behind it."""

    reason: Reason
    detail: str
    position: int
    queued: int


@dataclass(slots=True)
class _Submitter:
    queue: deque[Job] = field(default_factory=deque)
    usage: float = 0.0  # decayed core-seconds, as of `usage_at`
    usage_at: float = 0.0
    served: int = -1  # the admission count when it last started a job


class SlotTable:
    """The jobs of one host and what they hold; see the module docstring."""

    def __init__(
        self,
        total: Resources,
        *,
        max_load_per_cpu: float = 1.0,
        cpu_ids: tuple[int, ...] = (),
        half_life: float = HALF_LIFE,
    ) -> None:
        self.total = total
        self.free = total
        self.allocated = Resources()
        self.max_load_per_cpu = max_load_per_cpu
        self.load_per_cpu = 0.0
        self.half_life = half_life
        self._free_cpus = sorted(cpu_ids)
        self.running: dict[str, Job] = {}
        self.pending: dict[str, Job] = {}
        self.history: deque[Job] = deque(maxlen=MAX_HISTORY)
        self._submitters: dict[str, _Submitter] = {}
        self._seq = 0
        self._admissions = 0

    def __repr__(self) -> str:
        return (
            f"<SlotTable free={self.free} running={len(self.running)} pending={len(self.pending)}>"
        )

    # -- events ----------------------------------------------------------------------

    def infeasible(self, request: Resources) -> list[str]:
        """The dimensions where ``request`` exceeds this host's total (empty: feasible)."""
        return request.short_of(self.total)

    def submit(self, job: Job, now: float) -> list[Job]:
        """Queue ``job`` (FIFO within its submitter) and admit what fits.

        The caller refuses an infeasible request first (`infeasible`).
        """
        self._seq += 1
        job.seq = self._seq
        job.submitted_at = now
        job.status = JobStatus.PENDING
        self.pending[job.job_id] = job
        self._submitter(job.submitter, now).queue.append(job)
        return self.admit(now)

    def release(
        self, job_id: str, now: float, status: JobStatus = JobStatus.DONE, detail: str = ""
    ) -> list[Job]:
        """End ``job_id`` (running or pending) with ``status``; admit what now fits.

        An unknown or already ended job changes nothing (releases are idempotent).
        """
        job = self.running.pop(job_id, None)
        if job is not None:
            self.free += job.request
            self.allocated -= job.request
            self._free_cpus = sorted((*self._free_cpus, *job.cpus))
            started = job.started_at if job.started_at is not None else now
            who = self._submitter(job.submitter, now)
            who.usage += job.request.cores * max(0.0, now - started)
        else:
            job = self.pending.pop(job_id, None)
            if job is None:
                return []
            self._submitters[job.submitter].queue.remove(job)
        job.status = status
        job.ended_at = now
        job.detail = detail
        self.history.append(job)
        return self.admit(now)

    def set_load(self, load_per_cpu: float, now: float) -> list[Job]:
        """A new load figure (load average over CPUs); admit what the gate now lets in."""
        self.load_per_cpu = load_per_cpu
        return self.admit(now)

    def admit(self, now: float) -> list[Job]:
        """Start pending jobs in order while the next one fits; the ones started."""
        started: list[Job] = []
        while True:
            job = self._next(now)
            if job is None or not job.request.fits_in(self.free) or self._gated():
                return started
            self._start(job, now)
            started.append(job)

    # -- questions -------------------------------------------------------------------

    def order(self, now: float) -> list[Job]:
        """Pending jobs in the order they would start (ignoring group limits' skips)."""
        return list(self._ordered(now))

    def _ordered(self, now: float) -> Iterator[Job]:
        """`order`, lazily: each next job costs a look at each submitter's head."""
        heads = {name: iter(s.queue) for name, s in self._submitters.items() if s.queue}
        head = {name: next(it) for name, it in heads.items()}
        usage = {name: self._usage(name, now) for name in heads}
        served = {name: self._submitters[name].served for name in heads}
        turn = self._admissions
        while head:
            name = min(head, key=lambda n: (-head[n].priority, usage[n], served[n], n))
            job = head[name]
            yield job
            turn += 1
            usage[name] += job.request.cores * 1e-9  # the next head of a tie goes after others
            served[name] = turn
            following = next(heads[name], None)
            if following is None:
                del head[name]
            else:
                head[name] = following

    def why(self, job_id: str, now: float) -> Blocker | None:
        """Why the pending job ``job_id`` does not start now (None: it is not pending)."""
        job = self.pending.get(job_id)
        if job is None:
            return None
        order = self.order(now)
        position = order.index(job) + 1
        queued = len(order)
        if self._group_full(job):
            return Blocker(
                Reason.GROUP_LIMIT,
                f"group {job.group} has {self._group_running(job.group)}/{job.group_limit} running",
                position,
                queued,
            )
        ahead = [j for j in order[: position - 1] if not self._group_full(j)]
        short = job.request.short_of(self.free)
        if short:
            return Blocker(Reason.RESOURCES, ", ".join(short), position, queued)
        if self._gated():
            detail = f"load/cpu {self.load_per_cpu:.2f} > {self.max_load_per_cpu:.2f}"
            return Blocker(Reason.LOAD_GATE, detail, position, queued)
        if ahead:
            return Blocker(Reason.PRIORITY, f"{ahead[0].job_id} goes first", position, queued)
        return Blocker(Reason.RESOURCES, "admission pending", position, queued)

    def check(self) -> None:
        """Assert the invariant: free + allocated = total, nothing negative.

        Raises:
            AssertionError: the table is inconsistent (a bug).
        """
        held = Resources()
        for job in self.running.values():
            held += job.request
        if held != self.allocated or self.free + self.allocated != self.total:
            raise AssertionError(f"free {self.free} + allocated {self.allocated} != {self.total}")
        if not (self.free.nonnegative() and self.allocated.nonnegative()):
            raise AssertionError(f"negative figures: free {self.free}, held {self.allocated}")

    # -- inside ----------------------------------------------------------------------

    def _submitter(self, name: str, now: float) -> _Submitter:
        found = self._submitters.get(name)
        if found is None:
            found = self._submitters[name] = _Submitter(usage_at=now)
        return found

    def _usage(self, name: str, now: float) -> float:
        """Recent usage of ``name``: decayed past core-seconds plus cores held now."""
        who = self._submitters[name]
        if now > who.usage_at:
            who.usage *= math.pow(0.5, (now - who.usage_at) / self.half_life)
            who.usage_at = now
        holding = sum(j.request.cores for j in self.running.values() if j.submitter == name)
        return who.usage + holding * self.half_life / 10

    def _gated(self) -> bool:
        return self.load_per_cpu > self.max_load_per_cpu

    def _group_running(self, group: str) -> int:
        return sum(1 for j in self.running.values() if j.group == group)

    def _group_full(self, job: Job) -> bool:
        return bool(job.group and job.group_limit) and (
            self._group_running(job.group) >= job.group_limit
        )

    def _next(self, now: float) -> Job | None:
        for job in self._ordered(now):
            if not self._group_full(job):
                return job
        return None

    def _start(self, job: Job, now: float) -> None:
        del self.pending[job.job_id]
        who = self._submitters[job.submitter]
        who.queue.remove(job)
        self._admissions += 1
        who.served = self._admissions
        cores = job.request.cores
        if 0 < cores <= len(self._free_cpus):
            job.cpus, self._free_cpus = tuple(self._free_cpus[:cores]), self._free_cpus[cores:]
        self.free -= job.request
        self.allocated += job.request
        job.status = JobStatus.RUNNING
        job.started_at = now
        self.running[job.job_id] = job
