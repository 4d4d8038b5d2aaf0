"""``ChildHandle``: the host's side of one paglet's child process.

It sends records down the channel, matches replies to waiting callers, keeps
the heartbeat time, and turns the child's exit into a named `ExitInfo`.
When the child ends, every pending call fails at once with a typed error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paglets.core.errors import (
    PagletCrashedError,
    PagletDeadError,
    PagletDisposedError,
    PagletError,
    PagletTimeoutError,
    ProtocolError,
)
from paglets.core.status import ExitReason
from paglets.runtime import ipc

if TYPE_CHECKING:
    from collections.abc import Callable

    from paglets.runtime.spawner import ChildProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How and why a child ended."""

    reason: ExitReason
    code: int | None
    detail: str


def describe_exit(code: int, requested: ExitReason | None) -> ExitInfo:
    """Name the end of a child from its exit code and what the host asked for."""
    if requested is ExitReason.DISPOSED and code == 0:
        return ExitInfo(ExitReason.DISPOSED, code, "disposed")
    if requested is not None and requested is not ExitReason.DISPOSED:
        return ExitInfo(requested, code, _REQUESTED_DETAIL[requested])
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return ExitInfo(ExitReason.SIGNAL, code, f"killed by {name}")
    if code == 1:
        return ExitInfo(ExitReason.EXCEPTION, code, "exited with code 1 (uncaught exception)")
    return ExitInfo(ExitReason.EXIT_CODE, code, f"exited with code {code}")


_REQUESTED_DETAIL = {
    ExitReason.HUNG: "stopped answering heartbeats and was killed",
    ExitReason.MEMORY_LIMIT: "exceeded its memory limit and was killed",
    ExitReason.HOST_STOPPED: "stopped with its host",
    ExitReason.START_FAILED: "failed to start",
    ExitReason.MOVED: "left for another host",
    ExitReason.IN_DOUBT: (
        "was stopped: a move of it may or may not have happened; its host settles "
        "that with the target, then it runs there or here"
    ),
    ExitReason.DEACTIVATED: "was deactivated",
}


