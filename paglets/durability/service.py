"""``DurabilityService``: the keeper of a host's paglets on disk.

It is the supervisor's `Keeper` (`paglets.runtime.records`): it writes each
paglet's row in the host's store as it starts and goes, deactivates and
activates paglets, restarts crashed ones by their restart policy, writes
every active paglet's checkpoint when the host stops and recovers them when
it starts. The package docstring (`paglets.durability`) tells the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paglets.core.errors import PagletError, RequestError, StorageError
from paglets.core.events import EventKind
from paglets.core.policy import RestartMode, RestartPolicy
from paglets.core.status import ExitReason, PagletStatus
from paglets.durability.routes import add_routes
from paglets.durability.timers import WakeTimers, wake_time
from paglets.movement.faults import crash_point, delay_point
from paglets.persistence.checkpoints import next_generation
from paglets.persistence.files import fsync_dir, fsync_file, quarantine
from paglets.persistence.records import PagletRecord
from paglets.runtime.handle import ExitInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aiohttp import web

    from paglets.calls import HostCalls
    from paglets.config import HostConfig
    from paglets.persistence.events import EventLog
    from paglets.persistence.store import AsyncStore, Store
    from paglets.runtime.records import AgentRecord
    from paglets.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)

ACTIVE, INACTIVE, BROKEN = "active", "inactive", "broken"
RECOVERY_CONCURRENCY = 8
MAX_GENERATION = 2**62  # a paglet's word for its checkpoint's (SQLite holds up to 2**63 - 1)


class DurabilityService:
    """See the module docstring; it is the supervisor's `Keeper`."""

    def __init__(
        self,
        *,
        config: HostConfig,
        supervisor: Supervisor,
        events: EventLog,
        store: Callable[[], AsyncStore],
        calls: HostCalls,
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.events = events
        self._store = store
        self._activating: dict[str, asyncio.Future[None]] = {}
        self._settling: dict[str, asyncio.Future[None]] = {}
        self._restarting: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.timers = WakeTimers(supervisor, self._spawn)
        self._generations: dict[str, int] = {}  # the newest of each paglet's, on this host
        supervisor.keeper = self
        supervisor.fsync = config.transfer_fsync
        calls.register("paglet.deactivate", self._call_deactivate)
        calls.register("paglet.checkpointed", self._call_checkpointed)

    def __repr__(self) -> str:
        return f"<DurabilityService {self.config.name} timers={len(self.timers)}>"

    # -- the supervisor's keeper ---------------------------------------------------------

    def generation(self, agent_id: str) -> int:
        generation = next_generation(self._generations.get(agent_id, 0))
        self._generations[agent_id] = generation
        return generation

    def _saw(self, agent_id: str, generation: int) -> None:
        """A durable state of ``agent_id`` of this generation exists: the next start is newer."""
        self._generations[agent_id] = max(self._generations.get(agent_id, 0), generation)

    async def created(
        self,
        record: AgentRecord,
        state: dict[str, Any] | None,
        envelope: str | None,
        *,
        flushed: bool = False,
    ) -> None:
        agent_id = record.agent_id
        if envelope is None:
            row = PagletRecord(
                agent_id,
                record.class_path,
                ACTIVE,
                detail=_detail(record, state=state or {}),
                generation=record.generation,
            )
            self._spawn(self._store().put_paglet(row))
            return
        # Awaited: the envelope may be dropped only once this row is durable. An
        # arriving or restored envelope is the paglet's first checkpoint: its process
        # kept it there before it ran a hook (`checkpoints.keep`), and may have written
        # a newer checkpoint since; that one's row is not replaced by this older one.
        # The envelope's owner (the receiver, the sender) drops it once it has
        # journaled the start, so a host killed in between still finds it.
        checkpoint = self.supervisor.checkpoint_path(agent_id)
        detail = _detail(record)
        fsync = self.supervisor.fsync
        await delay_point("keeper.before_keep")

        def keep(store: Store) -> None:
            if Path(envelope) != checkpoint:
                if fsync:
                    _flush_kept(Path(envelope), checkpoint, data=not flushed)
                crash_point("keeper.after_keep")
            store.put_paglet(
                PagletRecord(
                    agent_id,
                    record.class_path,
                    ACTIVE,
                    envelope=str(checkpoint),
                    detail=detail,
                    generation=record.generation,
                )
            )

        await self._store().run(keep)

    def gone(self, agent_id: str) -> None:
        self.timers.cancel(agent_id)
        self._generations.pop(agent_id, None)  # a later arrival's is newer by the clock
        self._spawn(self._forget(agent_id))

    async def _forget(self, agent_id: str) -> None:
        checkpoint = self.supervisor.checkpoint_path(agent_id)

        def forget(store: Store) -> None:
            store.delete_paglet(agent_id)
            with contextlib.suppress(OSError):
                checkpoint.unlink()

        await self._store().run(forget)

    def settled(self, agent_id: str) -> bool:
        return all(
            pending is None or pending.done()
            for pending in (self._settling.get(agent_id), self._restarting.get(agent_id))
        )

    async def settle(self, agent_id: str) -> None:
        for pending in (self._settling.get(agent_id), self._restarting.get(agent_id)):
            if pending is not None:
                with contextlib.suppress(PagletError):
                    await asyncio.shield(pending)

    def deactivate_idle(self, agent_id: str) -> None:
        self._spawn(self._deactivate_logged(agent_id, None))

    # -- supervision ---------------------------------------------------------------------

    def crashed(self, record: AgentRecord, info: ExitInfo) -> None:
        policy = record.restart_policy or RestartPolicy()
        if not _restarts_after(policy, info):
            return
        now = time.monotonic()
        record.restarts[:] = [t for t in record.restarts if now - t < policy.window]
        recent = len(record.restarts)
        if recent >= policy.max_restarts:
            self._fail(record, info, policy)
            return
        record.restarts.append(now)
        record.status = PagletStatus.RESTARTING
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._restarting[record.agent_id] = fut
        self._spawn(self._restart(record, policy.delay(recent), info, fut))

    async def _restart(
        self, record: AgentRecord, delay: float, info: ExitInfo, fut: asyncio.Future[None]
    ) -> None:
        agent_id = record.agent_id
        try:
            await asyncio.sleep(delay)
            row = await self._store().get_paglet(agent_id)
            if row is None:
                raise StorageError(f"paglet {agent_id} has no durable state to restart from")
            self.supervisor.release_inactive(agent_id)
            try:
                await self._start(row, record.created_at, record.restart_policy)
            except PagletError:
                self.supervisor.forget(agent_id)
                self.supervisor.hold_inactive(agent_id, record.class_path, record.created_at)
                raise
            again = self.supervisor.get(agent_id)
            again.restarts = record.restarts
            self.events.append(
                EventKind.PAGLET_RESTARTED,
                agent_id,
                f"restarted after it {info.detail} ({len(record.restarts)} recent restarts)",
                {"reason": info.reason.value, "restarts": len(record.restarts)},
            )
        except PagletError as exc:
            log.warning("paglet %s could not be restarted: %s", agent_id, exc)
            failed = self.supervisor.get(agent_id)
            failed.status = PagletStatus.FAILED
            failed.exit = ExitInfo(info.reason, info.code, f"{info.detail}; restart failed: {exc}")
            self.events.append(EventKind.PAGLET_FAILED, agent_id, failed.exit.detail)
            fut.set_exception(exc)
            fut.exception()
        else:
            fut.set_result(None)
        finally:
            self._restarting.pop(agent_id, None)

    def _fail(self, record: AgentRecord, info: ExitInfo, policy: RestartPolicy) -> None:
        detail = (
            f"{info.detail}; it was restarted {len(record.restarts)} times within "
            f"{policy.window:g} s (max_restarts {policy.max_restarts}), so it is left failed"
        )
        record.status = PagletStatus.FAILED
        record.exit = ExitInfo(info.reason, info.code, detail)
        self.events.append(
            EventKind.PAGLET_FAILED,
            record.agent_id,
            detail,
            {"reason": info.reason.value, "restarts": len(record.restarts)},
        )
        log.warning("paglet %s %s", record.agent_id, detail)

    async def activate(self, agent_id: str) -> None:
        running = self._activating.get(agent_id)
        if running is not None:
            await asyncio.shield(running)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._activating[agent_id] = fut
        try:
            await self._activate(agent_id)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        else:
            fut.set_result(None)
        finally:
            del self._activating[agent_id]

    async def _activate(self, agent_id: str) -> None:
        settling = self._settling.get(agent_id)
        if settling is not None:
            await asyncio.shield(settling)
        record = self.supervisor.get(agent_id)
        if record.status is not PagletStatus.INACTIVE:
            return
        row = await self._store().get_paglet(agent_id)
        if row is None:
            raise StorageError(f"paglet {agent_id} is inactive but its record is gone")
        self.supervisor.admit(f"inactive paglet {agent_id}")  # it stays inactive if full
        self.timers.cancel(agent_id)
        self.supervisor.release_inactive(agent_id)
        try:
            await self._start(row, record.created_at)
        except PagletError as exc:
            await self._broken(row, exc)
            raise
        self.events.append(EventKind.PAGLET_ACTIVATED, agent_id, "activated")

    async def _start(
        self, row: PagletRecord, since: float, policy: RestartPolicy | None = None
    ) -> None:
        self._saw(row.agent_id, row.generation)
        if row.envelope is None and self.supervisor.checkpoint_path(row.agent_id).exists():
            # a checkpoint written just before the host died, its row not yet updated
            row = dataclasses.replace(
                row, envelope=str(self.supervisor.checkpoint_path(row.agent_id))
            )
        state = row.detail.get("state") if row.envelope is None else None
        if policy is None and isinstance(row.detail.get("restart_policy"), dict):
            policy = RestartPolicy.from_dict(row.detail["restart_policy"])
        try:
            await self.supervisor.create(
                row.class_path,
                state,
                row.agent_id,
                arrival="activation",
                envelope=row.envelope,
                restart_policy=policy,
            )
        except PagletError:
            if row.agent_id not in {r.agent_id for r in self.supervisor.list()}:
                self.supervisor.hold_inactive(row.agent_id, row.class_path, since)
            raise

    async def _broken(self, row: PagletRecord, exc: PagletError) -> None:
        """A checkpoint that cannot be started: quarantine it, say so, keep the host."""
        reason = f"cannot activate from {row.envelope or 'its creation state'}: {exc}"
        if row.envelope is not None:
            with contextlib.suppress(StorageError, FileNotFoundError):
                await asyncio.to_thread(quarantine, Path(row.envelope), self.config.home, reason)
        await self._store().put_paglet(
            PagletRecord(
                row.agent_id,
                row.class_path,
                BROKEN,
                None,
                {"error": reason},
                generation=row.generation,
            )
        )
        record = self.supervisor.get(row.agent_id)
        record.status = PagletStatus.CRASHED
        record.exit = ExitInfo(ExitReason.START_FAILED, None, reason)

    # -- operations -----------------------------------------------------------------------

    async def deactivate(self, agent_id: str, wake_at: float | None = None) -> None:
        """Write the paglet to disk and stop its process; see the module docstring.

        Raises:
            StorageError: the checkpoint could not be written; the paglet stays active.
        """
        record = self.supervisor.get(agent_id)
        if record.status is PagletStatus.INACTIVE:
            await self._set_wake(agent_id, record.class_path, wake_at)
            return
        if agent_id in self._settling:
            await asyncio.shield(self._settling[agent_id])
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settling[agent_id] = fut
        try:
            path, generation = await self.supervisor.persist(agent_id, deactivate=True)
            self._saw(agent_id, generation)
            await self._store().put_paglet(
                PagletRecord(
                    agent_id,
                    record.class_path,
                    INACTIVE,
                    path,
                    _detail(record, wake_at=wake_at),
                    generation=generation,
                )
            )
            await self.supervisor.stop_inactive(agent_id)
        finally:
            fut.set_result(None)
            del self._settling[agent_id]
        self.timers.schedule(agent_id, wake_at)
        when = f" until {time.ctime(wake_at)}" if wake_at else ""
        self.events.append(
            EventKind.PAGLET_DEACTIVATED, agent_id, f"deactivated{when}", {"wake_at": wake_at}
        )

    async def checkpoint(self, agent_id: str) -> None:
        """Write the paglet's state to disk now, between two messages."""
        await self.supervisor.wake(agent_id)
        path, generation = await self.supervisor.persist(agent_id, deactivate=False)
        await self._checkpointed(agent_id, path, generation)

    async def _checkpointed(self, agent_id: str, path: str, generation: int) -> None:
        if Path(path) != self.supervisor.checkpoint_path(agent_id):
            raise RequestError(f"a checkpoint of {agent_id} must be written to its own file")
        record = self.supervisor.get(agent_id)
        self._saw(agent_id, generation)
        await self._store().put_paglet(
            PagletRecord(
                agent_id, record.class_path, ACTIVE, path, _detail(record), generation=generation
            )
        )
        self.events.append(EventKind.PAGLET_CHECKPOINTED, agent_id, "checkpointed")

    async def _set_wake(self, agent_id: str, class_path: str, wake_at: float | None) -> None:
        row = await self._store().get_paglet(agent_id)
        if row is not None:
            await self._store().put_paglet(
                PagletRecord(
                    agent_id,
                    class_path,
                    INACTIVE,
                    row.envelope,
                    {**row.detail, "wake_at": wake_at},
                    generation=row.generation,
                )
            )
        self.timers.schedule(agent_id, wake_at)

    # -- host start and stop ----------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add the routes and the stop-time checkpoints to the host's application."""
        add_routes(app, self)
        app.cleanup_ctx.append(self._ctx)

    async def _ctx(self, _app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.timers.cancel_all()
            await self._persist_all()
            # Records written or deleted just before the stop must reach the
            # store: a cancelled delete would bring a disposed paglet back.
            pending = list(self._tasks)
            if pending:
                _done, late = await asyncio.wait(pending, timeout=self.supervisor.limits.stop_grace)
                for task in late:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _persist_all(self) -> None:
        """Before the host stops: every active paglet writes its checkpoint."""
        active = [r.agent_id for r in self.supervisor.list() if r.status is PagletStatus.ACTIVE]
        limit = asyncio.Semaphore(RECOVERY_CONCURRENCY)

        async def one(agent_id: str) -> None:
            async with limit:
                try:
                    path, generation = await asyncio.wait_for(
                        self.supervisor.persist(agent_id, deactivate=False),
                        self.supervisor.limits.stop_grace,
                    )
                    await self._checkpointed(agent_id, path, generation)
                except (PagletError, TimeoutError) as exc:
                    log.warning("paglet %s: no checkpoint at stop (%s)", agent_id, exc)

        await asyncio.gather(*(one(a) for a in active))

    async def recover(self) -> None:
        """After the host starts: list inactive paglets, start the active ones."""
        known = {r.agent_id for r in self.supervisor.list()}
        limit = asyncio.Semaphore(RECOVERY_CONCURRENCY)
        now = time.time()

        async def start(row: PagletRecord) -> None:
            async with limit:
                try:
                    await self._start(row, now)
                except PagletError as exc:
                    await self._broken(row, exc)
                    log.error(  # noqa: TRY400 - the reason is the message; no traceback
                        "paglet %s could not be recovered: %s", row.agent_id, exc
                    )
                    return
                self.events.append(
                    EventKind.PAGLET_RECOVERED,
                    row.agent_id,
                    "recovered from " + ("its checkpoint" if row.envelope else "its creation"),
                )

        starting = []
        for row in await self._store().paglets():
            if row.agent_id in known:
                continue
            if row.status == INACTIVE:
                self.supervisor.hold_inactive(row.agent_id, row.class_path, row.updated)
                wake_at = row.detail.get("wake_at")
                self.timers.schedule(
                    row.agent_id, wake_at if isinstance(wake_at, int | float) else None
                )
            elif row.status == ACTIVE:
                starting.append(start(row))
        await asyncio.gather(*starting)

    # -- calls from paglets -----------------------------------------------------------------

    async def _call_deactivate(self, agent_id: str, args: dict[str, Any]) -> None:
        wake_at = args.get("wake_at")
        if wake_at is not None:
            wake_at = wake_time(wake_at, time.time())
        # after the current handler: the paglet is waiting for this answer
        self._spawn(self._deactivate_logged(agent_id, wake_at))

    async def _deactivate_logged(self, agent_id: str, wake_at: float | None) -> None:
        try:
            await self.deactivate(agent_id, wake_at)
        except PagletError as exc:
            log.warning("paglet %s asked to be deactivated but stays active: %s", agent_id, exc)
            self.events.append(EventKind.MESSAGE_FAILED, agent_id, f"deactivate failed: {exc}")

    async def _call_checkpointed(self, agent_id: str, args: dict[str, Any]) -> None:
        generation = args.get("generation")
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise RequestError("a checkpoint's generation must be an integer")
        if not 0 < generation < MAX_GENERATION:
            raise RequestError(f"a checkpoint's generation must lie in (0, {MAX_GENERATION})")
        await self._checkpointed(agent_id, str(args.get("envelope")), generation)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _flush_kept(envelope: Path, checkpoint: Path, *, data: bool) -> None:
    """Flush to disk the envelope the paglet's process kept as its checkpoint.

    A small arrival's file was not flushed: its journal row carried it until
    now. The envelope is flushed by its own name, which stays the same file
    (unless it was renamed to the checkpoint); a newer checkpoint at that name
    was flushed by the process that wrote it. Without ``data`` (a larger
    arrival, whose bytes its receiver flushed before it committed) only the
    checkpoint's name is: the file's content has not changed since, and the
    link the process made is an entry of the checkpoints' directory.
    """
    try:
        if data:
            fsync_file(envelope if envelope.exists() else checkpoint)
        fsync_dir(checkpoint.parent)
    except OSError as exc:  # it runs; only its restart after a power cut is at risk
        log.error(  # noqa: TRY400 - the reason is the message; no traceback
            "cannot flush %s, the checkpoint of a paglet, to disk: %s", checkpoint, exc
        )


def _detail(record: AgentRecord, **extra: Any) -> dict[str, Any]:
    """What a paglet's row keeps besides its state: its restart policy."""
    detail: dict[str, Any] = dict(extra)
    if record.restart_policy is not None:
        detail["restart_policy"] = record.restart_policy.to_dict()
    return detail


def _restarts_after(policy: RestartPolicy, info: ExitInfo) -> bool:
    """Whether ``policy`` restarts a paglet whose process ended as ``info`` says."""
    if policy.mode is RestartMode.NEVER:
        return False
    clean = info.reason is ExitReason.EXIT_CODE and info.code == 0
    return policy.mode is RestartMode.ALWAYS or not clean
