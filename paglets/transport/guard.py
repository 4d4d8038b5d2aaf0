"""Connection limits before any request is read: a header clock and a connection cap.

aiohttp bounds the size of a request head (``max_line_size``, ``max_field_size``)
and closes a connection idle between requests (``keepalive_timeout``), but it has
no clock on the head itself: a client that sends half a head, a byte now and
then, holds its connection (and a file descriptor) for as long as it likes, and
a thousand such clients starve the host before any key is checked.

`ConnectionGuard` wraps the protocol of every accepted connection:

- **Header timeout.** A request head must arrive whole within
  ``header_timeout`` seconds, counted from the accept for the first request
  and from the first byte of each later one on a kept-alive connection; else
  the connection is closed. The guard knows a head has arrived when the host's
  middleware (`paglets.transport.app.front_middleware`) tells it
  (`ConnectionGuard.request_started`). A connection's clock is one timer that
  is moved, not made anew, for each request: when it fires before the deadline
  of a later head, it is set again for that deadline; when it fires between
  requests, it stops until the next head begins.
- **Connection cap.** At most ``max_connections`` connections are open. A new
  one over the cap closes the connection that has waited longest for a
  request head (a slow or idle client), so a client whose request arrives
  promptly always gets in; when every connection is busy with a request, the
  new one gets an immediate ``503 TooManyConnectionsError`` and is closed.
  The cap is kept below the process's limit on open files.
- **Routes served without the key** (``/health``, the mesh hello) stay on the
  header clock, and first to be closed at the cap, until they are answered: a
  client without the key cannot hold a connection by sending their body slowly.

The idle timeout between requests stays aiohttp's (``keepalive_timeout``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from aiohttp import web

from paglets.core.errors import ConfigurationError, TooManyConnectionsError
from paglets.wire import strict_json
from paglets.wire.records import ErrorBody

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

log = logging.getLogger(__name__)

# File descriptors kept for everything but client connections: children's pipes,
# the database, envelopes being written, outgoing connections to peers.
FD_RESERVE: Final = 256
# Refused connections kept open a moment so the client reads its 503, at most this many.
_LINGERING_MAX: Final = 64
_LINGER: Final = 1.0
# Turns a stopping site lets pass between its last accept and closing its server.
_ACCEPT_TURNS: Final = 2
# A stopped site's last connections close within a few turns of the loop; then it polls.
_QUICK_TURNS: Final = 20
_CLOSE_POLL: Final = 0.005


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a request head may take, how long a connection may idle, how many at once."""

    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if not 0 < self.header_timeout < float("inf"):
            raise ConfigurationError("header_timeout must be a positive number of seconds")
        if not 0 < self.idle_timeout < float("inf"):
            raise ConfigurationError("idle_timeout must be a positive number of seconds")
        if self.max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")


