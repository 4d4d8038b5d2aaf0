"""``COMPUTE_SLOTS`` (``compute-slots.v1``): the contract of a host's compute-slot scheduler.

Jobs (`paglets.services.compute.job.ComputeJob`) call ``submit``, ``progress``
and ``finish``; people and tools (``paglets-compute-slots``) call ``status``,
``jobs``, ``why`` and ``cancel``. Sizes are bytes; times are seconds since the
epoch. Every figure from the wire is checked by the scheduler before it has
any effect (`paglets.services.compute.service`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from paglets.core.errors import RequestError
from paglets.core.state import PagletState
from paglets.services import Contract
from paglets.services.compute.names import CONTRACT_NAME

JOB_ID: Final = re.compile(r"[0-9a-f]{8,32}")
STATUS_NAMES: Final = ("DONE", "FAILED")


def check_job_id(value: object) -> str:
    """``value`` if it is a job id (8 to 32 lower-case hex digits); `RequestError` if not."""
    if not isinstance(value, str) or JOB_ID.fullmatch(value) is None:
        raise RequestError(
            f"{value!r:.40} is not a job id: 8 to 32 hex digits, as `paglets-compute-slots "
            "queue` shows them"
        )
    return value


@dataclass
class SubmitRequest(PagletState):
    """A job asks for cores, RAM and temp storage (bytes) for its paglet ``agent_id``."""

    agent_id: str = ""
    submitter: str = ""
    name: str = ""
    cores: int = 1
    ram: int = 0
    tmp: int = 0
    priority: int = 0
    group: str = ""
    group_limit: int = 0


@dataclass
class SubmitReply(PagletState):
    """The job's id and whether it runs now (``RUNNING``, with its CPUs) or waits."""

    job_id: str = ""
    status: str = ""
    cpus: list[int] = field(default_factory=list)
    position: int = 0
    queued: int = 0


@dataclass
class ProgressRequest(PagletState):
    """How far a running job is: a fraction from 0 to 1, and a line of text."""

    job_id: str = ""
    fraction: float = 0.0
    text: str = ""


@dataclass
class FinishRequest(PagletState):
    """A job is over: ``DONE`` or ``FAILED`` (with the reason in ``detail``)."""

    job_id: str = ""
    status: str = "DONE"
    detail: str = ""


@dataclass
class CancelRequest(PagletState):
    """Cancel a job: a pending one leaves the queue, a running one is stopped."""

    job_id: str = ""


@dataclass
class Ack(PagletState):
    """What was done (``ok``: whether the job was known)."""

    ok: bool = True
    detail: str = ""


@dataclass
class StatusRequest(PagletState):
    """Ask for the host's totals, free figures and load."""


@dataclass
class HostSlots(PagletState):
    """One host's scheduler: totals, free figures, load and how many jobs it has."""

    host: str = ""
    cores: int = 0
    ram: int = 0
    tmp: int = 0
    free_cores: int = 0
    free_ram: int = 0
    free_tmp: int = 0
    load_per_cpu: float = 0.0
    max_load_per_cpu: float = 1.0
    running: int = 0
    pending: int = 0


@dataclass
class JobInfo(PagletState):
    """A job as the scheduler sees it, with its usage as last sampled."""

    job_id: str = ""
    agent_id: str = ""
    host: str = ""
    submitter: str = ""
    name: str = ""
    status: str = ""
    cores: int = 0
    ram: int = 0
    tmp: int = 0
    priority: int = 0
    group: str = ""
    cpus: list[int] = field(default_factory=list)
    submitted_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    detail: str = ""
    progress: float = 0.0
    progress_text: str = ""
    cpu_time: float = 0.0
    rss: int = 0
    peak_rss: int = 0
    tmp_used: int = 0
    peak_tmp: int = 0


@dataclass
class JobsRequest(PagletState):
    """Which jobs: ``pending``, ``running``, ``history`` or ``all``; at most ``limit``."""

    which: str = "all"
    limit: int = 1000


@dataclass
class JobsReply(PagletState):
    """The jobs asked for, pending ones in the order they would start."""

    jobs: list[JobInfo] = field(default_factory=list)


@dataclass
class WhyRequest(PagletState):
    """Ask why the job ``job_id`` is not running."""

    job_id: str = ""


@dataclass
class WhyReply(PagletState):
    """The job, and for a pending one its reason code, figures and place in the queue."""

    job: JobInfo = field(default_factory=JobInfo)
    reason: str = ""
    detail: str = ""
    position: int = 0
    queued: int = 0


COMPUTE_SLOTS: Final = Contract(
    CONTRACT_NAME,
    {
        "submit": (SubmitRequest, SubmitReply),
        "progress": (ProgressRequest, Ack),
        "finish": (FinishRequest, Ack),
        "cancel": (CancelRequest, Ack),
        "status": (StatusRequest, HostSlots),
        "jobs": (JobsRequest, JobsReply),
        "why": (WhyRequest, WhyReply),
    },
)
"""The compute-slot scheduler's contract; see the module docstring."""
