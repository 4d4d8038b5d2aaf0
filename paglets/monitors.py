"""``Monitors``: a paglet is told when a paglet it watches goes down.

``self.context.monitor(agent_id, host)`` registers the calling paglet (the
watcher) with the host of the watched paglet. When the watched paglet crashes
(and is not restarted), fails (its restart policy gave up), is disposed, or its
host goes away, the watcher receives a one-way message of kind
``paglet.down`` with ``{"agent_id", "host", "reason", "detail"}``; ``reason``
is ``crashed``, ``failed``, ``disposed`` or ``host_offline``.

Both hosts follow their own event logs: the watched paglet's host sends the
message for the first three reasons, and the watcher's host for the last, when
its mesh view marks the other host offline. A watched paglet that moves takes
its watchers along. Registrations live in memory: they end with a host
restart, like the processes they watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from paglets.core.errors import PagletError, RequestError
from paglets.core.events import ContextEvent, EventKind
from paglets.core.ids import IdKind, check_id
from paglets.core.status import PagletStatus
from paglets.runtime.delivery import SendMode
from paglets.transport.body import json_response, read_json
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from paglets.calls import HostCalls
    from paglets.config import HostConfig
    from paglets.mesh.service import MeshService
    from paglets.persistence.events import EventLog
    from paglets.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)

DOWN = "paglet.down"
MONITORS: web.AppKey[Monitors] = web.AppKey("paglets.monitors.MONITORS")
_REASONS = {
    EventKind.PAGLET_CRASHED: "crashed",
    EventKind.PAGLET_HUNG: "crashed",
    EventKind.PAGLET_FAILED: "failed",
    EventKind.PAGLET_DISPOSED: "disposed",
}


@dataclass(frozen=True, slots=True)
class Watcher:
    """A paglet to tell, and the URL of its host."""

    agent_id: str
    url: str


class Monitors:
    """See the module docstring."""

    def __init__(
        self,
        *,
        config: HostConfig,
        supervisor: Supervisor,
        mesh: MeshService,
        events: EventLog,
        calls: HostCalls,
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.mesh = mesh
        self.events = events
        self.calls = calls
        self.watching: dict[str, set[Watcher]] = {}  # watched here -> watchers anywhere
        self.remote: dict[str, set[tuple[str, str]]] = {}  # host URL -> (watcher, watched)
        calls.register("paglet.monitor", self._call_monitor)

    def __repr__(self) -> str:
        return f"<Monitors watched={len(self.watching)} remote={len(self.remote)}>"

    # -- registering ------------------------------------------------------------------

    def watch(self, watched: str, watcher: Watcher) -> None:
        """Register ``watcher`` for the paglet ``watched`` of this host."""
        record = self.supervisor.get(watched)
        if record.moved_to is not None or record.status is PagletStatus.DISPOSED:
            raise RequestError(f"paglet {watched} is {record.status.value}; nothing to monitor")
        self.watching.setdefault(watched, set()).add(watcher)

    async def _call_monitor(self, agent_id: str, args: dict[str, Any]) -> None:
        watched = args.get("agent_id")
        host = args.get("host")
        if not isinstance(watched, str) or not watched:
            raise RequestError("monitor needs the id of the paglet to watch")
        check_id(watched, IdKind.AGENT)
        me = Watcher(agent_id, self.mesh.table.me.url)
        if self.calls.is_here(host if isinstance(host, str) else None):
            self.watch(watched, me)
            return
        url = self.mesh.resolve(str(host))
        await self._watch_at(url, watched, me)
        self.remote.setdefault(url, set()).add((agent_id, watched))

    async def _watch_at(self, url: str, watched: str, watcher: Watcher) -> None:
        """Register ``watcher`` with the host at ``url``, for its paglet ``watched``."""
        await (await self.calls.client(url)).request(
            "POST",
            f"{API_PREFIX}/paglets/{watched}/monitors",
            {"watcher": watcher.agent_id, "watcher_url": watcher.url},
        )

    # -- following the event log ------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add the routes and the event follower to the host's application."""
        add_routes(app, self)
        app.cleanup_ctx.append(self._ctx)

    async def _ctx(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._follow(), name=f"monitors-{self.config.name}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self) -> None:
        cursor = self.events.last_cursor
        while True:
            if not await self.events.wait_after(cursor, 30.0):
                continue
            batch = self.events.query(cursor, 1000)
            if not batch:
                # older than the log keeps in memory (or renumbered): start from now
                cursor = self.events.last_cursor
                continue
            for event in batch:
                cursor = event.cursor
                try:
                    await self._on_event(event)
                except Exception:
                    log.exception("monitors: handling %s failed", event.kind)

    async def _on_event(self, event: ContextEvent) -> None:
        if event.kind is EventKind.MESH_HOST_OFFLINE:
            await self._host_offline(str(event.data.get("url", "")), str(event.data.get("name")))
            return
        if event.kind is EventKind.TRANSFER_SENT and event.agent_id:
            await self._follow_move(event.agent_id, str(event.data.get("url", "")))
            return
        reason = _REASONS.get(event.kind)
        if reason is None or not event.agent_id or event.agent_id not in self.watching:
            return
        if reason == "crashed":
            status = self.supervisor.get(event.agent_id).status
            if status is not PagletStatus.CRASHED:
                return  # restarting: it is not down; or failed: that event follows
        watchers = self.watching.pop(event.agent_id)
        for watcher in watchers:
            await self._tell(watcher, event.agent_id, self.config.name, reason, event.detail)

    async def _host_offline(self, url: str, name: str) -> None:
        pairs = self.remote.pop(url.rstrip("/"), set())
        here = self.mesh.table.me.url
        for watcher, watched in pairs:
            detail = f"host {name} ({url}) went offline"
            await self._tell(Watcher(watcher, here), watched, name, "host_offline", detail)

    async def _follow_move(self, agent_id: str, url: str) -> None:
        watchers = self.watching.pop(agent_id, set())
        for watcher in watchers:
            try:
                await self._watch_at(url, agent_id, watcher)
            except PagletError as exc:
                log.warning("cannot carry a monitor of %s to %s: %s", agent_id, url, exc)

    async def _tell(
        self, watcher: Watcher, agent_id: str, host: str, reason: str, detail: str
    ) -> None:
        args = {"agent_id": agent_id, "host": host, "reason": reason, "detail": detail}
        try:
            if self.calls.is_here(watcher.url):
                await self.deliver(watcher.agent_id, args)
            else:
                # through the watcher's host, which then stops watching our host for it
                await (await self.calls.client(watcher.url)).request(
                    "POST", f"{API_PREFIX}/monitors/down", {"watcher": watcher.agent_id, **args}
                )
        except PagletError as exc:
            log.info("cannot tell %s that %s is down: %s", watcher.agent_id, agent_id, exc)

    async def deliver(self, watcher: str, args: dict[str, Any]) -> None:
        """Give a local watcher its ``paglet.down`` message, once."""
        for pairs in self.remote.values():
            pairs.discard((watcher, str(args["agent_id"])))
        await self.supervisor.delivery.send(watcher, DOWN, args, mode=SendMode.ONEWAY)


async def _monitor_route(request: web.Request) -> web.Response:
    """``POST /v1/paglets/{id}/monitors`` ``{"watcher", "watcher_url"}``."""
    monitors = request.app[MONITORS]
    cfg = monitors.config
    data = await read_json(request, cfg.max_body, cfg.read_timeout)
    if not isinstance(data, dict) or set(data) != {"watcher", "watcher_url"}:
        raise RequestError('a monitor is {"watcher": agent id, "watcher_url": its host URL}')
    watcher, url = data["watcher"], data["watcher_url"]
    if not isinstance(watcher, str) or not isinstance(url, str) or not watcher or not url:
        raise RequestError("'watcher' and 'watcher_url' must be non-empty strings")
    check_id(watcher, IdKind.AGENT)
    monitors.calls.check_member(url.rstrip("/"))  # it is told later, with the key
    monitors.watch(request.match_info["agent_id"], Watcher(watcher, url.rstrip("/")))
    return json_response({"watching": request.match_info["agent_id"]})


async def _down_route(request: web.Request) -> web.Response:
    """``POST /v1/monitors/down``: a watched paglet elsewhere went down; tell its watcher."""
    monitors = request.app[MONITORS]
    cfg = monitors.config
    data = await read_json(request, cfg.max_body, cfg.read_timeout)
    fields = {"watcher", "agent_id", "host", "reason", "detail"}
    if not isinstance(data, dict) or set(data) != fields:
        raise RequestError(f"a down notice has exactly the fields {sorted(fields)}")
    if not all(isinstance(data[k], str) for k in fields):
        raise RequestError("the fields of a down notice are strings")
    check_id(data["watcher"], IdKind.AGENT)
    check_id(data["agent_id"], IdKind.AGENT)
    check_id(data["host"], IdKind.HOST)
    watcher = data.pop("watcher")
    await monitors.deliver(watcher, data)
    return json_response({"delivered": True})


def add_routes(app: web.Application, monitors: Monitors) -> None:
    """Register the monitor routes on ``app``."""
    app[MONITORS] = monitors
    app.router.add_post(f"{API_PREFIX}/paglets/{{agent_id}}/monitors", _monitor_route)
    app.router.add_post(f"{API_PREFIX}/monitors/down", _down_route)
