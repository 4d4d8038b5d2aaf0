"""``Supervisor``: the host's table of paglets and the operations on them.

It starts children through a spawner, keeps one `AgentRecord` per
paglet, delivers messages (synchronous, one-way, future), reads state,
disposes, and watches children: a missed heartbeat or an exceeded memory
limit kills the child with a named reason. It never runs paglet code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from paglets.core.errors import (
    ConfigurationError,
    HostNotRunningError,
    MailboxFullError,
    PagletCrashedError,
    PagletDisposedError,
    PagletError,
    PagletInactiveError,
    PagletMovedError,
    PagletNotFoundError,
    PagletTimeoutError,
    RequestError,
    TransferError,
)
from paglets.core.events import EventKind
from paglets.core.ids import IdKind, check_id
from paglets.core.policy import RestartPolicy
from paglets.core.status import ExitReason, PagletStatus
from paglets.persistence.checkpoints import next_generation
from paglets.persistence.paths import under
from paglets.runtime import ipc
from paglets.runtime.admission import LIVE, Admission
from paglets.runtime.handle import ChildHandle, ExitInfo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets.persistence.events import EventLog
    from paglets.runtime.privileges import ChildUser
    from paglets.runtime.spawner import ChildProcess, Spawner
    from paglets.wire.modules import ModulePolicy

log = logging.getLogger(__name__)


class SendMode(StrEnum):
    """How a caller wants the reply to a message."""

    SYNC = "sync"
    ONEWAY = "oneway"
    FUTURE = "future"


@dataclass(frozen=True, slots=True)
class SupervisorLimits:
    """Bounds the supervisor enforces."""

    heartbeat_interval: float = 0.5
    hang_timeout: float = 10.0
    start_timeout: float = 30.0
    stop_grace: float = 5.0
    max_mailbox: int = 10_000  # messages of every mode waiting for one paglet
    max_mailbox_bytes: int = 64 * 1024**2  # and their encoded size
    memory_limit: int | None = 2 * 1024**3  # RSS of one child; over it, the child is killed
    max_paglets: int | None = 1000  # live paglets on the host (see paglets.runtime.admission)
    max_child_memory: int | None = None  # bytes: the RSS of all children together

    def __post_init__(self) -> None:
        if self.max_mailbox < 1 or self.max_mailbox_bytes < 1:
            raise ConfigurationError("max_mailbox and max_mailbox_bytes must be at least 1")
        if self.max_paglets is not None and self.max_paglets < 1:
            raise ConfigurationError("max_paglets must be at least 1 (None: no limit)")
        if self.max_child_memory is not None and self.max_child_memory < 1024**2:
            raise ConfigurationError("max_child_memory must be at least 1 MiB (None: no limit)")

    remembered_messages: int = 4096
    tombstones: int = 10_000


@dataclass(eq=False)
class AgentRecord:
    """What the host knows of one paglet."""

    agent_id: str
    class_path: str
    status: PagletStatus
    created_at: float
    handle: ChildHandle | None = field(default=None, repr=False)
    exit: ExitInfo | None = None
    disposal: asyncio.Task[None] | None = field(default=None, repr=False)
    moved_to: tuple[str, str] | None = None  # (host name, URL) once it has left
    restart_policy: RestartPolicy | None = None  # the instance's own, else the class's
    restarts: list[float] = field(default_factory=list, repr=False)  # monotonic times
    started: asyncio.Future[None] | None = field(default=None, repr=False)  # set once started
    idle_timeout: float | None = None  # the class's deactivation_policy
    last_used: float = field(default_factory=time.monotonic)  # the latest message (monotonic)
    generation: int = 0  # of this start (`paglets.persistence.checkpoints`)

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle and self.exit is None else None

    @property
    def pending(self) -> int:
        return self.handle.pending if self.handle else 0

    async def until_started(self) -> None:
        """Wait while its process is starting (e.g. it just arrived); at once otherwise."""
        if self.started is not None and not self.started.done():
            await asyncio.shield(self.started)


class Keeper(Protocol):
    """What keeps paglets on disk (`paglets.durability`), as the supervisor sees it."""

    def generation(self, agent_id: str) -> int:
        """A new generation for a start of the paglet, newer than any it had here."""

    async def created(
        self, record: AgentRecord, state: dict[str, Any] | None, envelope: str | None
    ) -> None:
        """A paglet started (created, arrived, activated); remember it.

        Started from an envelope, it returns once the paglet is durably kept
        (so the envelope's owner may drop the envelope); else at once.
        """

    def gone(self, agent_id: str) -> None:
        """A paglet was disposed or moved away; forget it."""

    async def activate(self, agent_id: str) -> None:
        """Start an inactive paglet from its checkpoint."""

    async def settle(self, agent_id: str) -> None:
        """Wait until a deactivation or restart of the paglet in progress has finished."""

    def crashed(self, record: AgentRecord, info: ExitInfo) -> None:
        """The paglet's process ended unasked; apply its restart policy."""

    def deactivate_idle(self, agent_id: str) -> None:
        """The paglet was idle past its deactivation policy; deactivate it."""


class Supervisor:
    """See the module docstring.

    ``call_handler``, set by the host, answers the calls paglets make to their
    host (`paglets.runtime.link`): ``await call_handler(agent_id, method, args)``.
    """

    def __init__(
        self,
        *,
        host_name: str,
        host_url: str,
        work_root: Path,
        spawner: Spawner,
        policy: ModulePolicy,
        events: EventLog,
        limits: SupervisorLimits | None = None,
    ) -> None:
        self.host_name = host_name
        self.host_url = host_url
        self.work_root = work_root
        self.spool_dir = work_root.parent / "transfers" / "out"
        self.files_root = work_root.parent / "files"
        self.checkpoints = work_root.parent / "paglets"
        self.fsync = True
        self.keeper: Keeper | None = None
        self.child_user: ChildUser | None = None  # children run as this user, if set
        self.spawner = spawner
        self.policy = policy
        self.events = events
        self.limits = limits or SupervisorLimits()
        self.admission = Admission(host_name, self.limits.max_paglets, self.limits.max_child_memory)
        self._agents: dict[str, AgentRecord] = {}
        self._gone: OrderedDict[str, AgentRecord] = OrderedDict()
        self._results: OrderedDict[tuple[str, str], asyncio.Future[Any]] = OrderedDict()
        self._moving: dict[str, list[asyncio.Future[dict[str, str]]]] = {}
        self._closing = False
        self.call_handler: Callable[[str, str, dict[str, Any]], Awaitable[Any]] | None = None
        self._calls: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Supervisor {self.host_name} paglets={len(self._agents)}>"

    # -- lookups ----------------------------------------------------------------

    def list(self) -> list[AgentRecord]:
        return list(self._agents.values())

    def get(self, agent_id: str) -> AgentRecord:
        """The live record, or the tombstone of a disposed paglet; 404 otherwise."""
        record = self._agents.get(agent_id) or self._gone.get(agent_id)
        if record is None:
            raise PagletNotFoundError(f"no paglet {agent_id} on host {self.host_name}")
        return record

    def _live(self, agent_id: str) -> tuple[AgentRecord, ChildHandle]:
        record = self.get(agent_id)
        if record.moved_to is not None:
            raise PagletMovedError.to(agent_id, *record.moved_to)
        if record.status is PagletStatus.IN_DOUBT:
            raise TransferError(
                f"paglet {agent_id} is in a transfer whose outcome is not known yet; "
                "the host settles it with the target and then it is active here or there"
            )
        if record.status is PagletStatus.DISPOSED:
            raise PagletDisposedError(f"paglet {agent_id} was disposed")
        if record.status in (PagletStatus.CRASHED, PagletStatus.FAILED):
            detail = record.exit.detail if record.exit else "crashed"
            raise PagletCrashedError(f"paglet {agent_id} {detail}")
        if record.handle is None or record.status is not PagletStatus.ACTIVE:
            raise PagletCrashedError(f"paglet {agent_id} is {record.status.value}")
        return record, record.handle

    # -- create -----------------------------------------------------------------

    def checkpoint_path(self, agent_id: str) -> Path:
        """Where the paglet's checkpoint (its durable state) is kept."""
        return under(self.checkpoints, f"{agent_id}.env")

    def work_dir(self, agent_id: str) -> Path:
        """The paglet's work directory (removed when it stops here)."""
        return under(self.work_root, agent_id)

    def files_dir(self, agent_id: str) -> Path:
        """Where the paglet's registered files are kept while it is here."""
        return under(self.files_root, agent_id)

    def _open_to_child(self, work_dir: Path, files_dir: Path, envelope: str | None) -> None:
        """Give the child user the paglet's directories and the envelope it starts from."""
        assert self.child_user is not None  # noqa: S101 - the caller checked
        self.child_user.grant(work_dir, files_dir)
        if envelope is not None:
            self.child_user.give_file(envelope)

    def check_new_id(self, agent_id: str) -> None:
        """Refuse a malformed id, or one in use here; a paglet that moved away may come back."""
        check_id(agent_id, IdKind.AGENT)
        gone = self._gone.get(agent_id)
        if agent_id in self._agents or (gone is not None and gone.moved_to is None):
            raise RequestError(f"a paglet with id {agent_id} exists on this host already")

    async def create(
        self,
        class_path: str,
        state: dict[str, Any] | None,
        agent_id: str | None = None,
        *,
        arrival: str = "creation",
        envelope: str | None = None,
        restart_policy: RestartPolicy | None = None,
        prepared: ChildProcess | None = None,
    ) -> AgentRecord:
        """Start a paglet; returns once its creation (or arrival) hook has run.

        ``envelope`` starts it from a movement envelope instead of ``state``;
        ``arrival`` says which hook runs (``creation``, ``dispatch``, ``retract``,
        ``clone``, or ``restore`` for none). ``prepared``, a process that checked
        the envelope (`paglets.runtime.verify`), becomes the paglet instead of a
        new one; the caller closes it if this raises.
        """
        self._check_open()
        module, _qualname = self.policy.check(class_path)
        agent_id = uuid.uuid4().hex if agent_id is None else check_id(agent_id, IdKind.AGENT)
        self.check_new_id(agent_id)
        if arrival == "creation":  # arrivals and activations were admitted before
            self.admit(f"paglet {agent_id}")
        work_dir, files_dir = self.work_dir(agent_id), self.files_dir(agent_id)
        checkpoint = self.checkpoint_path(agent_id)
        self._gone.pop(agent_id, None)
        record = AgentRecord(agent_id, class_path, PagletStatus.STARTING, time.time())
        keeper = self.keeper
        record.generation = keeper.generation(agent_id) if keeper else next_generation()
        record.started = asyncio.get_running_loop().create_future()
        self._agents[agent_id] = record
        try:
            if self.child_user is not None:  # registered first: callers wait for it
                await asyncio.to_thread(self._open_to_child, work_dir, files_dir, envelope)
            child = prepared if prepared is not None else await self.spawner.spawn()
            handle = ChildHandle(
                child,
                agent_id,
                on_exit=self._on_exit,
                on_note=self._on_note,
                on_call=self._on_call,
            )
            record.handle = handle
            await handle.start(
                ipc.Init(
                    agent_id=agent_id,
                    class_path=class_path,
                    state=state,
                    host_name=self.host_name,
                    host_url=self.host_url,
                    work_dir=str(work_dir),
                    allowed_prefixes=list(self.policy.prefixes),
                    heartbeat_interval=self.limits.heartbeat_interval,
                    arrival=arrival,
                    envelope=envelope,
                    spool_dir=str(self.spool_dir),
                    files_dir=str(files_dir),
                    checkpoint=str(checkpoint),
                    fsync=self.fsync,
                    generation=record.generation,
                ),
                self.limits.start_timeout,
            )
        except BaseException as exc:
            self._agents.pop(agent_id, None)
            record.started.set_result(None)
            if record.handle is not None:
                record.handle.kill(ExitReason.START_FAILED)
            self.events.append(
                EventKind.PAGLET_CREATE_FAILED,
                agent_id,
                f"{class_path}: {exc}",
                {"class_path": class_path, "error": type(exc).__name__},
            )
            raise
        self.spawner.warm(module)
        record.restart_policy = restart_policy or _policy(handle.class_restart_policy)
        record.idle_timeout = handle.idle_timeout
        record.status = PagletStatus.ACTIVE
        record.started.set_result(None)
        if arrival == "creation":
            self.events.append(
                EventKind.PAGLET_CREATED,
                agent_id,
                f"created {class_path}",
                {"class_path": class_path, "pid": handle.pid},
            )
        if self.keeper is not None:
            await self.keeper.created(record, state if envelope is None else None, envelope)
        return record

    # -- messages ---------------------------------------------------------------

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
        record, handle = await self._recipient(agent_id, no_delay=no_delay)
        record.last_used = time.monotonic()
        key = (agent_id, message_id) if message_id else None
        fut = self._results.get(key) if key else None
        if fut is None:
            self._check_room(agent_id, handle)
            want_reply = mode is not SendMode.ONEWAY or key is not None
            fut = handle.deliver(
                kind,
                args,
                priority=priority,
                message_id=message_id,
                sender=sender,
                reply=want_reply,
            )
            if key is not None and fut is not None:
                self._remember(key, fut)
            if mode is not SendMode.SYNC and fut is not None:
                fut.add_done_callback(partial(self._unwaited_done, agent_id, kind))
        if mode is not SendMode.SYNC or fut is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise PagletTimeoutError(
                f"paglet {agent_id} did not reply to {kind!r} within {timeout:g} s"
            ) from None

    def _check_room(self, agent_id: str, handle: ChildHandle) -> None:
        """Refuse a message when the paglet's mailbox is full, by count or by bytes.

        Every message counts until its paglet has handled it, whatever its mode:
        one-way and future messages too, so a busy paglet cannot make its host
        hold an unbounded queue for it.
        """
        limits = self.limits
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

    async def _recipient(self, agent_id: str, *, no_delay: bool) -> tuple[AgentRecord, ChildHandle]:
        """The paglet's process to deliver to, woken first if it is inactive.

        A paglet still starting (it just arrived) has been sent its ``Init``:
        a message goes right behind it, and the child handles it once the
        paglet is up, without waiting for the host to hear that it is.
        """
        record = self._agents.get(agent_id)
        if record is not None and record.status is PagletStatus.STARTING:
            handle = record.handle
            if handle is not None:
                return record, handle
        await self.wake(agent_id, no_delay=no_delay)
        return self._live(agent_id)

    def _unwaited_done(self, agent_id: str, kind: str, fut: asyncio.Future[Any]) -> None:
        """Log the failure of a message nobody waits on (one-way or future)."""
        if fut.cancelled() or fut.exception() is None:
            return
        exc = fut.exception()
        self.events.append(
            EventKind.MESSAGE_FAILED,
            agent_id,
            f"{kind!r} failed: {exc}",
            {"kind": kind, "error": type(exc).__name__},
        )

    def _remember(self, key: tuple[str, str], fut: asyncio.Future[Any]) -> None:
        fut.add_done_callback(_consume)
        self._results[key] = fut
        while len(self._results) > self.limits.remembered_messages:
            self._results.popitem(last=False)

    async def result(self, agent_id: str, message_id: str, timeout: float) -> tuple[bool, Any]:
        """Wait up to ``timeout`` for a remembered message's reply: (done, reply)."""
        fut = self._results.get((agent_id, message_id))
        if fut is None:
            self.get(agent_id)
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
        await self.wake(agent_id)
        _record, handle = self._live(agent_id)
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

    def mark_moved(self, agent_id: str, host: str, url: str) -> None:
        """The paglet now lives at ``url``: from here on, callers are sent there."""
        record = self._agents.get(agent_id) or self._gone.get(agent_id)
        if record is None:  # known from the journal only (after a restart)
            record = AgentRecord(agent_id, "", PagletStatus.MOVED, time.time())
        record.moved_to = (host, url)
        record.status = PagletStatus.MOVED
        for waiting in self._moving.pop(agent_id, ()):
            if not waiting.done():
                waiting.set_result({"agent_id": agent_id, "host": host, "url": url})
        self._bury(record)
        if self.keeper is not None:
            self.keeper.gone(agent_id)
        self.events.append(
            EventKind.TRANSFER_SENT, agent_id, f"moved to {host}", {"host": host, "url": url}
        )
        if record.handle is not None and record.exit is None:
            task = asyncio.get_running_loop().create_task(self._let_go(record, record.handle))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        else:
            self._cleanup_dirs(agent_id)

    async def _let_go(self, record: AgentRecord, handle: ChildHandle) -> None:
        """Wait for a departed paglet's process to end by itself; stop it if it lingers."""
        if not await handle.wait_ended(self.limits.stop_grace + 5.0):
            handle.kill(ExitReason.MOVED)
            await handle.wait_ended()
        del record
        self._cleanup_dirs(handle.agent_id)

    def _cleanup_dirs(self, agent_id: str) -> None:
        shutil.rmtree(self.work_dir(agent_id), ignore_errors=True)
        shutil.rmtree(self.files_dir(agent_id), ignore_errors=True)

    def set_in_doubt(self, agent_id: str) -> None:
        """Stop the paglet's process: a transfer of it may or may not have committed."""
        record = self._agents.get(agent_id)
        if record is None:
            return
        record.status = PagletStatus.IN_DOUBT
        if record.handle is not None and record.exit is None:
            record.handle.kill(ExitReason.IN_DOUBT)

    def hold_in_doubt(self, agent_id: str, class_path: str) -> None:
        """List a paglet held by an unsettled transfer (after a restart): not running."""
        if agent_id not in self._agents:
            self._gone.pop(agent_id, None)
            self._agents[agent_id] = AgentRecord(
                agent_id, class_path, PagletStatus.IN_DOUBT, time.time()
            )

    def forget(self, agent_id: str) -> None:
        """Drop a record that is not running (after an in-doubt move was settled)."""
        record = self._agents.pop(agent_id, None)
        if record is not None and record.handle is not None and record.exit is None:
            record.handle.kill(ExitReason.MOVED)

    async def wake(self, agent_id: str, *, no_delay: bool = False) -> None:
        """Activate the paglet if it is inactive (``PagletInactiveError`` with ``no_delay``)."""
        if self.keeper is not None:
            await self.keeper.settle(agent_id)
        record = self._agents.get(agent_id)
        if record is not None:
            await record.until_started()
            record = self._agents.get(agent_id)
        if record is None or record.status is not PagletStatus.INACTIVE:
            return
        if no_delay or self.keeper is None:
            raise PagletInactiveError(
                f"paglet {agent_id} is inactive; send without no_delay to activate it"
            )
        await self.keeper.activate(agent_id)

    def hold_inactive(self, agent_id: str, class_path: str, since: float) -> AgentRecord:
        """List a paglet kept on disk, with no process."""
        record = AgentRecord(agent_id, class_path, PagletStatus.INACTIVE, since)
        self._gone.pop(agent_id, None)
        self._agents[agent_id] = record
        return record

    def release_inactive(self, agent_id: str) -> AgentRecord:
        """Take an inactive (or restarting) paglet's record out, to start it again."""
        record = self._agents.get(agent_id)
        if record is None or record.status not in (
            PagletStatus.INACTIVE,
            PagletStatus.RESTARTING,
        ):
            raise PagletError(f"paglet {agent_id} is not inactive")
        del self._agents[agent_id]
        return record

    async def persist(self, agent_id: str, *, deactivate: bool) -> tuple[str, int]:
        """Have the paglet write its checkpoint (after ``on_deactivating`` if deactivating).

        Returns:
            The checkpoint's path and its generation.
        """
        await self.get(agent_id).until_started()
        _record, handle = self._live(agent_id)
        fut = handle.request(lambda i: ipc.Persist(i, deactivate=deactivate, sync=self.fsync))
        answer: dict[str, Any] = await fut
        return str(answer["path"]), int(answer["generation"])

    async def stop_inactive(self, agent_id: str) -> None:
        """Stop the process of a paglet that was just written to disk."""
        record = self._agents.get(agent_id)
        if record is None or record.handle is None:
            return
        handle = record.handle
        record.status = PagletStatus.STOPPING
        await handle.stop(self.limits.stop_grace, ExitReason.DEACTIVATED)
        record.status = PagletStatus.INACTIVE
        record.handle = None
        record.exit = None
        shutil.rmtree(self.work_dir(agent_id), ignore_errors=True)

    async def state(self, agent_id: str) -> dict[str, Any]:
        await self.wake(agent_id)
        _record, handle = self._live(agent_id)
        return await handle.get_state()

    # -- ending -----------------------------------------------------------------

    async def dispose(self, agent_id: str) -> None:
        """Run ``on_disposing``, stop the process, remove the paglet and its work dir."""
        record = self.get(agent_id)
        await record.until_started()
        if record.status is PagletStatus.DISPOSED:
            return
        if record.moved_to is not None:
            raise PagletMovedError.to(agent_id, *record.moved_to)
        if record.disposal is None:
            # Single flight: concurrent disposes all wait on the first one.
            record.disposal = asyncio.get_running_loop().create_task(self._dispose(record))
        await asyncio.shield(record.disposal)

    async def _dispose(self, record: AgentRecord) -> None:
        agent_id = record.agent_id
        if record.handle is not None and record.exit is None:
            record.status = PagletStatus.STOPPING
            await record.handle.stop(self.limits.stop_grace)
        record.status = PagletStatus.DISPOSED
        self._bury(record)
        if self.keeper is not None:
            self.keeper.gone(agent_id)
        await asyncio.to_thread(shutil.rmtree, self.work_dir(agent_id), ignore_errors=True)
        self.events.append(EventKind.PAGLET_DISPOSED, agent_id, "disposed")

    def _bury(self, record: AgentRecord) -> None:
        self._agents.pop(record.agent_id, None)
        self._gone[record.agent_id] = record
        while len(self._gone) > self.limits.tombstones:
            self._gone.popitem(last=False)

    def _on_exit(self, handle: ChildHandle, info: ExitInfo) -> None:
        record = self._agents.get(handle.agent_id) or self._gone.get(handle.agent_id)
        if record is None or record.handle is not handle:
            return
        record.exit = info
        if info.reason in (
            ExitReason.DISPOSED,
            ExitReason.START_FAILED,
            ExitReason.MOVED,
            ExitReason.IN_DOUBT,
            ExitReason.DEACTIVATED,
        ):
            return
        if record.status in (PagletStatus.MOVED, PagletStatus.IN_DOUBT):
            return
        if record.status is PagletStatus.STOPPING and info.reason is ExitReason.HOST_STOPPED:
            return
        record.status = PagletStatus.CRASHED
        kind = EventKind.PAGLET_HUNG if info.reason is ExitReason.HUNG else EventKind.PAGLET_CRASHED
        self.events.append(
            kind,
            record.agent_id,
            info.detail,
            {"reason": info.reason.value, "code": info.code, "class_path": record.class_path},
        )
        log.warning("paglet %s %s", record.agent_id, info.detail)
        if self.keeper is not None:
            self.keeper.crashed(record, info)

    def _on_note(self, handle: ChildHandle, note: ipc.Note) -> None:
        try:
            kind = EventKind(note.kind)
        except ValueError:
            log.warning("paglet %s sent an unknown note %r", handle.agent_id, note.kind)
            return
        self.events.append(kind, handle.agent_id, note.detail, note.data)

    def _on_call(self, handle: ChildHandle, call: ipc.Call) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(handle, call))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, handle: ChildHandle, call: ipc.Call) -> None:
        value: Any = None
        error: ipc.ErrorRecord | None = None
        if self.call_handler is None:
            no_calls = RequestError(f"this host answers no calls from paglets ({call.method!r})")
            handle.answer(call.id, None, ipc.ErrorRecord.from_exception(no_calls))
            return
        try:
            value = await self.call_handler(handle.agent_id, call.method, call.args)
        except Exception as exc:  # noqa: BLE001 - the paglet gets it by name
            error = ipc.ErrorRecord.from_exception(exc)
        handle.answer(call.id, value, error)

    # -- watching ---------------------------------------------------------------

    async def watch(self) -> None:
        """Forever: kill hung children and children over their memory limit."""
        interval = self.limits.heartbeat_interval
        measure = self.limits.memory_limit is not None or self.limits.max_child_memory is not None
        while True:
            await asyncio.sleep(interval)
            self.sweep_heartbeats()
            self.sweep_idle()
            if measure:
                await self.sweep_memory(self.limits.memory_limit)

    def sweep_idle(self) -> None:
        """Deactivate paglets idle for longer than their ``deactivation_policy``."""
        if self.keeper is None:
            return
        now = time.monotonic()
        for record in list(self._agents.values()):
            idle = record.idle_timeout
            if (
                idle is not None
                and record.status is PagletStatus.ACTIVE
                and record.pending == 0
                and now - record.last_used > idle
            ):
                record.last_used = now  # once per idle period, even if it fails
                self.keeper.deactivate_idle(record.agent_id)

    def sweep_heartbeats(self) -> None:
        now = time.monotonic()
        for record in list(self._agents.values()):
            handle = record.handle
            if record.status is not PagletStatus.ACTIVE or handle is None:
                continue
            if now - handle.last_beat > self.limits.hang_timeout:
                log.warning("paglet %s missed heartbeats; killing it", record.agent_id)
                handle.kill(ExitReason.HUNG)

    async def sweep_memory(self, limit: int | None) -> None:
        """Measure the children's memory (for admission); kill those over ``limit``."""
        handles = {
            r.handle.pid: r.handle
            for r in self._agents.values()
            if r.status is PagletStatus.ACTIVE and r.handle is not None
        }
        sizes = await asyncio.to_thread(_rss_of, list(handles)) if handles else {}
        self.admission.record(list(sizes.values()))
        for pid, rss in sizes.items():
            if limit is not None and rss > limit:
                log.warning("paglet %s uses %d bytes (limit %d)", handles[pid].agent_id, rss, limit)
                handles[pid].kill(ExitReason.MEMORY_LIMIT)

    # -- closing ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise HostNotRunningError("the host is stopping; it starts no new paglets")

    def live_count(self) -> int:
        """Paglets with a process here, or getting one (see `paglets.runtime.admission`)."""
        return sum(1 for r in self._agents.values() if r.status in LIVE)

    def admit(self, what: str) -> None:
        """Refuse to start ``what`` when the host is full.

        Creates call it here; arrivals and activations call it before they
        commit to anything (a transfer's header check, an activation's start).

        Raises:
            HostFullError: at ``max_paglets`` live paglets or at ``max_child_memory``.
        """
        self.admission.check(self.live_count(), what)

    async def close(self) -> None:
        """Stop every child (``on_disposing`` is not run), then the spawner."""
        self._closing = True
        records = [r for r in self._agents.values() if r.handle and r.exit is None]
        for record in records:
            record.status = PagletStatus.STOPPING
        await asyncio.gather(
            *(
                r.handle.stop(self.limits.stop_grace, ExitReason.HOST_STOPPED)
                for r in records
                if r.handle
            ),
            return_exceptions=True,
        )
        for task in self._calls:
            task.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
        await self.spawner.close()


def _policy(data: dict[str, Any] | None) -> RestartPolicy | None:
    try:
        return None if data is None else RestartPolicy.from_dict(data)
    except PagletError:
        return None


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a remembered result's exception as seen; callers read it later."""
    if not fut.cancelled():
        fut.exception()


def _rss_of(pids: list[int]) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            sizes[pid] = psutil.Process(pid).memory_info().rss
    return sizes
