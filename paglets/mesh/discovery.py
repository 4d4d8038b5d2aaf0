"""``Discovery``: announce this host over zeroconf and find the others on the LAN.

The host registers ``<name>._paglets._tcp.local.`` with its name, URL, mesh
version and protocol version in TXT records, and browses the same type; each
host found is handed to ``on_found`` (the gossiper then talks to it). An
announcement is a hint, never trusted: one with a bad name or URL is ignored,
and the gossiper sends the mesh key to the URL, and merges what it answers,
only after the host there proves it holds the key (`paglets.mesh.hello`). Only
python-zeroconf's asyncio API is used, on the host's own loop: no thread, no
blocking call. `republish` re-creates the announcement after an address change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zeroconf import IPVersion, NonUniqueNameException, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from paglets.core.errors import ProtocolError
from paglets.core.ids import IdKind, is_valid_id
from paglets.wire.mesh import MESH_SERVICE_TYPE, check_url

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from zeroconf import Zeroconf

log = logging.getLogger(__name__)

_RESOLVE_MS = 3000


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one host announces in its TXT records."""

    name: str
    url: str
    mesh_version: str
    protocol_version: int

    def properties(self) -> dict[str, str]:
        return {
            "name": self.name,
            "url": self.url,
            "mesh_version": self.mesh_version,
            "protocol_version": str(self.protocol_version),
        }

    @classmethod
    def from_properties(cls, props: dict[str, str | None]) -> Announcement | None:
        """Decode TXT properties; ``None`` for anything that is not a paglets host."""
        name, url, mesh_version = props.get("name"), props.get("url"), props.get("mesh_version")
        protocol = props.get("protocol_version") or ""
        if not (name and url and mesh_version is not None and protocol.isdigit()):
            return None
        if not is_valid_id(name, IdKind.HOST) or len(protocol) > 5:  # noqa: PLR2004
            return None
        try:
            check_url(url)
        except ProtocolError:
            return None
        return cls(name, url.rstrip("/"), mesh_version, int(protocol))


def service_info(announcement: Announcement, address: str, port: int) -> AsyncServiceInfo:
    """The zeroconf service of one host."""
    label = announcement.name.replace(".", "-")[:63]
    return AsyncServiceInfo(
        MESH_SERVICE_TYPE,
        f"{label}.{MESH_SERVICE_TYPE}",
        port=port,
        properties=announcement.properties(),
        parsed_addresses=[address],
        server=f"{label}-paglets.local.",
    )


class Discovery:
    """See the module docstring.

    Args:
        on_found: called with each announcement seen (other hosts and, once, this one).
        interfaces: addresses to run mDNS on; empty means every interface.
    """

    def __init__(
        self, on_found: Callable[[Announcement], None], interfaces: Sequence[str] = ()
    ) -> None:
        self._on_found = on_found
        self._interfaces = list(interfaces)
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.found: dict[str, Announcement] = {}

    def __repr__(self) -> str:
        state = "running" if self._zc is not None else "stopped"
        return f"<Discovery {state} found={sorted(self.found)}>"

    async def start(
        self, announcement: Announcement | None = None, address: str = "", port: int = 0
    ) -> None:
        """Start mDNS, announce this host (unless ``announcement`` is None) and browse."""
        kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
        if self._interfaces:
            kwargs["interfaces"] = self._interfaces
        self._zc = AsyncZeroconf(**kwargs)
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, MESH_SERVICE_TYPE, handlers=[self._on_change]
        )
        if announcement is not None:
            await self._register(announcement, address, port)

    async def _register(self, announcement: Announcement, address: str, port: int) -> None:
        assert self._zc is not None  # noqa: S101 - start() set it
        info = service_info(announcement, address, port)
        try:
            await self._zc.async_register_service(info, allow_name_change=True)
        except NonUniqueNameException:  # pragma: no cover - allow_name_change renames
            log.warning("zeroconf name %s is taken; not announcing", info.name)
            return
        self._info = info
        log.info("announced %s on zeroconf at %s", announcement.url, info.parsed_addresses())

    async def republish(self, announcement: Announcement, address: str, port: int) -> None:
        """Announce again after an address change: new sockets, new records.

        The sockets of vanished addresses are dropped first, so no goodbye goes
        out on an address that no longer exists.
        """
        zc, info = self._zc, self._info
        update = getattr(zc, "async_update_interfaces", None)  # zeroconf >= 0.150
        if zc is None or info is None or update is None:
            await self.stop()
            await self.start(announcement, address, port)
            return
        await update()
        new = service_info(announcement, address, port)
        new.name = info.name  # keep the name zeroconf settled on
        await zc.async_update_service(new)
        self._info = new
        log.info("announced %s on zeroconf at %s", announcement.url, new.parsed_addresses())

    async def stop(self) -> None:
        """Say goodbye, stop browsing and close the sockets."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        zc, self._zc = self._zc, None
        browser, self._browser = self._browser, None
        self._info = None
        if browser is not None:
            await browser.async_cancel()
        if zc is not None:
            await zc.async_close()

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            return
        task = asyncio.get_running_loop().create_task(
            self._resolve(zeroconf, service_type, name), name=f"zeroconf-resolve {name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, _RESOLVE_MS):
            log.debug("zeroconf: no answer resolving %s", name)
            return
        found = Announcement.from_properties(info.decoded_properties)
        if found is None:
            log.debug("zeroconf: %s is not a paglets host", name)
            return
        self.found[found.name] = found
        self._on_found(found)


async def browse(timeout: float, interfaces: Sequence[str] = ()) -> list[Announcement]:
    """The paglets hosts announced on the LAN within ``timeout`` seconds, by name."""
    discovery = Discovery(lambda _found: None, interfaces)
    await discovery.start()
    try:
        await asyncio.sleep(timeout)
    finally:
        await discovery.stop()
    return sorted(discovery.found.values(), key=lambda a: a.name)
