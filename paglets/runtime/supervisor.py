"""``Supervisor``: the host's table of paglets and the operations on them.

It starts children through a spawner, keeps one `AgentRecord` per paglet
(`paglets.runtime.records`), has messages delivered (`paglets.runtime.delivery`),
reads state, deactivates, moves away and disposes, and answers its children's
exits, notes and calls. It never runs paglet code; the watchdog
(`paglets.runtime.watchdog`) kills hung children and children over their
memory limit.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from paglets.byvalue.refs import parse_code_ref
from paglets.byvalue.store import CodeStore
from paglets.core.errors import (
    HostNotRunningError,
    PagletCrashedError,
    PagletDisposedError,
    PagletError,
    PagletInactiveError,
    PagletMovedError,
    PagletNotFoundError,
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
from paglets.runtime.delivery import Delivery
from paglets.runtime.handle import ChildHandle, ExitInfo
from paglets.runtime.records import AgentRecord, SupervisorLimits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets.persistence.events import EventLog
    from paglets.runtime.privileges import ChildUser
    from paglets.runtime.records import Keeper
    from paglets.runtime.spawner import ChildProcess, Spawner
    from paglets.wire.modules import ModulePolicy

log = logging.getLogger(__name__)


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
        # Seconds idle before deactivation, by paglet id, over its class's policy (services).
        self.idle_after: dict[str, float] = {}
        self.child_user: ChildUser | None = None  # children run as this user, if set
        self.file_roots: tuple[str, ...] = ()  # given to each paglet (the host's --file-root)
        self.spawner = spawner
        self.policy = policy
        # Classes shipped by value; the host gives it its trust (paglets.byvalue.store).
        self.code = CodeStore(work_root.parent / "code", host_name, trusted=False)
        self.events = events
        self.limits = limits or SupervisorLimits()
        self.admission = Admission(host_name, self.limits.max_paglets, self.limits.max_child_memory)
        self._agents: dict[str, AgentRecord] = {}
        self._gone: OrderedDict[str, AgentRecord] = OrderedDict()
        self.delivery = Delivery(self)
        self._closing = False
        self.call_handler: Callable[[str, str, dict[str, Any]], Awaitable[Any]] | None = None
        # Told of every child's end, whatever the reason (compute slots free a job's lease).
        self.exit_listeners: list[Callable[[str, ExitInfo], None]] = []
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

    def find(self, agent_id: str) -> AgentRecord | None:
        """The record of a paglet listed here (no tombstone), or None."""
        return self._agents.get(agent_id)

    def live(self, agent_id: str) -> tuple[AgentRecord, ChildHandle]:
        """The paglet's record and process; the error that says why not, if it has none."""
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
        envelope_flushed: bool = False,
    ) -> AgentRecord:
        """Start a paglet; returns once its creation (or arrival) hook has run.

        ``envelope`` starts it from a movement envelope instead of ``state``;
        ``arrival`` says which hook runs (``creation``, ``dispatch``, ``retract``,
        ``clone``, or ``restore`` for none). ``prepared``, a process that checked
        the envelope (`paglets.runtime.verify`), becomes the paglet instead of a
        new one; the caller closes it if this raises. ``envelope_flushed``: the
        envelope's bytes are on disk already (`Keeper.created`).
        """
        self._check_open()
        ref = parse_code_ref(class_path)
        if ref is None:
            module, _qualname = self.policy.check(class_path)
            code = ""
        else:  # shipped by value: only code this host may run (paglets.byvalue.store)
            module = "cloudpickle"  # what children rebuild such classes with
            raw = await self.code.code_for(ref)
            self.spawner.warm_code(class_path, raw)  # later children start with it built
            code = base64.b64encode(raw).decode()
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
                    code=code,
                    file_roots=list(self.file_roots),
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
        record.idle_timeout = self.idle_after.get(agent_id, handle.idle_timeout)
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
            await self.keeper.created(
                record, state if envelope is None else None, envelope, flushed=envelope_flushed
            )
        return record

    # -- moves and inactivity ---------------------------------------------------

    async def move(
        self, agent_id: str, kind: str, target: str | None, ticket: dict[str, Any] | None
    ) -> dict[str, str]:
        """Have the paglet dispatch, retract or clone itself; see `Delivery.move`."""
        return await self.delivery.move(agent_id, kind, target, ticket)

    def mark_moved(self, agent_id: str, host: str, url: str) -> None:
        """The paglet now lives at ``url``: from here on, callers are sent there."""
        record = self._agents.get(agent_id) or self._gone.get(agent_id)
        if record is None:  # known from the journal only (after a restart)
            record = AgentRecord(agent_id, "", PagletStatus.MOVED, time.time())
        record.moved_to = (host, url)
        record.status = PagletStatus.MOVED
        self.delivery.moved(agent_id, host, url)
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

    def awake(self, agent_id: str) -> bool:
        """Whether the paglet is active with nothing to wait for: `wake` would do nothing."""
        record = self._agents.get(agent_id)
        return (
            record is not None
            and record.status is PagletStatus.ACTIVE
            and (record.started is None or record.started.done())
            and (self.keeper is None or self.keeper.settled(agent_id))
        )

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
        _record, handle = self.live(agent_id)
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
        _record, handle = self.live(agent_id)
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
        for listener in self.exit_listeners:
            listener(record.agent_id, info)
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

    # -- closing ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise HostNotRunningError("the host is stopping; it starts no new paglets")

    def live_count(self) -> int:
        """Paglets with a process here, or getting one (see `paglets.runtime.admission`)."""
        return sum(1 for r in self._agents.values() if r.status in LIVE)

    def paglet_counts(self) -> tuple[int, int]:
        """``(active, inactive)``: paglets with a process (or getting one), and kept on disk."""
        records = self._agents.values()
        inactive = sum(1 for r in records if r.status is PagletStatus.INACTIVE)
        return sum(1 for r in records if r.status in LIVE), inactive

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