def fd_bounded(requested: int, reserve: int = FD_RESERVE) -> int:
    """``requested``, lowered to fit the soft limit on open files less ``reserve``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or requested <= soft - reserve:
        return requested
    allowed = max(soft - reserve, 16)
    log.warning(
        "max_connections %d does not fit the limit of %d open files (ulimit -n) with %d "
        "kept for the host's own use; allowing %d connections (raise the limit to allow more)",
        requested,
        soft,
        reserve,
        allowed,
    )
    return allowed


class _Phase(enum.Enum):
    HEAD = "head"  # waiting for a request head: the header clock runs
    BUSY = "busy"  # a request is being handled
    IDLE = "idle"  # between requests, nothing of the next one yet (aiohttp's idle timeout)


class ConnectionGuard:
    """The limits of one host's listening sockets; see the module docstring.

    Args:
        limits: the timeouts and the cap (lowered to fit the open-files limit).
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.max_connections = fd_bounded(limits.max_connections)
        self._open: dict[asyncio.Transport, _Guarded] = {}
        # connections waiting for a request head, longest-waiting first
        self._waiting: dict[_Guarded, None] = {}
        self._lingering: set[asyncio.Transport] = set()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<ConnectionGuard {len(self._open)}/{self.max_connections} open, "
            f"{len(self._waiting)} waiting>"
        )

    @property
    def closed(self) -> bool:
        """Whether `close` was called: the host stopped serving."""
        return self._closed

    @property
    def open_connections(self) -> int:
        """Connections admitted and not closed yet."""
        return len(self._open)

    # -- wiring -----------------------------------------------------------------------

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], _Guarded]:
        """A protocol factory for ``loop.create_server`` that guards ``inner``'s protocols."""
        return lambda: _Guarded(self, inner())

    def site(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> GuardedSite:
        """A TCP site of ``runner`` whose connections this guard watches (TLS with a context)."""
        return GuardedSite(runner, host, port, guard=self, ssl_context=ssl_context)

    def close(self) -> None:
        """Close what is still open (after the runner's cleanup closed the rest).

        A connection accepted just before the listening socket closed may still be
        handed over after this; it is closed as it comes (see `admit`).
        """
        self._closed = True
        for transport in [*self._lingering, *self._open]:
            transport.abort()
        self._lingering.clear()

    def request_started(self, request: web.Request, *, open_route: bool) -> _Guarded | None:
        """A request's head has arrived: its connection, to tell `_Guarded.request_done` of.

        A request of a route served without the key (``open_route``: /health, the
        mesh hello) stays as it was until it is answered: on the header clock, and
        first to be closed at the cap. So a client without the key cannot hold a
        connection longer by sending such a request's body slowly.
        """
        transport = request.transport
        conn = self._open.get(transport) if transport is not None else None
        if conn is not None and not open_route:
            conn.head_arrived()
        return conn

    # -- bookkeeping (called by the connections) ----------------------------------------

    def admit(self, conn: _Guarded, transport: asyncio.Transport) -> bool:
        """Count a new connection in, closing the longest-waiting one if at the cap."""
        if self._closed:
            return False
        while len(self._open) >= self.max_connections:
            victim = next(
                (c for c in self._waiting if c.write_buffer_empty()),
                None,
            )
            if victim is None:
                return False
            log.debug("at %d connections: closing the one waiting longest", len(self._open))
            victim.drop()
        self._open[transport] = conn
        return True

    def waiting(self, conn: _Guarded, *, since_now: bool) -> None:
        if since_now:
            self._waiting.pop(conn, None)
        self._waiting.setdefault(conn, None)

    def not_waiting(self, conn: _Guarded) -> None:
        self._waiting.pop(conn, None)

    def forget(self, conn: _Guarded, transport: asyncio.Transport) -> None:
        self._waiting.pop(conn, None)
        if self._open.get(transport) is conn:
            del self._open[transport]

    def refuse(self, transport: asyncio.Transport) -> None:
        """Answer ``503`` on a connection over the cap, and close it."""
        exc = TooManyConnectionsError(
            f"the host has {len(self._open)} connections open, its limit "
            "(--max-connections), each busy with a request; retry shortly"
        )
        body = strict_json.dumps({"error": ErrorBody(type(exc).__name__, exc.message).to_dict()})
        status = HTTPStatus(exc.http_status)
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body.encode())}\r\n"
            "Retry-After: 1\r\n"
            "Connection: close\r\n\r\n"
        )
        transport.write(head.encode() + body.encode())
        if len(self._lingering) >= _LINGERING_MAX or not transport.can_write_eof():
            transport.close()
            return
        # Half-close, and read what the client sends a moment, so closing does not
        # reset the connection (and lose the answer) under a request still arriving.
        transport.write_eof()
        transport.set_protocol(_Refused(self, transport))
        self._lingering.add(transport)

    def refused_closed(self, transport: asyncio.Transport) -> None:
        self._lingering.discard(transport)