class ChildHandle:
    """Talks to one child; see the module docstring."""

    def __init__(
        self,
        child: ChildProcess,
        agent_id: str,
        *,
        on_exit: Callable[[ChildHandle, ExitInfo], None],
        on_note: Callable[[ChildHandle, ipc.Note], None],
        on_call: Callable[[ChildHandle, ipc.Call], None] | None = None,
    ) -> None:
        self.child = child
        self.agent_id = agent_id
        self.last_beat = time.monotonic()
        self.exit_info: ExitInfo | None = None
        self._on_exit = on_exit
        self._on_note = on_note
        self._on_call = on_call
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        # a synchronous sender's own future, resolved with the message's (no shield)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        # what to tell when a message nobody waits on fails (one-way, future)
        self._unwaited: dict[int, Callable[[PagletError], None]] = {}
        self._oneway: set[int] = set()  # one-way messages sent and not yet handled
        self._sizes: dict[int, int] = {}  # bytes of each message sent and not yet handled
        self.queued_bytes = 0  # their sum: in the channel's buffer or the child's mailbox
        self._ready: asyncio.Future[int] | None = None
        self._requested: ExitReason | None = None
        self._ended = asyncio.Event()
        self.class_restart_policy: dict[str, Any] | None = None
        self.idle_timeout: float | None = None

    def __repr__(self) -> str:
        state = self.exit_info.reason.value if self.exit_info else "running"
        return (
            f"<ChildHandle {self.agent_id} pid={self.child.pid} {state} "
            f"pending={len(self._pending)}>"
        )

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def pending(self) -> int:
        """Calls and messages of every mode sent to the child and not yet answered."""
        return len(self._pending) + len(self._oneway)

    # -- start ------------------------------------------------------------------

    async def start(self, init: ipc.Init, timeout: float) -> None:
        """Send ``Init`` and wait for ``Ready``; raises the child's error otherwise."""
        self._ready = asyncio.get_running_loop().create_future()
        self.child.exited.add_done_callback(self._child_exited)
        self.child.channel.attach(self.on_record, self._on_protocol_error)
        self._write(init)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self.kill(ExitReason.START_FAILED)
            raise PagletTimeoutError(
                f"paglet {self.agent_id} did not start within {timeout:g} s"
            ) from None
        except PagletError:
            await self.wait_ended()
            raise

    # -- records in -------------------------------------------------------------

    def _on_protocol_error(self, exc: ProtocolError) -> None:
        log.error("paglet %s sent a malformed frame (%s); killing it", self.agent_id, exc)
        self.kill(ExitReason.EXCEPTION)

    def on_record(self, record: ipc.Record) -> None:
        self.last_beat = time.monotonic()
        if isinstance(record, ipc.Reply):
            self._on_reply(record)
        elif isinstance(record, ipc.Heartbeat):
            return
        elif isinstance(record, ipc.Ready | ipc.InitFailed):
            self._on_started(record)
        elif isinstance(record, ipc.Note):
            self._on_note(self, record)
        elif isinstance(record, ipc.Call) and self._on_call is not None:
            self._on_call(self, record)
        else:
            raise ProtocolError(f"unexpected {type(record).__name__} from a child")

    def _on_reply(self, record: ipc.Reply) -> None:
        self._handled(record.id)
        fut = self._pending.pop(record.id, None)
        waiter = self._waiters.pop(record.id, None) if self._waiters else None
        failed = self._unwaited.pop(record.id, None) if self._unwaited else None
        if fut is None or fut.done():
            return
        if record.error is not None:
            error = record.error.to_exception()
            fut.set_exception(error)
            if waiter is not None:
                fut.exception()  # seen: its sender gets it
                if not waiter.done():
                    waiter.set_exception(error)
            elif failed is not None:
                fut.exception()  # seen: it is told
                failed(error)
        else:
            fut.set_result(record.value)
            if waiter is not None and not waiter.done():
                waiter.set_result(record.value)

    def _on_started(self, record: ipc.Ready | ipc.InitFailed) -> None:
        if isinstance(record, ipc.InitFailed):
            self._requested = ExitReason.START_FAILED
        if self._ready is None or self._ready.done():
            return
        if isinstance(record, ipc.Ready):
            self.class_restart_policy = record.restart_policy
            self.idle_timeout = record.idle_timeout
            self._ready.set_result(record.pid)
        else:
            self._ready.set_exception(record.error.to_exception())

    # -- calls ------------------------------------------------------------------

    def _write(self, record: ipc.Record) -> int:
        idle = not self.pending
        if idle:  # the clock of its heartbeats starts now
            self.last_beat = time.monotonic()
        size = 0 if self.exit_info is not None else self.child.channel.send(record, alone=idle)
        if not size:
            raise self._dead_error()
        return size

    def _handled(self, request_id: int) -> None:
        """A message was handled (or its call answered): it no longer counts as queued."""
        self._oneway.discard(request_id)
        self.queued_bytes -= self._sizes.pop(request_id, 0)

    def answer(self, call_id: int, value: Any, error: ipc.ErrorRecord | None) -> None:
        """Send the result of a child's ``Call``; a child that is gone is not an error."""
        if self.exit_info is None:
            self.child.channel.send(ipc.CallResult(call_id, value, error))

    def _dead_error(self) -> PagletDeadError:
        if self._requested is ExitReason.DISPOSED:
            return PagletDisposedError(f"paglet {self.agent_id} was disposed")
        info = self.exit_info
        detail = info.detail if info else "its process is gone"
        return PagletCrashedError(f"paglet {self.agent_id} {detail}")

    def _call(self, build: Callable[[int], ipc.Record]) -> asyncio.Future[Any]:
        request_id = next(self._ids)
        record = build(request_id)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        size = self._write(record)
        self._pending[request_id] = fut
        if isinstance(record, ipc.Deliver):
            self._count(request_id, size)
        return fut

    def _count(self, request_id: int, size: int) -> None:
        self._sizes[request_id] = size
        self.queued_bytes += size

    def deliver(
        self,
        kind: str,
        args: dict[str, Any],
        *,
        priority: int = 0,
        message_id: str | None = None,
        sender: str | None = None,
        reply: bool = True,
        waiter: asyncio.Future[Any] | None = None,
        unwaited: Callable[[PagletError], None] | None = None,
    ) -> asyncio.Future[Any] | None:
        """Queue a message; the future resolves to the handler's reply.

        A one-way message (no ``reply``) has no future, but it counts in
        `pending` and `queued_bytes` until the child says it was handled.
        A ``waiter`` (a synchronous sender's) gets the same outcome as the
        future, in the same turn of the loop; cancelling it leaves the future be.
        Of a message nobody waits on, ``unwaited`` is told the error it failed
        with, if it does (and the future's error counts as seen).
        """
        request_id = next(self._ids)
        size = self._write(ipc.Deliver(request_id, kind, args, priority, message_id, sender, reply))
        self._count(request_id, size)
        if not reply:
            self._oneway.add(request_id)
            return None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        if waiter is not None:
            self._waiters[request_id] = waiter
        elif unwaited is not None:
            self._unwaited[request_id] = unwaited
        return fut

    def request(self, build: Callable[[int], ipc.Record]) -> asyncio.Future[Any]:
        """Send the record ``build(request_id)``; the future resolves to the child's reply."""
        return self._call(build)

    async def get_state(self) -> dict[str, Any]:
        """The JSON projection of the state, taken between two messages."""
        value: dict[str, Any] = await self._call(ipc.GetState)
        return value

    # -- ending -----------------------------------------------------------------

    async def stop(self, grace: float, reason: ExitReason = ExitReason.DISPOSED) -> None:
        """Ask the child to run ``on_disposing`` and exit; kill it after ``grace``."""
        if self.exit_info is not None:
            return
        self._requested = reason
        hook_error: PagletError | None = None
        try:
            dispose = reason is ExitReason.DISPOSED
            fut = self._call(lambda i: ipc.Stop(i, dispose))
            await asyncio.wait_for(fut, grace)
        except TimeoutError:
            log.warning("paglet %s did not stop within %g s; killing it", self.agent_id, grace)
            self.child.kill(signal.SIGKILL)
        except PagletDeadError:
            pass
        except PagletError as exc:
            hook_error = exc
        if not await self.wait_ended(grace):
            self.child.kill(signal.SIGKILL)
            await self.wait_ended()
        if hook_error is not None:
            log.warning("paglet %s on_disposing raised: %s", self.agent_id, hook_error)

    def kill(self, reason: ExitReason) -> None:
        """Kill the child at once, recording why."""
        if self.exit_info is None:
            self._requested = reason
            self.child.kill(signal.SIGKILL)

    async def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait until the child's exit was handled; false on timeout."""
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _child_exited(self, fut: asyncio.Future[int]) -> None:
        code = fut.result() if not fut.cancelled() else -signal.SIGKILL
        self.exit_info = describe_exit(code, self._requested)
        error = self._dead_error()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                PagletCrashedError(f"paglet {self.agent_id} {self.exit_info.detail} while starting")
            )
        pending, self._pending = self._pending, {}
        waiters, self._waiters = self._waiters, {}
        unwaited, self._unwaited = self._unwaited, {}
        self._oneway.clear()
        self._sizes.clear()
        self.queued_bytes = 0
        for waiter in (*pending.values(), *waiters.values()):
            if not waiter.done():
                waiter.set_exception(error)
        for request_id in (*waiters, *unwaited):
            if not pending[request_id].cancelled():
                pending[request_id].exception()  # seen: its sender got it, or is told
        self.child.close()
        self._ended.set()
        self._on_exit(self, self.exit_info)
        for failed in unwaited.values():  # after its end is known, as it was logged
            failed(error)
