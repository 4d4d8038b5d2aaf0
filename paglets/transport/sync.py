"""The blocking facade: ``HostClient``, ``PagletProxy``, ``PagletFuture``, ``ReplySet``.

Each `HostClient` runs its `AsyncHostClient` on a private event
loop in a background thread, and every blocking method is one call into that
loop. Calling a blocking method from inside a running event loop would stall
it, so that raises `PagletError` pointing at the async API instead.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Self, TypeVar

from paglets.core.errors import PagletError, PagletTimeoutError
from paglets.transport.client import (
    AsyncHostClient,
    AsyncPagletFuture,
    AsyncPagletProxy,
    PagletRef,
)
from paglets.wire.services import ServiceClient

if TYPE_CHECKING:
    import builtins
    import ssl as ssl_module
    from collections.abc import Coroutine, Iterable, Iterator
    from types import TracebackType

    from paglets.core.contract import Contract
    from paglets.core.events import ContextEvent
    from paglets.core.message import Message
    from paglets.core.movement import TransferTicket
    from paglets.core.paglet import Paglet
    from paglets.core.policy import RestartPolicy
    from paglets.core.state import PagletState
    from paglets.wire.mesh import HostRecord
    from paglets.wire.records import HostInfo, PagletInfo
    from paglets.wire.services import ServiceInfo
    from paglets.wire.targets import Target, TargetQuery

T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread, for one client's blocking calls."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise PagletError(
                "a blocking paglets call was made inside a running event loop; "
                "use AsyncHostClient / proxy.aio in async code"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():  # the call's own error: a PagletTimeoutError from the host
                raise
            future.cancel()
            raise PagletTimeoutError(f"no answer within {timeout:g} s") from None

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class HostClient:
    """Talks to one host from plain (blocking) code.

    Args:
        url: the host's base URL.
        api_key: the bearer key; by default as `AsyncHostClient` finds it.
        ssl: an `ssl.SSLContext` for ``https`` URLs with a private CA.

    Use it as a context manager, or call `close`, to stop its thread.
    """

    def __init__(
        self, url: str, api_key: str | None = None, *, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        self.aio = AsyncHostClient(url, api_key, ssl=ssl)
        self._runner = _LoopThread(f"paglets-client {self.aio.url}")

    def __repr__(self) -> str:
        return f"<HostClient {self.url}>"

    @property
    def url(self) -> str:
        return self.aio.url

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._runner.run(coro, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close connections and stop the client's thread."""
        if self._runner.loop.is_running():
            self._run(self.aio.close())
        self._runner.stop()

    def host_info(self) -> HostInfo:
        """The host's description."""
        return self._run(self.aio.host_info())

    def hosts(
        self, *, online: bool | None = None, tag: str | None = None
    ) -> builtins.list[HostRecord]:
        """The mesh as this host sees it: every host known, this one first."""
        return self._run(self.aio.hosts(online=online, tag=tag))

    def resolve(self, name_or_url: str) -> str:
        """The URL of the host of that name in this host's mesh (a URL is returned as is)."""
        return self._run(self.aio.resolve(name_or_url))

    def targets(self, query: TargetQuery | None = None) -> builtins.list[Target]:
        """The online hosts that meet ``query``, best first (`paglets.wire.targets`)."""
        return self._run(self.aio.targets(query))

    def at(self, name_or_url: str) -> HostClient:
        """A client for another host of the mesh, by name or URL, with the same key and TLS."""
        url = self.resolve(name_or_url)
        return HostClient(url, self.aio._key, ssl=self.aio._ssl)  # noqa: SLF001 - our own twin

    def services(self, *, mesh: bool = False) -> builtins.list[ServiceInfo]:
        """The host's resident services; with ``mesh``, every host's (docs/services.md)."""
        return self._run(self.aio.services(mesh=mesh))

    def service(
        self, contract: Contract, *, where: str | None = None, timeout: float | None = None
    ) -> ServiceClient:
        """A typed client of the service of ``contract``; see `AsyncHostClient.service`.

        ``svc.op(Request(...))`` blocks and returns the reply dataclass.
        """
        aio = self.aio.service(contract, where=where, timeout=timeout)
        return ServiceClient(
            contract, lambda route, body: self._run(aio.invoke(route, body)), where, timeout
        )

    def health(self) -> str:
        """The host's status word."""
        return self._run(self.aio.health())

    def list(self) -> list[PagletInfo]:
        """The paglets on the host."""
        return self._run(self.aio.list())

    def create(
        self,
        class_path: str | type[Paglet[Any]],
        state: PagletState | dict[str, Any] | None = None,
        *,
        agent_id: str | None = None,
        restart_policy: RestartPolicy | None = None,
    ) -> PagletProxy:
        """Start a paglet of ``class_path`` ("package.module:Class", or the class) on the host.

        A class defined in ``__main__``, a script or a notebook is shipped by value;
        see `AsyncHostClient.create`.
        """
        proxy = self._run(
            self.aio.create(class_path, state, agent_id=agent_id, restart_policy=restart_policy)
        )
        return PagletProxy(self, proxy)

    def proxy(self, agent_id: str) -> PagletProxy:
        """A proxy to a paglet on this host, by id."""
        return PagletProxy(self, self.aio.proxy(agent_id))

    def retract(
        self, paglet: PagletProxy | PagletRef, ticket: TransferTicket | None = None
    ) -> PagletProxy:
        """Pull a paglet from the host it is on to this host; returns its proxy here."""
        ref = paglet.ref if isinstance(paglet, PagletProxy) else paglet
        return PagletProxy(self, self._run(self.aio.retract(ref, ticket)))

    def events(
        self, since: int = 0, limit: int = 100, *, agent_id: str | None = None, wait: float = 0.0
    ) -> tuple[builtins.list[ContextEvent], int]:
        """Events after cursor ``since``, and the cursor to ask from next time."""
        return self._run(self.aio.events(since, limit, agent_id=agent_id, wait=wait))


