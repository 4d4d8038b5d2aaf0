"""Messages to paglets: delivery, remembered results, and waits on a move.

`Delivery` is the supervisor's post office. It delivers a message to a
paglet's process (synchronous, one-way or future), refuses it when the
paglet's mailbox is full, remembers the replies of messages sent with an id
(a retry waits on the first delivery's reply), and has a paglet dispatch,
retract or clone itself, returning as soon as the target has committed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

from paglets.core.errors import MailboxFullError, PagletNotFoundError, PagletTimeoutError
from paglets.core.events import EventKind
from paglets.core.status import PagletStatus
from paglets.runtime import ipc

if TYPE_CHECKING:
    from paglets.core.errors import PagletError
    from paglets.runtime.handle import ChildHandle
    from paglets.runtime.records import AgentRecord
    from paglets.runtime.supervisor import Supervisor


Recipient: TypeAlias = "tuple[AgentRecord, ChildHandle]"
"""A paglet that can take a message now, and its process (`Delivery.running`)."""


class SendMode(StrEnum):
    """How a caller wants the reply to a message."""

    SYNC = "sync"
    ONEWAY = "oneway"
    FUTURE = "future"


class Delivery:
    """See the module docstring; one per `Supervisor`, as its ``delivery``."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._results: OrderedDict[tuple[str, str], asyncio.Future[Any]] = OrderedDict()
        self._moving: dict[str, list[asyncio.Future[dict[str, str]]]] = {}

    async def send(
        self,
        agent_id: str,
        kind: str,
        args: dict[str, Any],
        *,
        priority: int = 0,
        message_id: str | None = None,
        sender: str | None = None,
        mode: SendMode = SendMode.SYNC,
        timeout: float | None = None,
        no_delay: bool = False,
    ) -> Any:
        """Deliver a message. ``SYNC`` returns the reply; the others return None.

        A ``message_id`` seen before on this paglet is not delivered again: a
        synchronous retry waits on the first delivery's reply. A message to an
        inactive paglet activates it first, unless ``no_delay``.
        """
        found = self.running(agent_id)
        if found is None:  # inactive: woken first (no coroutine to await on the usual path)
            await self._supervisor.wake(agent_id, no_delay=no_delay)
            found = self._supervisor.live(agent_id)
        waiter = self.post(found, kind, args, priority, message_id, sender, mode)
        if waiter is None:
            return None
        if timeout is None:
            return await waiter
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise PagletTimeoutError(
                f"paglet {agent_id} did not reply to {kind!r} within {timeout:g} s"
            ) from None

    def post(  # noqa: PLR0917 - a message's fields, as `send` takes them
        self,
        recipient: Recipient,
        kind: str,
        args: dict[str, Any],
        priority: int,
        message_id: str | None,
        sender: str | None,
        mode: SendMode,
    ) -> asyncio.Future[Any] | None:
        """Hand the message to the `running` paglet's process (unless it is a retry of one
        already handed over): the future a ``SYNC`` sender waits on; ``None`` for the others.

        As `send` does once its paglet runs, with the same checks, errors and
        deduplication by ``message_id``, and nothing to await: a caller that
        answers many messages (the proxy channel) adds a callback to the future.

        Raises:
            MailboxFullError: the paglet's mailbox is full.
            PagletDeadError: its process is gone.
        """
        record, handle = recipient
        record.last_used = time.monotonic()
        agent_id = record.agent_id
        key = (agent_id, message_id) if message_id else None
        fut = self._results.get(key) if key else None
        waiter: asyncio.Future[Any] | None = None
        if fut is None:
            self._check_room(agent_id, handle)
            want_reply = mode is not SendMode.ONEWAY or key is not None
            unwaited = None
            if mode is SendMode.SYNC:
                waiter = asyncio.get_running_loop().create_future()
            else:  # nobody waits: a failure is logged
                unwaited = partial(self._unwaited_failed, agent_id, kind)
            fut = handle.deliver(
                kind,
                args,
                priority=priority,
                message_id=message_id,
                sender=sender,
                reply=want_reply,
                waiter=waiter,
                unwaited=unwaited,
            )
            if fut is not None and key is not None:
                self._remember(key, fut)
        if mode is not SendMode.SYNC or fut is None:
            return None
        if waiter is None:  # a retry: it waits on the first delivery's reply
            waiter = asyncio.shield(fut)
        return waiter

    def _check_room(self, agent_id: str, handle: ChildHandle) -> None:
        """Refuse a message when the paglet's mailbox is full, by count or by bytes.

        Every message counts until its paglet has handled it, whatever its mode:
        one-way and future messages too, so a busy paglet cannot make its host
        hold an unbounded queue for it.
        """
        limits = self._supervisor.limits
        if handle.pending >= limits.max_mailbox:
            raise MailboxFullError(
                f"paglet {agent_id} has {handle.pending} messages waiting "
                f"(limit {limits.max_mailbox}); retry later"
            )
        if handle.queued_bytes >= limits.max_mailbox_bytes:
            raise MailboxFullError(
                f"paglet {agent_id} has {handle.queued_bytes} bytes of messages waiting "
                f"(limit {limits.max_mailbox_bytes}); retry later"
            )

    def running(self, agent_id: str) -> Recipient | None:
        """The paglet's process, if it can take a message now (`post`); ``None`` if it
        must be woken first (`send` does), or is not here.

        A paglet still starting (it just arrived) has been sent its ``Init``:
        a message goes right behind it, and the child handles it once the
        paglet is up, without waiting for the host to hear that it is.
        """
        record = self._supervisor.find(agent_id)
        if record is not None and record.status is PagletStatus.STARTING:
            handle = record.handle
            if handle is not None:
                return record, handle
        if not self._supervisor.awake(agent_id):
            return None
        return self._supervisor.live(agent_id)

    def _unwaited_failed(self, agent_id: str, kind: str, exc: PagletError) -> None:
        """Log the failure of a message nobody waits on (one-way or future)."""
        self._supervisor.events.append(
            EventKind.MESSAGE_FAILED,
            agent_id,
            f"{kind!r} failed: {exc}",
            {"kind": kind, "error": type(exc).__name__},
        )

    def _remember(self, key: tuple[str, str], fut: asyncio.Future[Any]) -> None:
        """Keep ``fut`` for retries and result calls (its exception is marked as seen)."""
        self._results[key] = fut
        while len(self._results) > self._supervisor.limits.remembered_messages:
            self._results.popitem(last=False)

    async def result(self, agent_id: str, message_id: str, timeout: float) -> tuple[bool, Any]:
        """Wait up to ``timeout`` for a remembered message's reply: (done, reply)."""
        fut = self._results.get((agent_id, message_id))
        if fut is None:
            self._supervisor.get(agent_id)
            raise PagletNotFoundError(
                f"no message {message_id} remembered for paglet {agent_id}; "
                "results are kept for the most recent messages only"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        if not fut.done():
            return False, None
        return True, fut.result()

    async def move(
        self, agent_id: str, kind: str, target: str | None, ticket: dict[str, Any] | None
    ) -> dict[str, str]:
        """Have the paglet dispatch, retract or clone itself (between two messages).

        Returns where it (or its copy) runs: a dispatch or retract as soon as the
        target has committed it, while the process it left is still tidying up.
        """
        await self._supervisor.wake(agent_id)
        _record, handle = self._supervisor.live(agent_id)
        fut: asyncio.Future[dict[str, str]] = handle.request(
            lambda i: ipc.Move(i, kind, target, ticket)
        )
        if kind == "clone":
            return await fut
        moved: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._moving.setdefault(agent_id, []).append(moved)
        try:
            await asyncio.wait((fut, moved), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stop_waiting(agent_id, moved)
            if not fut.done():  # the paglet's own answer comes later; nobody waits for it
                fut.add_done_callback(_consume)
        return moved.result() if not moved.cancelled() else fut.result()

    def _stop_waiting(self, agent_id: str, moved: asyncio.Future[dict[str, str]]) -> None:
        waiting = self._moving.get(agent_id, [])
        if moved in waiting:
            waiting.remove(moved)
            if not waiting:
                del self._moving[agent_id]
        moved.cancel()  # a no-op once it holds where the paglet went

    def moved(self, agent_id: str, host: str, url: str) -> None:
        """The paglet now lives at ``url``: tell whoever waits on its move."""
        for waiting in self._moving.pop(agent_id, ()):
            if not waiting.done():
                waiting.set_result({"agent_id": agent_id, "host": host, "url": url})


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a remembered result's exception as seen; callers read it later."""
    if not fut.cancelled():
        fut.exception()
