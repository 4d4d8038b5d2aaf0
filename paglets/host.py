"""``Host``: one paglets node. Composes the layers; owns no logic of its own.

::

    async with Host(name="alpha", state_dir=tmp) as host:
        client = AsyncHostClient(host.url)
        ...

A host serves the ``/v1`` control API over aiohttp, starts each paglet in a
child process forked from a warm zygote, and logs context events. Stopping it
stops accepting requests first, then stops children within a bound, then
closes its sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web

from paglets._version import __version__
from paglets.artifacts.routes import ArtifactService
from paglets.byvalue.local import forget_local_host, register_local_host
from paglets.byvalue.routes import add_routes as add_code_routes
from paglets.byvalue.store import CodeStore
from paglets.calls import HostCalls
from paglets.config import HostConfig
from paglets.core.errors import ConfigurationError, HostNotRunningError
from paglets.core.events import EventKind
from paglets.core.status import HostStatus
from paglets.durability.service import DurabilityService
from paglets.launch.startup import start_paglets
from paglets.mesh.resources import ResourceSampler
from paglets.mesh.service import MeshService
from paglets.monitors import Monitors
from paglets.movement.service import TransferService
from paglets.persistence.events import EventLog
from paglets.runtime.privileges import protect_host
from paglets.runtime.spawner import Spawner, SubprocessSpawner, WarmPool, ZygoteSpawner
from paglets.runtime.supervisor import Supervisor
from paglets.runtime.watchdog import watch
from paglets.services.compute.hooks import ComputeHooks
from paglets.services.registry import ServiceRegistry
from paglets.transport.app import ApiContext, build_app
from paglets.transport.guard import ConnectionGuard, ConnectionLimits, GuardedSite
from paglets.transport.serverlog import server_logger
from paglets.userinfo.routes import UserInfoService
from paglets.wire.modules import ModulePolicy
from paglets.wire.records import PROTOCOL_VERSION, HostInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import TracebackType

    from paglets.mesh.relayclient import RelayClient
    from paglets.mesh.relayhub import RelayHub
    from paglets.persistence.store import StoreOpening
    from paglets.runtime.privileges import ChildUser

log = logging.getLogger(__name__)

CLOSE_WAIT = 2.0
"""Seconds a stopping host waits, at most, for its last connections' sockets to close."""

CONNECT_WAIT = 15.0
"""Seconds a connect-mode host waits for its first session before it starts anyway."""