class _Guarded(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol inside, the header clock around it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._phase = _Phase.HEAD
        self._loop = asyncio.get_running_loop()
        self._clock: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    def __repr__(self) -> str:
        return f"<_Guarded {self._phase.value}>"

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server's
        self._transport = transport
        if not self._guard.admit(self, transport):
            self._transport = None
            if self._guard.closed:  # accepted as the host stopped: nobody will serve it
                transport.abort()
            else:
                self._guard.refuse(transport)
            return
        self._inner.connection_made(transport)
        self._guard.waiting(self, since_now=True)
        self._start_clock()

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.IDLE:  # the first bytes of the next request
            self._phase = _Phase.HEAD
            self._start_clock()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        transport, self._transport = self._transport, None
        if transport is not None:
            self._guard.forget(self, transport)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- the request cycle (from the host's middleware) -----------------------------------

    def head_arrived(self) -> None:
        self._phase = _Phase.BUSY  # the clock, if it fires, finds no head to wait for
        self._guard.not_waiting(self)

    def request_done(self) -> None:
        """The request `ConnectionGuard.request_started` returned this for is answered."""
        if self._phase is not _Phase.IDLE:  # BUSY, or HEAD for a request of an open route
            self._phase = _Phase.IDLE
            self._guard.waiting(self, since_now=True)

    # -- closing -----------------------------------------------------------------------

    def write_buffer_empty(self) -> bool:
        return self._transport is not None and not self._transport.get_write_buffer_size()

    def drop(self) -> None:
        """Close the connection now; it no longer counts."""
        self._stop_clock()
        transport = self._transport
        if transport is None:
            return
        self._guard.forget(self, transport)
        if self._phase is _Phase.IDLE:
            transport.close()  # a kept-alive client: a clean end
        else:
            transport.abort()  # half a request head: nothing to keep

    def _start_clock(self) -> None:
        """Start the header clock: the head must be whole by `_deadline`."""
        self._deadline = self._loop.time() + self._guard.limits.header_timeout
        if self._clock is None:
            self._clock = self._loop.call_at(self._deadline, self._check_clock)

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def _check_clock(self) -> None:
        self._clock = None
        if self._phase is not _Phase.HEAD:
            return  # between requests, or serving one: the next head starts it again
        if self._loop.time() < self._deadline:  # a later head: its own deadline
            self._clock = self._loop.call_at(self._deadline, self._check_clock)
            return
        log.debug(
            "closing a connection: no whole request head within %g s",
            self._guard.limits.header_timeout,
        )
        self.drop()


class _Refused(asyncio.Protocol):
    """A connection answered ``503``: what it still sends is read and dropped, briefly."""

    def __init__(self, guard: ConnectionGuard, transport: asyncio.Transport) -> None:
        self._guard = guard
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio's
        self._timer.cancel()
        self._guard.refused_closed(self._transport)


class GuardedSite(web.BaseSite):
    """A TCP site like `aiohttp.web.TCPSite`, whose connections a `ConnectionGuard` watches."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        shown = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._ssl_context is None else "https"
        return f"{scheme}://{shown}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # pragma: no cover - BaseSite checked it was set up
            raise RuntimeError("the runner is not set up")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            ssl=self._ssl_context,
        )

    async def stop(self) -> None:
        """Stop accepting, let the connections accepted so far be made, then close.

        asyncio accepts a connection in one turn of the loop and makes its
        transport in the next; on Python 3.11 a transport made after its server
        closed fails an assertion half-built, and its socket is leaked. So the
        listening sockets stop being read first, and the server closes once
        those turns have passed (the connections made then are closed by the
        runner's cleanup and the guard, as any other).
        """
        server = self._server
        if isinstance(server, asyncio.Server):
            loop = asyncio.get_running_loop()
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
            for _ in range(_ACCEPT_TURNS):
                await asyncio.sleep(0)
        await super().stop()

    async def wait_closed(self, timeout: float) -> bool:
        """After `stop`: wait until every connection it accepted has closed, at most ``timeout``.

        A connection the kernel handed over just before the listening socket
        closed is made, told of (the guard closes it, being closed) and closed
        over a few turns of the loop; a loop ended before then would leak its
        socket. Python 3.11's ``Server.wait_closed`` does not wait for them, so
        this counts the server's live transports (``_active_count``, kept by
        asyncio; 0 if a later Python drops it, and then this waits for nothing).
        Returns whether they all closed in time.
        """
        server = self._server
        if server is None:
            return True
        deadline = asyncio.get_running_loop().time() + timeout
        turns = 0
        while getattr(server, "_active_count", 0) > 0:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            turns += 1
            await asyncio.sleep(0 if turns < _QUICK_TURNS else _CLOSE_POLL)
        return True
