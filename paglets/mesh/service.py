"""``MeshService``: membership, gossip, zeroconf and ``--bind-public`` for one host.

The host creates one, lets it `install` its routes and background tasks on
the application, asks it to `bind` the listening sockets (it knows about
``--bind-public``) and then to `join` the mesh through ``--peer`` URLs. After
that the service answers what the mesh looks like: `hosts`, `resolve` a host
name to a URL, and `movement_target`, which refuses hosts of another mesh
version or offline ones.

Who belongs to the mesh is `Membership`'s business: the host's identity, the
pinned identities of its peers and the hellos (`paglets.mesh.hello`) by which
a URL proves it holds the mesh key before this host sends it there.

Background work, each one ``cleanup_ctx`` of the host's application: gossip
rounds, the pins-file watcher, the zeroconf announcement and browser (when
discovery is on) and the LAN-address watcher (``--bind-public`` without
addresses).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from typing import TYPE_CHECKING

from paglets._version import __version__
from paglets.core.errors import (
    ConfigurationError,
    HostNotFoundError,
    PagletError,
    TransferError,
)
from paglets.core.events import EventKind
from paglets.mesh.bindpublic import Listeners, detect_lan_address, url_for, watch_address
from paglets.mesh.codeversion import git_commit
from paglets.mesh.gossip import Gossiper
from paglets.mesh.membership import Membership
from paglets.mesh.peers import Change, MergeResult, PeerTable
from paglets.mesh.routes import add_routes
from paglets.wire.mesh import HostRecord
from paglets.wire.records import PROTOCOL_VERSION
from paglets.wire.relay import RELAY_PROPERTY, relay_url
from paglets.wire.targets import select

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from aiohttp import web

    from paglets.config import HostConfig
    from paglets.mesh.discovery import Announcement, Discovery
    from paglets.mesh.hello import Hello, HelloReply
    from paglets.persistence.events import EventLog
    from paglets.transport.guard import ConnectionGuard
    from paglets.wire.resources import HostResources
    from paglets.wire.targets import Target, TargetQuery

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 5.0
FAREWELL_TIMEOUT = 1.0  # how long a stopping host waits to tell its peers it leaves
_EVENT_OF_CHANGE = {
    "joined": EventKind.MESH_HOST_JOINED,
    "replaced": EventKind.MESH_HOST_JOINED,
    "moved": EventKind.MESH_HOST_MOVED,
    "offline": EventKind.MESH_HOST_OFFLINE,
    "online": EventKind.MESH_HOST_ONLINE,
    "forgotten": EventKind.MESH_HOST_FORGOTTEN,
}


class MeshService:
    """See the module docstring.

    Args:
        config: the host's options.
        events: the host's event log.
        paglet_count: how many paglets the host holds now.
        on_url: called with the host's new local URL after a rebind.
        resources: this host's resources now (`paglets.mesh.resources.ResourceSampler`),
            published in its record at every beat; ``None``: none published.
    """

    def __init__(
        self,
        config: HostConfig,
        events: EventLog,
        paglet_count: Callable[[], int],
        on_url: Callable[[str], None],
        resources: Callable[[], HostResources | None] = lambda: None,
    ) -> None:
        self.config = config
        self.events = events
        self._paglet_count = paglet_count
        self._on_url = on_url
        self._resources = resources
        me = HostRecord(
            name=config.name,
            url="",
            mesh_version=config.mesh_version,
            protocol_version=PROTOCOL_VERSION,
            version=__version__,
            tags=list(config.tags),
            properties=dict(config.properties),
            incarnation=time.time_ns() // 1000,
            trusts_code=config.trust_code_by_value,
        )
        self.table = PeerTable(me, config.offline_after)
        self.membership = Membership(config, events, self.table)
        self.listeners: Listeners | None = None
        self.gossiper: Gossiper | None = None
        self.discovery: Discovery | None = None
        self._ready = asyncio.Event()
        self._reported: set[tuple[str, str]] = set()
        self._preparing: asyncio.Future[str | None] | None = None

    def __repr__(self) -> str:
        return f"<MeshService {self.config.name} {self.table!r}>"

    @property
    def url(self) -> str:
        """The URL this host publishes to the mesh."""
        return self.table.me.url

    # -- wiring into the host ----------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add the mesh routes and the background tasks to the host's application."""
        add_routes(app, self)
        app.cleanup_ctx.append(self._gossip_ctx)
        app.cleanup_ctx.append(self._pins_ctx)
        if self.config.discovery_enabled:
            app.cleanup_ctx.append(self._discovery_ctx)
        if self.config.bind_public is True:
            app.cleanup_ctx.append(self._address_ctx)

    async def bind(self, runner: web.AppRunner, guard: ConnectionGuard | None = None) -> str:
        """Bind the listening sockets, watched by ``guard``; returns the host's local URL."""
        cfg = self.config
        addresses = cfg.bind_addresses
        if cfg.bind_public is True:
            found = await asyncio.to_thread(detect_lan_address)
            if found is None:
                raise ConfigurationError(
                    "--bind-public found no LAN address (no interface is up with an IPv4 "
                    "address other than loopback or link-local); pass --bind-public ADDRESS"
                )
            addresses = (found,)
        commit = await self.prepare()  # the identity: before anyone can gossip with us
        self.listeners = Listeners(runner, guard, cfg.server_ssl())
        await self.listeners.bind(addresses, cfg.port)
        self.table.set_me(self.table.me.replace(commit=commit, **await self._urls()))
        self.membership.check_own_record()
        return self.listeners.urls[0]

    async def bind_relay(self) -> str:
        """Connect mode: bind nothing; the host's URL is the one its hub relays for it."""
        cfg = self.config
        assert cfg.connect_to is not None  # noqa: S101 - only in connect mode
        commit = await self.prepare()
        url = relay_url(cfg.connect_to, cfg.name)
        properties = {**self.table.me.properties, RELAY_PROPERTY: cfg.connect_to}
        self.table.set_me(
            self.table.me.replace(commit=commit, url=url, urls=[url], properties=properties)
        )
        self.membership.check_own_record()
        return url

    async def _urls(self) -> dict[str, object]:
        assert self.listeners is not None  # noqa: S101 - bind() set it
        cfg = self.config
        urls = self.listeners.urls
        published = cfg.public_url
        if published is None:
            address = self.listeners.addresses[0]
            if ipaddress.ip_address(address).is_unspecified:
                lan = await asyncio.to_thread(detect_lan_address)
                scheme = "https" if cfg.tls_cert is not None else "http"
                published = url_for(lan or "127.0.0.1", self.listeners.port, scheme)
            else:
                published = urls[0]
        return {"url": published, "urls": list(dict.fromkeys([published, *urls]))}

    def prepare(self) -> asyncio.Future[str | None]:
        """Load what binding needs from disk: the identity and pins, and the code's commit.

        `Host.start` starts it first thing, so that its waits on the disk (a new
        identity is flushed) pass beside the rest of the start; binding awaits it.
        The same loading each call; its result is the commit.
        """
        if self._preparing is None:
            self._preparing = asyncio.ensure_future(self._prepare())
        return self._preparing

    async def _prepare(self) -> str | None:
        _, commit = await asyncio.gather(self.membership.load(), asyncio.to_thread(git_commit))
        return commit

    async def join(self) -> None:
        """Exchange tables with every ``--peer``; a taken host name fails the start.

        Unreachable peers are only logged: they are tried again every round.

        Raises:
            ConfigurationError: another live host of the mesh already has this name.
        """
        gossiper = self.gossiper
        if gossiper is None:
            raise PagletError("the mesh service was not installed on the host's application")
        peers = self.config.peers
        if self.config.connect_to is not None:
            peers = (self.config.connect_to,)
        for peer in peers:
            gossiper.add_candidate(peer)
        results = await asyncio.gather(*(self._join_one(gossiper, peer) for peer in peers))
        for result in results:
            for dup in result.duplicates if result is not None else ():
                if dup.name == self.config.name:
                    raise ConfigurationError(
                        f"host name {dup.name!r} is already used by {dup.refused_url} in this "
                        "mesh; pick another --name"
                    )
        self._ready.set()

    async def _join_one(self, gossiper: Gossiper, peer: str) -> MergeResult | None:
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                return await gossiper.exchange(peer)
        except TimeoutError:
            log.warning("peer %s did not answer within %g s; will retry", peer, JOIN_TIMEOUT)
        except PagletError as exc:
            log.warning("cannot join through %s: %s; will retry", peer, exc)
        return None

    # -- the mesh view -----------------------------------------------------------

    def hosts(
        self,
        *,
        online: bool | None = None,
        tags: Iterable[str] = (),
        mesh_version: str | None = None,
    ) -> list[HostRecord]:
        """Every host known, this one first; filtered by online state, tags, mesh version."""
        wanted = set(tags)
        return [
            h
            for h in self._fresh_table().hosts()
            if (online is None or h.online == online)
            and wanted <= set(h.tags)
            and (mesh_version is None or h.mesh_version == mesh_version)
        ]

    def targets(self, query: TargetQuery) -> list[Target]:
        """The online hosts that meet ``query``, best first (`paglets.wire.targets`)."""
        return select(self._fresh_table().hosts(), query)

    def lookup(self, name_or_url: str) -> HostRecord:
        """The host of that name or URL.

        Raises:
            HostNotFoundError: no host of the mesh has that name or URL.
        """
        table = self._fresh_table()
        if name_or_url.startswith(("http://", "https://")):
            record = table.find_url(name_or_url)
        else:
            record = table.get(name_or_url)
        if record is None:
            known = ", ".join(h.name for h in table.hosts())
            raise HostNotFoundError(
                f"no host {name_or_url!r} in the mesh of {self.config.name} (known: {known})"
            )
        return record

    def is_member(self, url: str) -> bool:
        """Whether ``url`` is a URL of this mesh: of a host in the peer table (this one
        included) or of a configured ``--peer``.

        The one test of whether this host may send its API key to ``url``
        (`paglets.calls.HostCalls.check_member`); a URL a paglet or a caller
        names is not a member by being named.
        """
        url = url.rstrip("/")
        return self.table.find_url(url) is not None or url in self.config.peers

    def is_proven(self, url: str) -> bool:
        """Whether the host at ``url`` proved, by a hello, that it holds the mesh key.

        A proof is dropped when ``url`` stops answering or refuses the key. Without
        a key, a URL counts as proven once a gossip exchange with it succeeded.
        """
        url = url.rstrip("/")
        if self.table.me.answers_on(url):
            return True
        return self.gossiper is not None and self.gossiper.is_proven(url)

    async def prove(self, url: str) -> bool:
        """Make the host at ``url`` prove it holds the mesh key (a hello), unless it has.

        Sends no key. Returns whether it is proven; a failure is logged, not raised.
        """
        if self.is_proven(url):
            return True
        if self.gossiper is None:
            return False
        try:
            await self.gossiper.prove(url)
        except PagletError as exc:
            log.warning("%s is not proven a member of the mesh: %s", url, exc)
            return False
        return self.gossiper.is_proven(url) or self.config.api_key is None

    def answer_hello(self, hello: Hello, sockname: object) -> HelloReply:
        """This host's proof that it holds the mesh key (see `Membership.answer_hello`)."""
        return self.membership.answer_hello(hello, sockname)

    def resolve(self, name_or_url: str) -> str:
        """The URL of a host given by name; a URL is returned as it is.

        Raises:
            HostNotFoundError: no host of the mesh has that name.
        """
        if name_or_url.startswith(("http://", "https://")):
            return name_or_url.rstrip("/")
        return self.lookup(name_or_url).url

    def movement_target(self, name_or_url: str) -> HostRecord:
        """The host a paglet may move to, checked: online, same mesh and protocol version.

        Raises:
            HostNotFoundError: no host of the mesh has that name or URL.
            TransferError: the host is offline, or runs another mesh or protocol version.
        """
        target = self.lookup(name_or_url)
        if target.name == self.config.name:
            return target
        mine = self.config.mesh_version
        if target.mesh_version != mine:
            raise TransferError(
                f"host {target.name} ({target.url}) runs mesh version {target.mesh_version!r} "
                f"but {self.config.name} runs {mine!r}: paglets move only between hosts of "
                "the same --mesh-version"
            )
        if target.protocol_version != PROTOCOL_VERSION:
            raise TransferError(
                f"host {target.name} speaks protocol {target.protocol_version}, "
                f"{self.config.name} speaks {PROTOCOL_VERSION}"
            )
        if not target.online:
            age = time.time() - target.last_seen
            raise TransferError(
                f"host {target.name} ({target.url}) is offline: last seen {age:.1f} s ago"
            )
        return target

    def receive_gossip(self, sent_at: float, records: list[HostRecord]) -> list[HostRecord]:
        """Merge what a peer sent; returns our table for the answer."""
        self.on_merge(self.table.merge(records, sent_at))
        return self._fresh_table().hosts()

    def _fresh_table(self) -> PeerTable:
        self.table.set_me(
            self.table.me.replace(paglets=self._paglet_count(), resources=self._resources())
        )
        self._report(self.table.sweep())
        return self.table

    # -- events --------------------------------------------------------------------

    def on_merge(self, result: MergeResult) -> None:
        """Log what a merge changed, each refused duplicate name and refused record once."""
        self._report(result.changes)
        self.membership.report(result)
        for dup in result.duplicates:
            key = (dup.name, dup.refused_url)
            if key in self._reported:
                continue
            self._reported.add(key)
            log.warning(
                "host name %r is claimed by %s but already used by %s; keeping the first",
                dup.name,
                dup.refused_url,
                dup.kept_url,
            )
            self.events.append(
                EventKind.MESH_DUPLICATE_NAME,
                detail=f"host name {dup.name!r} claimed by {dup.refused_url} is already "
                f"used by {dup.kept_url}; kept the first",
                data={"name": dup.name, "kept_url": dup.kept_url, "refused_url": dup.refused_url},
            )

    def _report(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.name == self.config.name:
                continue
            self.events.append(
                _EVENT_OF_CHANGE[change.what],
                detail=f"host {change.name} ({change.url}) {change.what}",
                data={"name": change.name, "url": change.url},
            )
            log.info("mesh: host %s (%s) %s", change.name, change.url, change.what)

    # -- background tasks ------------------------------------------------------------

    async def _gossip_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        cfg = self.config
        async with Gossiper(
            self.table,
            self.on_merge,
            interval=cfg.gossip_interval,
            api_key=cfg.api_key,
            ssl=cfg.client_ssl(),
        ) as gossiper:
            self.gossiper = gossiper
            task = asyncio.create_task(self._gossip(gossiper), name=f"gossip-{cfg.name}")
            try:
                yield
            finally:
                await _cancel(task)
                if self._ready.is_set():
                    await gossiper.farewell(FAREWELL_TIMEOUT)
                self.gossiper = None

    async def _pins_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        async def watch() -> None:
            await self._ready.wait()
            await self.membership.watch()

        task = asyncio.create_task(watch(), name=f"pins-{self.config.name}")
        try:
            yield
        finally:
            await _cancel(task)
            await self.membership.close()

    async def _gossip(self, gossiper: Gossiper) -> None:
        await self._ready.wait()

        def beat() -> None:
            self.table.beat(paglets=self._paglet_count(), resources=self._resources())
            self._report(self.table.sweep())

        await gossiper.run(beat)

    async def _discovery_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        # zeroconf is imported only by hosts that announce themselves (about 70 ms)
        from paglets.mesh.discovery import Discovery  # noqa: PLC0415

        discovery = Discovery(self._on_found, self.config.discovery_interfaces)
        self.discovery = discovery
        task = asyncio.create_task(self._announce(discovery), name=f"zeroconf-{self.config.name}")
        try:
            yield
        finally:
            await _cancel(task)
            self.discovery = None
            await discovery.stop()

    async def _announce(self, discovery: Discovery) -> None:
        await self._ready.wait()
        await discovery.start(*self._announcement())

    def _announcement(self) -> tuple[Announcement, str, int]:
        assert self.listeners is not None  # noqa: S101 - bound before ready
        me = self.table.me
        from paglets.mesh.discovery import Announcement  # noqa: PLC0415 - as in _discovery_ctx

        announcement = Announcement(me.name, me.url, me.mesh_version, me.protocol_version)
        address = self.listeners.addresses[0]
        if ipaddress.ip_address(address).is_unspecified:
            address = _host_of(me.url)
        return announcement, address, self.listeners.port

    def _on_found(self, found: Announcement) -> None:
        if found.name == self.config.name or self.gossiper is None:
            return
        self.gossiper.add_candidate(found.url, now=True, discovered=True)

    async def _address_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._watch(), name=f"address-watch-{self.config.name}")
        try:
            yield
        finally:
            await _cancel(task)

    async def _watch(self) -> None:
        await self._ready.wait()
        assert self.listeners is not None  # noqa: S101 - bound before ready
        await watch_address(
            self.listeners.addresses[0], self._rebind, self.config.address_poll_interval
        )

    async def _rebind(self, new: str) -> None:
        assert self.listeners is not None  # noqa: S101 - bound before ready
        old_url = self.url
        await self.listeners.rebind(self.listeners.addresses[0], new)
        self.table.set_me(self.table.me.replace(**await self._urls()))
        self._on_url(self.listeners.urls[0])
        self.events.append(
            EventKind.MESH_ADDRESS_CHANGED,
            detail=f"address changed: now {self.url} (was {old_url})",
            data={"url": self.url, "previous_url": old_url},
        )
        if self.gossiper is not None:
            for peer in self.config.peers:
                self.gossiper.add_candidate(peer, now=True)
        if self.discovery is not None:
            await self.discovery.republish(*self._announcement())


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception:
            log.exception("mesh task %s failed", task.get_name())


def _host_of(url: str) -> str:
    rest = url.split("://", 1)[1].split("/", 1)[0]
    return rest.rsplit(":", 1)[0].strip("[]")