class Host:
    """A paglets host; see the module docstring.

    Args:
        config: all options; or pass them as keywords (``Host(name="a", port=0)``).
        zygote: a `ZygoteSpawner` for this config whose process was already launched
            (`ZygoteSpawner.launch`), so that it boots while this host imports and
            starts; ``paglets-host`` does that. The host owns and stops it.
        store: its journal (``config.store_path``) being opened already, so that the
            disk's waits pass while this host imports; ``paglets-host`` does that.
            The host owns and closes it once started.
    """

    def __init__(
        self,
        config: HostConfig | None = None,
        *,
        zygote: ZygoteSpawner | None = None,
        store: StoreOpening | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either a HostConfig or keyword options, not both")
        self.config = config or HostConfig(**options)
        self.status = HostStatus.CREATED
        self.started_at = 0.0
        self._url = ""
        self._runner: web.AppRunner | None = None
        self._guard: ConnectionGuard | None = None
        self._stop_requested = asyncio.Event()
        self._start_lock = asyncio.Lock()
        cfg = self.config
        self.policy = ModulePolicy.from_sources(
            cfg.allow_modules, os.environ.get("PAGLETS_ALLOW_MODULES")
        )
        self.events = EventLog(cfg.name)
        self.child_user = cfg.child_account()
        spawner: Spawner
        if zygote is not None and cfg.spawner != "zygote":
            raise TypeError(f"a zygote was given to a host whose spawner is {cfg.spawner!r}")
        if store is not None and (store.path, store.sync) != (cfg.store_path, cfg.transfer_fsync):
            raise TypeError(f"{store!r} is not this host's journal ({cfg.store_path})")
        if zygote is not None:
            spawner = zygote
        elif cfg.spawner == "zygote":
            spawner = ZygoteSpawner(
                preload=cfg.preload, secrets=cfg.secret_env, user=self.child_user
            )
        else:
            spawner = SubprocessSpawner(secrets=cfg.secret_env, user=self.child_user)
        if cfg.warm_children:
            spawner = WarmPool(spawner, cfg.warm_children)
        self.supervisor = Supervisor(
            host_name=cfg.name,
            host_url="",
            work_root=cfg.home / "work",
            spawner=spawner,
            policy=self.policy,
            events=self.events,
            limits=cfg.limits,
        )
        self.supervisor.child_user = self.child_user
        self.supervisor.file_roots = tuple(str(root) for root in cfg.all_file_roots)
        self.code = self.supervisor.code = CodeStore(
            cfg.home / "code", cfg.name, trusted=cfg.trust_code_by_value, fsync=cfg.transfer_fsync
        )
        self.mesh = MeshService(
            cfg,
            self.events,
            lambda: len(self.supervisor.list()),
            self._set_url,
            ResourceSampler(cfg.home / "work", self.supervisor.paglet_counts),
        )
        self.calls = HostCalls(cfg, self.supervisor, self.mesh)
        self.supervisor.call_handler = self.calls
        self.transfers = TransferService(
            config=cfg,
            supervisor=self.supervisor,
            mesh=self.mesh,
            events=self.events,
            policy=self.policy,
            calls=self.calls,
            store=store,
        )
        self.monitors = Monitors(
            config=cfg,
            supervisor=self.supervisor,
            mesh=self.mesh,
            events=self.events,
            calls=self.calls,
        )
        self.durability = DurabilityService(
            config=cfg,
            supervisor=self.supervisor,
            events=self.events,
            store=self.transfers.store,
            calls=self.calls,
        )
        self.services = ServiceRegistry(cfg, self.supervisor, self.mesh, self.calls)
        self.user_info = UserInfoService(cfg, self.calls, self.services)
        self.artifacts = ArtifactService(cfg, self.calls, self.services)
        self.compute = ComputeHooks(cfg, self.supervisor, self.calls, self.services)
        # a hub relays for connect-mode hosts; a connect-mode host keeps a session to one
        self.relay_hub: RelayHub | None = None
        if cfg.public_url is not None:  # imported only where used: a host starts sooner
            from paglets.mesh.relayhub import RelayHub  # noqa: PLC0415

            self.relay_hub = RelayHub(cfg)
        self.relay: RelayClient | None = None

    def _set_url(self, url: str) -> None:
        self._url = url
        # a hub behind a proxy hands out its public URL (with its path prefix), not the bound one
        self.supervisor.host_url = self.config.public_url or url

    def __repr__(self) -> str:
        return f"<Host {self.config.name} {self.status.value} {self._url or 'unbound'}>"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        """The base URL of the API; known once started."""
        if not self._url:
            raise HostNotRunningError(f"host {self.name} has not started")
        return self._url

    def info(self) -> HostInfo:
        """This host's description, as ``GET /v1/host`` returns it."""
        return HostInfo(
            name=self.name,
            url=self.config.public_url or self._url,
            version=__version__,
            protocol_version=PROTOCOL_VERSION,
            mesh_version=self.config.mesh_version,
            pid=os.getpid(),
            status=self.status.value,
            started_at=self.started_at,
            paglets=len(self.supervisor.list()),
            peers=list(self.config.peers),
        )

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Bind, start the zygote and serve. Idempotent."""
        async with self._start_lock:
            if self.status is not HostStatus.CREATED:
                if self.status is HostStatus.RUNNING:
                    return
                raise HostNotRunningError(f"host {self.name} is {self.status.value}")
            self.status = HostStatus.STARTING
            cfg = self.config
            protect_host()
            preparing = self.mesh.prepare()  # from disk, beside what follows (until bind)
            try:
                await asyncio.to_thread(cfg.home.mkdir, parents=True, exist_ok=True)
                if self.child_user is not None:
                    await asyncio.to_thread(self._open_home_to_children, self.child_user)
            except BaseException:
                await _abandon(preparing)
                await self.supervisor.spawner.close()  # a zygote launched ahead of the start
                self.status = HostStatus.STOPPED
                raise
            guard = self._guard = ConnectionGuard(
                ConnectionLimits(cfg.header_timeout, cfg.idle_timeout, cfg.max_connections)
            )
            app = build_app(
                ApiContext(
                    supervisor=self.supervisor,
                    events=self.events,
                    host_info=self.info,
                    status=lambda: self.status,
                    api_key=cfg.api_key,
                    max_body=cfg.max_body,
                    read_timeout=cfg.read_timeout,
                    debug_errors=cfg.debug_errors,
                ),
                guard,
            )
            self._install(app)
            runner = web.AppRunner(
                app,
                handle_signals=False,
                access_log=None,
                keepalive_timeout=cfg.idle_timeout,
                logger=server_logger,
            )
            try:
                await runner.setup()
                await self._bind(runner, guard)
                for url in self._local_urls():
                    register_local_host(url)
                await self.mesh.join()
                await self.transfers.started([self._url, *self.mesh.table.me.urls])
                await self.durability.recover()
                await self.services.start_eager()
                await start_paglets(self.supervisor, cfg.startup)
            except BaseException:
                await _abandon(preparing)
                self._forget_local_urls()
                if self.relay is not None:
                    await self.relay.stop()
                await runner.cleanup()
                await self.supervisor.spawner.close()  # if setup failed before starting it
                guard.close()
                self.status = HostStatus.STOPPED
                raise
            self._runner = runner
            self.started_at = time.time()
            self.status = HostStatus.RUNNING
            self.events.append(EventKind.HOST_STARTED, detail=f"listening on {self._url}")
            log.info("host %s listening on %s", self.name, self._url)

    def _install_user_parts(self, app: web.Application) -> None:
        """The routes that serve the person: notices (user-info) and artifacts."""
        self.user_info.install(app)
        self.artifacts.install(app)

    def _install(self, app: web.Application) -> None:
        """Add every service's routes and background work to the host's application."""
        app.cleanup_ctx.append(self._children_ctx)
        app.cleanup_ctx.append(self._watchdog_ctx)
        self.mesh.install(app)
        self.transfers.install(app)
        self.durability.install(app)
        self.monitors.install(app)
        self.services.install(app)
        if self.relay_hub is not None:
            self.relay_hub.install(app)
        self._install_user_parts(app)
        add_code_routes(app, self.code, self.config.read_timeout)

    async def _bind(self, runner: web.AppRunner, guard: ConnectionGuard) -> None:
        """Listen (the host's URL is where), or in connect mode open the hub session."""
        if self.config.connect_mode:
            self._set_url(await self.mesh.bind_relay())
            await self._connect(runner)
        else:
            self._set_url(await self.mesh.bind(runner, guard))

    async def _connect(self, runner: web.AppRunner) -> None:
        """Connect mode: open the session to the hub, serving with no listening socket.

        Raises:
            ConfigurationError: the hub refused this host's API key.
        """
        server = runner.server
        assert server is not None  # noqa: S101 - set up
        from paglets.mesh.relayclient import LocalServer, RelayClient  # noqa: PLC0415

        relay = self.relay = RelayClient(self.config, LocalServer(server, runner.app))
        relay.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_WAIT):
                await relay.settled.wait()
        if relay.refused:
            raise ConfigurationError(
                f"the hub {self.config.connect_to} refused this host: {relay.refused}; "
                "give it the mesh's API key (PAGLETS_API_KEY or --api-key-file)"
            )
        if not relay.connected.is_set():
            log.warning(
                "hub %s not reached within %g s (%s); still trying",
                self.config.connect_to,
                CONNECT_WAIT,
                relay.last_error,
            )

    def _local_urls(self) -> list[str]:
        """The URLs this host answers on, which clients in its process may call it by."""
        return [self._url, *self.mesh.table.me.urls] if self._url else []

    def _forget_local_urls(self) -> None:
        for url in self._local_urls():
            forget_local_host(url)

    def _open_home_to_children(self, user: ChildUser) -> None:
        sup = self.supervisor
        inbox = self.transfers.receiver.inbox
        user.prepare_home(
            self.config.home,
            searchable=(sup.work_root, sup.files_root, sup.spool_dir.parent, inbox),
            owned=(sup.checkpoints, sup.spool_dir),
        )

    async def _children_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        await self.supervisor.spawner.start()
        yield
        await self.services.close()
        await self.supervisor.close()
        await self.compute.close()
        await self.calls.close()

    async def _watchdog_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(watch(self.supervisor), name=f"watchdog-{self.name}")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def stop(self) -> None:
        """Stop accepting, stop children within a bound, close sockets. Idempotent."""
        if self.status in (HostStatus.STOPPING, HostStatus.STOPPED, HostStatus.CREATED):
            if self.status is HostStatus.CREATED:
                self.status = HostStatus.STOPPED
            return
        self.status = HostStatus.STOPPING
        self.events.append(EventKind.HOST_STOPPING, detail="stopping")
        self._forget_local_urls()
        runner, self._runner = self._runner, None
        if self.relay is not None:
            await self.relay.stop()
        if runner is not None:
            sites = [site for site in runner.sites if isinstance(site, GuardedSite)]
            await runner.cleanup()
            if self._guard is not None:
                self._guard.close()
            # Connections closed by the cleanup finish closing on a later turn of the
            # loop, and one the kernel accepted just before the listening socket closed
            # takes a few: its transport is made, its protocol is told of it (and
            # closes it at once, the guard being closed), and its socket closes. An
            # event loop closed before then would leak the sockets.
            for site in sites:
                if not await site.wait_closed(CLOSE_WAIT):
                    log.warning(
                        "host %s: connections of %s still open at stop", self.name, site.name
                    )
        self.status = HostStatus.STOPPED
        self._stop_requested.set()
        log.info("host %s stopped", self.name)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- running as a daemon ----------------------------------------------------

    def request_stop(self) -> None:
        """Ask `serve_forever` to stop the host."""
        self._stop_requested.set()

    async def serve_forever(self, on_ready: Callable[[Host], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT (a second SIGINT exits at once) or `request_stop`.

        Signal handlers are in place before the host starts, so a signal at any
        moment stops it in order. ``on_ready`` is called once it is listening.
        """
        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_signal(sig: signal.Signals) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1 and sig is signal.SIGINT:
                os._exit(130)
            log.info("host %s: %s received, stopping", self.name, sig.name)
            self.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.start()
            if on_ready is not None and not self._stop_requested.is_set():
                on_ready(self)
            await self._stop_requested.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` of a start that failed and wait for it: its own error is not the start's."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
