"""``why JOB`` in two steps: can it ever run, then what blocks it on each host now.

Pure: built from the job's host's answer (`WhyReply`) and every host's figures
(`HostSlots`), for ``paglets-compute-slots why``::

    4f2a0c1e9b7d alice PENDING 3m12s reason=Resources queue=2/5
    request cpu=8 ram=24G tmp=50G load/cpu<=1.00
    0/3 hosts can start it now:
      ada      ram 12.0G free < 24G
      babbage  cpu 4/16 free < 8; load/cpu 1.12 > 1.00 (LoadGate)
      curie    tmp 20G free < 50G  [never: tmp total 40G]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paglets.services.compute.explain import blockers, host_lines, request_line
from paglets.services.compute.slots import Reason

if TYPE_CHECKING:
    from collections.abc import Sequence

    from paglets.services.compute.contract import HostSlots, WhyReply


@dataclass(frozen=True, slots=True)
class WhyAnswer:
    """The answer: its lines of text, and the same as data for ``--json``."""

    lines: list[str]
    reason: str
    feasible: bool
    can_start: int
    hosts: list[dict[str, Any]]
    reply: WhyReply

    def to_dict(self) -> dict[str, Any]:
        """What ``--json`` prints."""
        return {
            "job": dataclasses.asdict(self.reply.job),
            "reason": self.reason,
            "detail": self.reply.detail,
            "position": self.reply.position,
            "queued": self.reply.queued,
            "feasible": self.feasible,
            "can_start": self.can_start,
            "hosts": self.hosts,
        }


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def explain(
    reply: WhyReply, hosts: Sequence[HostSlots], lost: Sequence[str], now: float
) -> WhyAnswer:
    """The two-step answer for the job of ``reply`` over the mesh's ``hosts``."""
    job = reply.job
    own = next((h for h in hosts if h.host == job.host), None)
    gate = own.max_load_per_cpu if own else None
    rows = []
    feasible = False
    for host in hosts:
        found, never = blockers(job, host)
        feasible = feasible or not never
        rows.append({"host": host.host, "can_start": not found, "blocked": found, "never": never})
    rows += [
        {"host": name, "can_start": False, "blocked": [Reason.HOST_LOST.value], "never": False}
        for name in lost
    ]
    reason = reply.reason
    if job.status == "PENDING" and not feasible:
        reason = Reason.INFEASIBLE.value
    if job.status == "PENDING" and job.host in lost:
        reason = Reason.HOST_LOST.value
    since = now - (job.started_at or job.submitted_at)
    head = f"{job.job_id} {job.submitter} {job.status} {_age(since)}"
    if job.status == "PENDING":
        head += f" reason={reason} queue={reply.position}/{reply.queued}"
    elif job.detail:
        head += f" ({job.detail})"
    lines = [head, f"request {request_line(job.cores, job.ram, job.tmp, gate)}"]
    if job.status != "PENDING":
        lines.append(f"it is {job.status.lower()}: nothing blocks it")
        return WhyAnswer(lines, reason, feasible, 0, rows, reply)
    if reply.detail:
        lines.append(f"on {job.host}: {reason} ({reply.detail})")
    if not feasible:
        lines.append("it can never run: no host has that much")
    can, per_host = host_lines(job, hosts, lost)
    lines.append(f"{can}/{len(hosts) + len(lost)} hosts can start it now:")
    lines.extend(per_host)
    return WhyAnswer(lines, reason, feasible, can, rows, reply)
