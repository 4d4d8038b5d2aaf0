"""``ComputeJob``: a paglet base class for work that runs through compute slots.

Job code only does the work::

    @dataclass
    class SquareState(ComputeJobState):
        n: int = 0

    class Square(ComputeJob[SquareState]):
        State = SquareState

        def compute(self) -> int:
            self.progress(0.5, "squaring")
            return self.state.n * self.state.n

Create it with the resources it needs in its state (``cores``, ``ram`` and
``tmp`` in bytes, ``priority``, ``submitter``): its ``run`` submits it to its
host's scheduler (``compute-slots.v1``), waits for its slot, sets
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` to the
cores granted, pins its threads to the CPUs granted (Linux, best effort), runs
`compute` in its own thread and reports the end. The result (JSON values) is in
``state.result``, a failure's reason in ``state.failure``; ``phase`` says where
it is (``new``, ``pending``, ``running``, ``done``, ``failed``), and a
``compute.result`` message answers all three. The slot is held by the job's
process: it is freed when `compute` returns, and also when the process ends any
other way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from paglets.core.errors import PagletError
from paglets.core.paglet import Paglet
from paglets.core.state import PagletState
from paglets.services.compute.contract import (
    COMPUTE_SLOTS,
    FinishRequest,
    ProgressRequest,
    StatusRequest,
    SubmitRequest,
)
from paglets.services.compute.placement import Candidate, choose
from paglets.services.compute.service import GRANTED, OVER_MEMORY

if TYPE_CHECKING:
    from paglets.core.message import Message

log = logging.getLogger(__name__)

THREAD_VARIABLES: Final = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RESULT: Final = "compute.result"
MAX_MOVES: Final = 3
"""Moves to another host a job makes before it submits where it is."""
ASK_TIMEOUT: Final = 3.0
PROGRESS_EVERY: Final = 0.2
"""Seconds between two progress reports sent to the scheduler (the last always goes)."""


@dataclass
class ComputeJobState(PagletState):
    """What a job asks for, and where it is. Subclass it for the job's own fields."""

    cores: int = 1
    ram: int = 0
    tmp: int = 0
    priority: int = 0
    submitter: str = ""
    name: str = ""
    group: str = ""
    group_limit: int = 0
    phase: str = "new"
    job_id: str = ""
    result: Any = None
    failure: str = ""
    cpus: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    required_tags: list[str] = field(default_factory=list)
    preferred_tags: list[str] = field(default_factory=list)
    on_busy: str = "queue"
    moves: int = 0
    collector: str = ""
    collector_host: str = ""


StateT = TypeVar("StateT", bound=ComputeJobState)