class PagletProxy:
    """The handle to a paglet, from blocking code.

    ``proxy.aio`` is the `AsyncPagletProxy` with the same methods as
    coroutines. ``proxy.ref`` is a serializable `PagletRef`.
    """

    def __init__(self, client: HostClient, aio: AsyncPagletProxy) -> None:
        self.client = client
        self.aio = aio

    def __repr__(self) -> str:
        return f"<PagletProxy {self.agent_id} at {self.aio.client.url}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PagletProxy) and self.ref == other.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    @property
    def agent_id(self) -> str:
        return self.aio.agent_id

    @property
    def ref(self) -> PagletRef:
        return self.aio.ref

    def send(
        self,
        message: Message | str,
        args: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        no_delay: bool = False,
    ) -> Any:
        """Send and wait for the handler's reply (see `AsyncPagletProxy.send`)."""
        return self.client._run(  # noqa: SLF001 - the client's own runner
            self.aio.send(message, args, priority=priority, timeout=timeout, no_delay=no_delay)
        )

    def send_oneway(
        self,
        message: Message | str,
        args: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
    ) -> None:
        """Queue a message and return at once."""
        self.client._run(self.aio.send_oneway(message, args, priority=priority))  # noqa: SLF001

    def send_future(
        self,
        message: Message | str,
        args: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
    ) -> PagletFuture:
        """Queue a message; the future gives its reply later."""
        fut = self.client._run(  # noqa: SLF001
            self.aio.send_future(message, args, priority=priority)
        )
        return PagletFuture(self.client, fut)

    def info(self) -> PagletInfo:
        """Where and how the paglet is."""
        return self.client._run(self.aio.info())  # noqa: SLF001

    def state(self) -> dict[str, Any]:
        """The JSON projection of the paglet's state."""
        return self.client._run(self.aio.state())  # noqa: SLF001

    def dispose(self) -> None:
        """Run ``on_disposing`` and end the paglet."""
        self.client._run(self.aio.dispose())  # noqa: SLF001

    def deactivate(self, duration: float | None = None, *, until: float | None = None) -> None:
        """Write the paglet to disk and stop its process (see `AsyncPagletProxy.deactivate`)."""
        self.client._run(self.aio.deactivate(duration, until=until))  # noqa: SLF001

    def activate(self) -> None:
        """Start an inactive paglet again."""
        self.client._run(self.aio.activate())  # noqa: SLF001

    def checkpoint(self) -> None:
        """Have the paglet write its state to disk now."""
        self.client._run(self.aio.checkpoint())  # noqa: SLF001

    def dispatch(self, target: str, ticket: TransferTicket | None = None) -> PagletProxy:
        """Move the paglet to ``target`` (a host name or URL); returns this proxy, now there."""
        self.client._run(self.aio.dispatch(target, ticket))  # noqa: SLF001
        return self

    def clone(self, target: str | None = None, ticket: TransferTicket | None = None) -> PagletProxy:
        """Copy the paglet, with a new id, to ``target`` (default: its own host)."""
        return PagletProxy(self.client, self.client._run(self.aio.clone(target, ticket)))  # noqa: SLF001

    def retract(self, to: str, ticket: TransferTicket | None = None) -> PagletProxy:
        """Pull the paglet to the host ``to`` (a name or URL); returns this proxy, now there."""
        self.client._run(self.aio.retract(to, ticket))  # noqa: SLF001
        return self


