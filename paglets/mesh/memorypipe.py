"""Two in-memory transports joined end to end: an in-process client talks to an in-process server.

A connect-mode host serves what its hub relays with its own application
(`paglets.mesh.relayclient.LocalServer`): an HTTP client and the application's
server protocol, both in its process and its loop. `memory_pair` joins the two
protocols without a socket: what one end writes is handed to the other end's
protocol on the next turn of the loop, in order, with no system call and no copy
through the kernel; for a moving paglet's body streamed through the host, that
is half of the work the body costs it.

Flow control is a socket's: an end whose protocol paused reading gets nothing
until it resumes, and the bytes waiting for it (at most about `HIGH_WATER` before
the writer is told to pause writing, as a socket's buffer tells it) stay with
it. Closing an end lets the other one read what was written first, then both
lose the connection; aborting drops what waits at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp.client_proto import ResponseHandler

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

__all__ = ["HIGH_WATER", "MemoryConnector", "MemoryTransport", "memory_pair"]

log = logging.getLogger(__name__)

HIGH_WATER: Final = 1 << 20
"""Bytes waiting for an end that does not read before its writer is paused."""


class MemoryTransport(asyncio.Transport):
    """One end of a `memory_pair`: writes go to the other end's protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._peer: MemoryTransport | None = None
        self._inbox: deque[bytes] = deque()  # written by the peer, not yet taken
        self._waiting = 0  # bytes in the inbox
        self._reading = True
        self._scheduled = False
        self._closing = False
        self._peer_done = False  # the peer closed: lose the connection once the inbox is taken
        self._lost = False
        self._writer_paused = False  # this end's protocol was told to pause writing

    def __repr__(self) -> str:
        return f"<MemoryTransport waiting={self._waiting} closing={self._closing}>"

    # -- writing --------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        """Hand ``data`` to the other end (dropped once this end is closing, as a socket's)."""
        peer = self._peer
        if self._closing or peer is None or not data:
            return
        peer._take(bytes(data))  # noqa: SLF001 - the other end of the same pair

    def writelines(self, list_of_data: Any) -> None:
        """Hand the chunks to the other end as one."""
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        """Bytes written by this end that the other has not taken yet."""
        return 0 if self._peer is None else self._peer._waiting  # noqa: SLF001

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return HIGH_WATER // 4, HIGH_WATER

    # -- reading --------------------------------------------------------------------

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        self._schedule()

    def is_reading(self) -> bool:
        return self._reading and not self._lost

    def _take(self, data: bytes) -> None:
        """Bytes from the other end, for this end's protocol."""
        if self._lost:
            return
        self._inbox.append(data)
        self._waiting += len(data)
        self._schedule()
        peer = self._peer
        if self._waiting > HIGH_WATER and peer is not None:
            peer._writer_pause()  # noqa: SLF001

    def _schedule(self) -> None:
        if (
            not self._scheduled
            and not self._lost
            and ((self._inbox and self._reading) or self._peer_done)
        ):
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        try:
            while self._inbox and self._reading and not self._lost:
                data = self._inbox.popleft()
                self._waiting -= len(data)
                self._protocol.data_received(data)
        except Exception:  # a protocol that fails: the pair ends, as a socket's would
            log.exception("an in-memory connection's protocol failed; closing it")
            self.abort()
            return
        peer = self._peer
        if peer is not None and self._waiting <= HIGH_WATER // 4:
            peer._writer_resume()  # noqa: SLF001
        if self._peer_done and not self._inbox:
            self._lose()

    def _writer_pause(self) -> None:
        if not self._writer_paused and not self._lost:
            self._writer_paused = True
            self._protocol.pause_writing()

    def _writer_resume(self) -> None:
        if self._writer_paused and not self._lost:
            self._writer_paused = False
            self._protocol.resume_writing()

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Close this end; the other reads what was written first, then both are lost."""
        if self._closing:
            return
        self._closing = True
        peer = self._peer
        if peer is not None:
            peer._peer_closed()  # noqa: SLF001
        self._loop.call_soon(self._lose)

    def abort(self) -> None:
        """Close both ends now; what waits is dropped."""
        self._closing = True
        self._inbox.clear()
        self._waiting = 0
        peer = self._peer
        if peer is not None and not peer._lost:  # noqa: SLF001
            peer._closing = True  # noqa: SLF001
            peer._inbox.clear()  # noqa: SLF001
            peer._waiting = 0  # noqa: SLF001
            self._loop.call_soon(peer._lose)  # noqa: SLF001
        self._loop.call_soon(self._lose)

    def _peer_closed(self) -> None:
        self._peer_done = True
        self._closing = True
        self._schedule()

    def _lose(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._inbox.clear()
        self._waiting = 0
        peer = self._peer
        if peer is not None and not peer._lost:  # noqa: SLF001
            peer._peer_closed()  # noqa: SLF001
        try:
            self._protocol.connection_lost(None)
        except Exception:
            log.exception("an in-memory connection's protocol failed as it closed")

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        del name
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)  # noqa: S101 - a stream protocol only
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


def memory_pair(
    loop: asyncio.AbstractEventLoop, server: asyncio.Protocol, client: asyncio.Protocol
) -> tuple[MemoryTransport, MemoryTransport]:
    """Join ``server`` and ``client`` end to end; both are told the connection is made."""
    ours, theirs = MemoryTransport(loop, server), MemoryTransport(loop, client)
    ours._peer, theirs._peer = theirs, ours  # noqa: SLF001 - the two ends of one pair
    server.connection_made(ours)
    client.connection_made(theirs)
    return ours, theirs


class MemoryConnector(aiohttp.BaseConnector):
    """Connects a client session to an in-process server, each request over a fresh
    `memory_pair` (no socket, no system call).

    Args:
        factory: makes the server's protocol (an `aiohttp.web.Server`).
    """

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        super().__init__(force_close=True)
        self._server_factory = factory

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        del req, traces, timeout
        loop = asyncio.get_running_loop()
        protocol = ResponseHandler(loop)
        server = self._server_factory()
        assert isinstance(server, asyncio.Protocol)  # noqa: S101 - a stream protocol
        memory_pair(loop, server, protocol)
        return protocol
