"""``HostLink``: calls from a paglet's child process to its host.

A paglet asks its host for things only the host can do: the mesh view, messages
to other paglets, movement. Each call is a ``Call`` record; the host answers
with a ``CallResult`` carrying the same id.

Calls block the calling thread until the host answers, so they work the same
from ``def`` and ``async def`` handlers and from a ``run()`` thread:

- on the child's event-loop thread (every handler and hook, async ``run()``),
  the call reads the channel itself until its answer arrives; records for the
  mailbox that arrive meanwhile are queued as usual;
- on any other thread (a sync ``run()``), it waits while the loop thread reads.

`HostLink.call_async` is the non-blocking form for async code that wants
to overlap several calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from typing import TYPE_CHECKING, Any

from paglets.core.errors import PagletTimeoutError
from paglets.runtime import ipc

if TYPE_CHECKING:
    from collections.abc import Callable

# The host answers every call; this only bounds a host that stopped reading.
CALL_TIMEOUT = 600.0


class HostLink:
    """The child's side of host calls.

    Args:
        send: writes one record to the host (thread-safe).
        pump: on the loop thread, blocks until at least one frame was read and
            routed (a ``CallResult`` reaches `resolve`, others the mailbox).
        loop: the child's event loop.
    """

    def __init__(
        self,
        send: Callable[[ipc.Record], None],
        pump: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._send = send
        self._pump = pump
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<HostLink pending={len(self._pending)}>"

    def _start(self, method: str, args: dict[str, Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            call_id = next(self._ids)
            self._pending[call_id] = fut
        self._send(ipc.Call(call_id, method, args))
        return fut

    def call(self, method: str, **args: Any) -> Any:
        """Ask the host and wait for its answer; raises the host's error by name."""
        return self.wait(self._start(method, args), method)

    def begin(self, method: str, **args: Any) -> concurrent.futures.Future[Any]:
        """Ask the host without waiting; `wait` for the answer later (always)."""
        return self._start(method, args)

    def wait(self, fut: concurrent.futures.Future[Any], method: str) -> Any:
        """The answer to the ``method`` call `begin` started; raises the host's error by name."""
        if threading.get_ident() == self._loop_thread:
            while not fut.done():
                self._pump()
            return fut.result()
        try:
            return fut.result(CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise PagletTimeoutError(
                f"the host did not answer {method!r} within {CALL_TIMEOUT:g} s"
            ) from None

    async def call_async(self, method: str, **args: Any) -> Any:
        """`call` without blocking the child's event loop."""
        return await asyncio.wrap_future(self._start(method, args), loop=self._loop)

    def resolve(self, result: ipc.CallResult) -> None:
        """Complete the call ``result`` answers (called on the loop thread)."""
        with self._lock:
            fut = self._pending.pop(result.id, None)
        if fut is None or fut.done():
            return
        if result.error is not None:
            fut.set_exception(result.error.to_exception())
        else:
            fut.set_result(result.value)
