"""``--bind-public``: find the LAN address, bind it, and follow it when it changes.

`detect_lan_address` picks the first IPv4 address of an interface that is up
and is neither loopback nor link-local. `Listeners` owns the host's
TCP sites (`paglets.transport.guard.GuardedSite`), so a changed address is a rebind: a site on
the new address (same port when it is free) starts before the old one stops.
`watch_address` polls the detected address and calls back on a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

from aiohttp import web

from paglets.core.errors import ConfigurationError

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Sequence

    from paglets.transport.guard import ConnectionGuard

log = logging.getLogger(__name__)


def detect_lan_address() -> str | None:
    """The first non-loopback, non-link-local IPv4 address of an interface that is up.

    Blocking (it reads the interface table): call it in a thread from async code.
    """
    import psutil  # noqa: PLC0415 - only hosts that bind a LAN address need it

    stats = psutil.net_if_stats()
    for name, addresses in psutil.net_if_addrs().items():
        stat = stats.get(name)
        if stat is None or not stat.isup:
            continue
        for address in addresses:
            if address.family != socket.AF_INET:
                continue
            ip = ipaddress.IPv4Address(address.address)
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                return str(ip)
    return None


def url_for(address: str, port: int, scheme: str = "http") -> str:
    """``http://address:port``, with brackets around an IPv6 address."""
    shown = f"[{address}]" if ":" in address else address
    return f"{scheme}://{shown}:{port}"


class Listeners:
    """The TCP sites of one host's runner: bind, rebind, and say where they listen.

    Args:
        runner: the host's set-up `aiohttp.web.AppRunner`.
        guard: watches every connection of every site (header timeout, cap), if given.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        guard: ConnectionGuard | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._runner = runner
        self._guard = guard
        self._ssl = ssl_context
        self._sites: list[tuple[str, web.BaseSite]] = []
        self.port = 0

    def __repr__(self) -> str:
        return f"<Listeners {self.addresses} port={self.port}>"

    @property
    def addresses(self) -> list[str]:
        """The addresses bound, in order."""
        return [address for address, _ in self._sites]

    @property
    def urls(self) -> list[str]:
        """One URL per bound address."""
        scheme = "http" if self._ssl is None else "https"
        return [url_for(address, self.port, scheme) for address in self.addresses]

    async def bind(self, addresses: Sequence[str], port: int) -> None:
        """Bind every address on ``port`` (0: any free port, then the same for the others)."""
        for address in addresses:
            site, bound = await self._start(address, port or self.port)
            self._sites.append((address, site))
            self.port = self.port or bound

    async def rebind(self, old: str, new: str) -> None:
        """Move the site on ``old`` to ``new``: the new one listens before the old one stops."""
        index = self.addresses.index(old)
        try:
            site, _ = await self._start(new, self.port)
        except OSError as exc:
            log.warning("cannot bind %s:%d (%s); taking any free port", new, self.port, exc)
            site, self.port = await self._start(new, 0)
        _, previous = self._sites[index]
        self._sites[index] = (new, site)
        with contextlib.suppress(OSError, RuntimeError):
            await previous.stop()

    async def _start(self, address: str, port: int) -> tuple[web.BaseSite, int]:
        """Start a site; returns it and the port it bound."""
        before = {_port_of(a) for a in self._runner.addresses}
        site: web.BaseSite
        if self._guard is None:
            site = web.TCPSite(self._runner, address, port, ssl_context=self._ssl)
        else:
            site = self._guard.site(self._runner, address, port, ssl_context=self._ssl)
        await site.start()
        if port:
            return site, port
        fresh = {_port_of(a) for a in self._runner.addresses} - before
        if not fresh:
            raise ConfigurationError(f"no port was bound on {address}")
        return site, fresh.pop()


def _port_of(address: object) -> int:
    return int(address[1]) if isinstance(address, tuple) else 0


async def watch_address(
    current: str,
    on_change: Callable[[str], Awaitable[None]],
    interval: float,
    detect: Callable[[], str | None] = detect_lan_address,
) -> None:
    """Poll the LAN address every ``interval`` s; await ``on_change(new)`` when it moves.

    An address that disappears with no replacement is waited out: the host
    keeps its site until a new address shows up. Runs until cancelled.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            found = await asyncio.to_thread(detect)
        except OSError as exc:  # pragma: no cover - psutil on an odd system
            log.warning("cannot read the network interfaces: %s", exc)
            continue
        if found is None or found == current:
            continue
        log.info("LAN address changed from %s to %s", current, found)
        try:
            await on_change(found)
        except (OSError, RuntimeError) as exc:
            log.warning("cannot rebind to %s: %s; will retry", found, exc)
            continue
        current = found