class PagletFuture:
    """The reply to a ``send_future`` message, from blocking code."""

    def __init__(self, client: HostClient, aio: AsyncPagletFuture) -> None:
        self.client = client
        self.aio = aio

    def __repr__(self) -> str:
        return f"<PagletFuture {self.aio.message_id}>"

    @property
    def message_id(self) -> str:
        return self.aio.message_id

    def done(self) -> bool:
        """Whether the reply is there."""
        return self.client._run(self.aio.done())  # noqa: SLF001

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the reply; ``PagletTimeoutError`` after ``timeout`` seconds."""
        return self.client._run(self.aio.result(timeout))  # noqa: SLF001


class ReplySet:
    """Fan-in over several `PagletFuture`: replies as they complete."""

    def __init__(self, futures: Iterable[PagletFuture] = ()) -> None:
        self.futures = list(futures)

    def add(self, future: PagletFuture) -> None:
        self.futures.append(future)

    def __len__(self) -> int:
        return len(self.futures)

    def results(self, timeout: float | None = None) -> list[Any]:
        """All replies, in the order the futures were added."""
        return [f.result(timeout) for f in self.futures]

    def as_completed(self, timeout: float | None = None) -> Iterator[tuple[PagletFuture, Any]]:
        """``(future, reply)`` pairs in completion order."""
        pending = list(self.futures)
        while pending:
            by_client: dict[int, list[PagletFuture]] = {}
            for fut in pending:
                by_client.setdefault(id(fut.client), []).append(fut)
            group = next(iter(by_client.values()))
            client = group[0].client
            done = client._run(_first_done([f.aio for f in group], timeout))  # noqa: SLF001
            match = next(f for f in group if f.aio is done[0])
            pending.remove(match)
            yield match, done[1]


async def _first_done(
    futures: list[AsyncPagletFuture], timeout: float | None
) -> tuple[AsyncPagletFuture, Any]:
    async def one(fut: AsyncPagletFuture) -> tuple[AsyncPagletFuture, Any]:
        return fut, await fut.result(timeout)

    tasks = [asyncio.ensure_future(one(f)) for f in futures]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()


__all__ = ["HostClient", "PagletFuture", "PagletProxy", "PagletRef", "ReplySet"]