class ComputeJob(Paglet[StateT]):
    """A job paglet; see the module docstring. Override `compute`."""

    State = ComputeJobState

    def __init__(self, state: StateT, context: Any) -> None:
        super().__init__(state, context)
        self._granted = threading.Event()
        self._last_progress = 0.0
        self._told_quarter = 0

    def compute(self) -> Any:
        """The work, run once the slot is granted; return the result (JSON values)."""
        raise NotImplementedError

    def progress(self, fraction: float, text: str = "") -> None:
        """Report how far the job is (0 to 1), seen in ``paglets-compute-slots ps``;
        each quarter passed is also a notice to the user (``paglets-user-info``)."""
        quarter = min(4, int(max(0.0, fraction) * 4))
        if 0 < quarter < 4 and quarter > self._told_quarter:  # noqa: PLR2004 - quarters
            self._told_quarter = quarter
            self._tell(f"{quarter * 25}% {text}".rstrip(), "info")
        now = time.monotonic()
        if fraction < 1 and now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        with contextlib.suppress(PagletError):
            self.context.service(COMPUTE_SLOTS, where=self.context.host_name).progress(
                ProgressRequest(self.state.job_id, float(fraction), text)
            )

    def _tell(self, message: str, severity: str) -> None:
        """A notice to the user about this job (user-info), titled by its name."""
        state = self.state
        title = f"{state.name or type(self).__name__} {state.phase}"
        with contextlib.suppress(PagletError):
            self.context.notify(title, message, severity=severity, job=state.job_id or None)

    def handle_message(self, message: Message) -> Any:
        """The scheduler's grant and warning; ``compute.result`` for callers."""
        if message.kind == GRANTED:
            self.state.cpus = [int(c) for c in message.args.get("cpus", [])]
            self._granted.set()
            return None
        if message.kind == OVER_MEMORY:
            warning = (
                f"over its declared ram: rss {message.args.get('rss')} > "
                f"{message.args.get('ram')} bytes; stopped at the next sample if still over"
            )
            self.state.warnings.append(warning)
            self.context.log.warning("%s", warning)
            return None
        if message.kind == RESULT:
            state = self.state
            return {"phase": state.phase, "result": state.result, "failure": state.failure}
        return self.not_handled()

    def run(self) -> None:
        """Submit, wait for the slot, compute, report; in a thread of its own."""
        state = self.state
        if state.phase in ("done", "failed"):
            return
        target = self._placement()
        if target is not None:
            state.moves += 1
            try:
                self.dispatch(target)
            except PagletError as exc:
                self.context.log.warning("could not move to %s, submitting here: %s", target, exc)
            else:
                return  # it runs on from `run` there
        # its own host's scheduler: never one elsewhere, which would not find it
        slots = self.context.service(COMPUTE_SLOTS, where=self.context.host_name)
        try:
            reply = slots.submit(
                SubmitRequest(
                    agent_id=self.context.agent_id,
                    submitter=state.submitter,
                    name=state.name or type(self).__name__,
                    cores=state.cores,
                    ram=state.ram,
                    tmp=state.tmp,
                    priority=state.priority,
                    group=state.group,
                    group_limit=state.group_limit,
                )
            )
        except PagletError as exc:
            state.phase, state.failure = "failed", str(exc)
            self._report()
            return
        state.job_id = reply.job_id
        if reply.status == "RUNNING":
            state.cpus = list(reply.cpus)
        else:
            state.phase = "pending"
            self._granted.wait()
        state.phase = "running"
        self._tell(f"started on {self.context.host_name} with {state.cores} cores", "info")
        self._limit_threads(state.cores, state.cpus)
        try:
            state.result, phase = self.compute(), "done"
        except Exception as exc:  # noqa: BLE001 - the job's failure, reported
            state.failure, phase = f"{type(exc).__name__}: {exc}", "failed"
        self.progress(1.0, phase)
        with contextlib.suppress(PagletError):
            slots.finish(FinishRequest(state.job_id, phase.upper(), state.failure))
        state.phase = phase  # last: a caller who sees it done finds the slot free
        if phase == "done":
            self._tell(f"done on {self.context.host_name}", "info")
        else:
            self._tell(state.failure, "error")
        self._report()

    def _report(self) -> None:
        """Send the result or failure to the group's collector, if the job has one."""
        state = self.state
        if not state.collector:
            return
        try:
            self.context.proxy(state.collector, state.collector_host or None).send_oneway(
                "group.result",
                agent_id=self.context.agent_id,
                phase=state.phase,
                result=state.result,
                failure=state.failure,
            )
        except PagletError as exc:
            self.context.log.warning("could not report to collector %s: %s", state.collector, exc)

    def _placement(self) -> str | None:
        """The host to move to before submitting (`paglets.services.compute.placement`)."""
        state = self.state
        if state.moves >= MAX_MOVES or not (state.required_tags or state.on_busy == "redirect"):
            return None
        candidates = []
        for host in self.context.hosts(online=True):
            if host.name != self.context.host_name and not host.movable:
                continue
            try:
                client = self.context.service(COMPUTE_SLOTS, where=host.name, timeout=ASK_TIMEOUT)
                slots = client.status(StatusRequest())
            except PagletError:
                slots = None
            candidates.append(Candidate(host.name, host.tags, slots))
        return choose(
            self.context.host_name,
            candidates,
            cores=state.cores,
            ram=state.ram,
            tmp=state.tmp,
            required=state.required_tags,
            preferred=state.preferred_tags,
            on_busy=state.on_busy,
        )

    @staticmethod
    def _limit_threads(cores: int, cpus: list[int]) -> None:
        """Thread pools sized to the cores granted; threads pinned to the CPUs granted."""
        for name in THREAD_VARIABLES:
            os.environ[name] = str(max(1, cores))
        if not cpus or not hasattr(os, "sched_setaffinity"):
            return
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)  # this thread, and what it starts
            for task in Path("/proc/self/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)
