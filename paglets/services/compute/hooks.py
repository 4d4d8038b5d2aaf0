"""``ComputeHooks``: what the host does for its compute-slot scheduler.

The scheduler (`paglets.services.compute.service`) runs in a child process
like any service; three things only the host knows or can do, it asks the host
for through calls that only the scheduler's own paglet may make:

- ``compute.attach``: the limits of the launch file's ``[compute]`` table, with
  the defaults filled in (every CPU this host may use, 3/4 of its memory, the
  free space of its state directory's disk);
- ``compute.watch`` / ``compute.unwatch``: the host watches a job's process (it
  answers with its pid and work directory, and so proves that the paglet is a
  live one of this host). When a watched process ends, any way at all (it
  finished, crashed, was SIGKILLed, disposed, deactivated, moved), the
  supervisor's exit callback sends the scheduler a ``compute.ended`` message at
  once: no polling;
- ``compute.stop``: stop a job's paglet (cancelled: disposed; over its RAM: killed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from typing import TYPE_CHECKING, Any

from paglets.core.errors import PagletError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.core.status import ExitReason, PagletStatus
from paglets.runtime.delivery import SendMode
from paglets.services.compute.names import CONTRACT_NAME, ENDED

if TYPE_CHECKING:
    from paglets.calls import HostCalls
    from paglets.config import HostConfig
    from paglets.runtime.handle import ExitInfo
    from paglets.runtime.supervisor import Supervisor
    from paglets.services.registry import ServiceRegistry

log = logging.getLogger(__name__)

DEFAULT_LOAD_GATE = 1.0
DEFAULT_MAX_QUEUED = 10_000


class ComputeHooks:
    """See the module docstring."""

    def __init__(
        self,
        config: HostConfig,
        supervisor: Supervisor,
        calls: HostCalls,
        registry: ServiceRegistry,
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        entry = registry.entries.get(CONTRACT_NAME)
        self.scheduler = entry.agent_id if entry is not None else None
        self.watched: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        if self.scheduler is None:
            return
        supervisor.exit_listeners.append(self._ended)
        calls.register("compute.attach", self._attach)
        calls.register("compute.watch", self._watch)
        calls.register("compute.unwatch", self._unwatch)
        calls.register("compute.stop", self._stop)

    def __repr__(self) -> str:
        return f"<ComputeHooks {self.scheduler} watching {len(self.watched)}>"

    def _check_caller(self, agent_id: str) -> None:
        if agent_id != self.scheduler:
            raise RequestError("only the compute-slot scheduler of this host makes compute calls")

    async def _attach(self, agent_id: str, _args: dict[str, Any]) -> dict[str, Any]:
        self._check_caller(agent_id)
        section = self.config.compute
        cpu_ids = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpus = len(cpu_ids) or os.cpu_count() or 1
        ram = section.ram
        if ram is None:
            import psutil  # noqa: PLC0415 - here only: not on the path of every host's start

            ram = psutil.virtual_memory().total * 3 // 4
        tmp = section.tmp
        if tmp is None:
            tmp = (await asyncio.to_thread(shutil.disk_usage, self.config.home)).free
        return {
            "host": self.config.name,
            "cores": section.cores or cpus,
            "ram": ram,
            "tmp": tmp,
            "cpus": cpus,
            "cpu_ids": cpu_ids,
            "max_load_per_cpu": section.max_load_per_cpu or DEFAULT_LOAD_GATE,
            "max_queued": section.max_queued or DEFAULT_MAX_QUEUED,
        }

    async def _watch(self, agent_id: str, args: dict[str, Any]) -> dict[str, Any]:
        self._check_caller(agent_id)
        job = check_id(args.get("agent_id"), IdKind.AGENT)
        record = self.supervisor.find(job)
        if record is None or record.handle is None or record.status is not PagletStatus.ACTIVE:
            raise RequestError(f"no active paglet {job} on host {self.config.name} to run a job")
        self.watched.add(job)
        return {"pid": record.handle.pid, "work_dir": str(self.supervisor.work_dir(job))}

    async def _unwatch(self, agent_id: str, args: dict[str, Any]) -> None:
        self._check_caller(agent_id)
        self.watched.discard(check_id(args.get("agent_id"), IdKind.AGENT))

    async def _stop(self, agent_id: str, args: dict[str, Any]) -> None:
        self._check_caller(agent_id)
        job = check_id(args.get("agent_id"), IdKind.AGENT)
        if job not in self.watched:
            raise RequestError(f"paglet {job} runs no job here")
        record = self.supervisor.find(job)
        if record is None or record.handle is None:
            return
        if args.get("reason") == "over_memory":
            log.warning("compute job %s is over its declared ram: killed", job)
            record.handle.kill(ExitReason.MEMORY_LIMIT)
            return
        await self.supervisor.dispose(job)

    def _ended(self, agent_id: str, info: ExitInfo) -> None:
        """A child ended (the supervisor's exit callback): tell the scheduler at once."""
        if agent_id not in self.watched or self.scheduler is None:
            return
        self.watched.discard(agent_id)
        task = asyncio.get_running_loop().create_task(self._tell(agent_id, info.detail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell(self, agent_id: str, detail: str) -> None:
        assert self.scheduler is not None  # noqa: S101 - _ended checked it
        try:
            await self.supervisor.delivery.send(
                self.scheduler,
                ENDED,
                {"agent_id": agent_id, "detail": detail},
                mode=SendMode.ONEWAY,
            )
        except PagletError as exc:
            log.warning(
                "could not tell the compute-slot scheduler that %s ended: %s", agent_id, exc
            )

    async def close(self) -> None:
        """Cancel the messages not yet sent (the host is stopping)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
