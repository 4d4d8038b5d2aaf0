"""``AsyncHostClient`` and ``AsyncPagletProxy``: the async core of the client API.

One `aiohttp.ClientSession` per client keeps connections alive, so a
message costs one request on a warm connection. Errors come back by name:
the host's JSON error becomes the matching `PagletError`, and
``aiohttp`` errors never escape this module (they become
`HostUnavailableError` or `PagletTimeoutError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from paglets.byvalue.local import is_local_host, register_in_process
from paglets.byvalue.pickling import class_reference
from paglets.byvalue.refs import parse_code_ref
from paglets.byvalue.shipping import ship_code
from paglets.core.errors import (
    CodeNotFoundError,
    HostUnavailableError,
    PagletError,
    PagletMovedError,
    PagletTimeoutError,
    ProtocolError,
    TransferError,
    error_from_wire,
)
from paglets.core.ids import IdKind, check_id
from paglets.core.message import Message
from paglets.core.state import PagletState
from paglets.transport.apikey import load_api_key
from paglets.transport.cacerts import connector
from paglets.transport.channel_client import Channel, ChannelLost
from paglets.transport.tls import env_ca_context
from paglets.wire.mesh import HostRecord
from paglets.wire.records import API_PREFIX, HostInfo, PagletInfo, event_from_dict
from paglets.wire.services import AsyncServiceClient, ServiceInfo
from paglets.wire.state_json import state_to_json
from paglets.wire.targets import Target, TargetQuery

if TYPE_CHECKING:
    import builtins
    import ssl as ssl_module
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
    from types import TracebackType

    from paglets.core.contract import Contract
    from paglets.core.events import ContextEvent
    from paglets.core.movement import TransferTicket
    from paglets.core.paglet import Paglet
    from paglets.core.policy import RestartPolicy

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_RESULT_POLL = 30.0
MAX_ANSWER = 64 << 20  # the largest answer taken over a channel
MAX_HOPS = 8  # how many moves in a row a proxy follows for one request


@dataclass(frozen=True, slots=True)
class PagletRef:
    """A serializable reference to a paglet: store it in state, pass it in messages."""

    agent_id: str
    host_url: str

    def to_dict(self) -> dict[str, str]:
        return {"agent_id": self.agent_id, "host_url": self.host_url}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PagletRef:
        try:
            return cls(str(data["agent_id"]), str(data["host_url"]))
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"not a paglet reference: {data!r:.200}") from exc


def _message(message: Message | str, args: dict[str, Any] | None, priority: int | None) -> Message:
    if isinstance(message, str):
        return Message(message, args or {}, priority if priority is not None else 0)
    if args is not None:
        raise TypeError("pass args inside the Message, not beside it")
    return message


class _Pool:
    """The connections a client and its siblings share (see `AsyncHostClient.sibling`)."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.siblings: dict[str, AsyncHostClient] = {}
        self.shipped: set[tuple[str, str]] = set()  # (host URL, by-value class path) sent


class AsyncHostClient:
    """Talks to one host's ``/v1`` API from async code.

    Args:
        url: the host's base URL, e.g. ``http://127.0.0.1:8765``; a path prefix
            (a host behind a reverse proxy) is kept.
        api_key: the bearer key; by default the first found of ``$PAGLETS_API_KEY``,
            the file ``$PAGLETS_API_KEY_FILE`` and the systemd credential
            ``paglets-api-key`` (`paglets.transport.apikey`).
        ssl: an `ssl.SSLContext` for ``https`` URLs with a private CA; by default
            the system's CAs and those of the file ``$PAGLETS_CA_FILE`` names.
        connect_timeout: seconds to wait for a connection.
        guard: called with the URL of every other host this client would take
            its key to (a paglet that moved); raises to refuse it.
        channel: send messages over one persistent WebSocket to the host
            (`paglets.transport.channel`) when it offers one; else, or with
            ``False``, each message is an HTTP request. Both give the same
            replies, errors and exactly-once delivery.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout: float = 10.0,
        pool: _Pool | None = None,
        guard: Callable[[str], None] | None = None,
        channel: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise PagletError(f"host URL {url!r} must start with http:// or https://")
        if api_key is None:
            found = load_api_key()
            api_key = None if found is None else found.value
        key = api_key
        self._key = key or ""
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._ssl = ssl if ssl is not None else env_ca_context()
        self._guard = guard
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._owner = pool is None
        self._pool = pool or _Pool()
        self._pool.siblings.setdefault(self.url, self)
        self._use_channel = channel
        self._channel: Channel | None = None
        self._no_channel = False  # the host offers none: HTTP only
        self._channel_lock: asyncio.Lock | None = None
        self._channel_opening: asyncio.Task[Channel | None] | None = None

    def __repr__(self) -> str:
        return f"<AsyncHostClient {self.url}>"

    def sibling(self, url: str) -> AsyncHostClient:
        """A client for the host at ``url`` sharing this one's key, TLS and connections.

        It is closed with this client (closing it alone does nothing).
        """
        url = url.rstrip("/")
        if url == self.url:
            return self
        if self._guard is not None:
            self._guard(url)
        client = self._pool.siblings.get(url)
        if client is None:
            client = AsyncHostClient(
                url,
                self._key,
                ssl=self._ssl,
                pool=self._pool,
                guard=self._guard,
                channel=self._use_channel,
            )
            self._pool.siblings[url] = client
        return client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if not self._owner:
            return
        for client in list(self._pool.siblings.values()):
            opening, client._channel_opening = client._channel_opening, None  # noqa: SLF001
            if opening is not None and not opening.done():
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening
            channel, client._channel = client._channel, None  # noqa: SLF001 - ours
            if channel is not None:
                await channel.close()
        session, self._pool.session = self._pool.session, None
        if session is not None:
            await session.close()
            if any(url.startswith("https://") for url in self._pool.siblings):
                # TLS connections finish their shutdown on later turns of the loop
                # (aiohttp's advice), before a sync client stops its loop
                await asyncio.sleep(0.1)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._pool.session is None:
            tcp = connector(self._ssl if self._ssl is not None else True)
            self._pool.session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, connector=tcp
            )
        return self._pool.session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | builtins.list[tuple[str, str]] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One API call; returns the decoded JSON body or raises the host's error.

        ``params``: the query, as a dict or as pairs (a key may repeat).
        """
        session = self._get_session()
        data = _dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        url = f"{self.url}{path}"
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(timeout):
                    async with session.request(
                        method, url, data=data, headers=headers, params=params
                    ) as resp:
                        payload = await resp.read()
                        status = resp.status
                break
            except TimeoutError:
                raise PagletTimeoutError(
                    f"{method} {url} got no answer within {timeout:g} s"
                ) from None
            except aiohttp.ServerDisconnectedError:
                # A kept-alive connection closed under us; requests are safe to
                # repeat (messages carry ids the host deduplicates).
                if attempt == 2:  # noqa: PLR2004
                    raise HostUnavailableError(f"host {self.url} closed the connection") from None
            except aiohttp.ClientError as exc:
                raise HostUnavailableError(f"cannot reach host {self.url}: {exc}") from None
        return _decode(status, payload, url)

    async def _open_channel(self) -> Channel | None:
        """The channel to this host, opened on first use; ``None`` to use HTTP."""
        channel = self._channel
        if channel is not None and not channel.closed:
            return channel
        if not self._use_channel or self._no_channel:
            return None
        if self._channel_lock is None:
            self._channel_lock = asyncio.Lock()
        async with self._channel_lock:
            if self._channel is not None and not self._channel.closed:
                return self._channel
            try:
                self._channel = await Channel.open(
                    self._get_session(), self.url, self._headers, MAX_ANSWER
                )
            except (aiohttp.ClientError, OSError):
                return None  # the HTTP request says what is wrong
            self._no_channel = self._channel is None
            return self._channel

    def _open_channel_beside(self) -> None:
        """Start opening the channel, if it is to be opened, without waiting for it.

        `create` does, so that the new paglet's first message finds it open: its
        handshake runs while the host starts the paglet, not after.
        """
        if (
            self._channel is not None
            or not self._use_channel
            or self._no_channel
            or self._channel_opening is not None
        ):
            return
        opening = asyncio.get_running_loop().create_task(self._open_channel())
        # what went wrong, the first message finds out again (and its HTTP request says)
        opening.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._channel_opening = opening

    async def call_paglet(
        self, op: str, agent_id: str, body: dict[str, Any], timeout: float | None
    ) -> Any:
        """A message to a paglet here (``send``) or a future's reply (``result``).

        Over the channel when the host offers one; over HTTP otherwise, or again
        over HTTP when the channel breaks first (a message keeps its id, so it is
        never delivered twice).
        """
        channel = self._channel
        if channel is None or channel.closed:
            channel = await self._open_channel()
        if channel is not None:
            try:
                answer = await channel.call(op, agent_id, body, timeout)
            except ChannelLost:
                pass
            except TimeoutError:
                raise PagletTimeoutError(
                    f"{op} to paglet {agent_id} at {self.url} got no answer within {timeout:g} s"
                ) from None
            else:
                return _checked(answer.status, answer.body, self.url)
        path = f"{API_PREFIX}/paglets/{agent_id}/messages"
        if op == "send":
            return await self.request("POST", path, body, timeout=timeout)
        params = {"wait": f"{body.get('wait', 0.0):g}"}
        return await self.request("GET", f"{path}/{body['message_id']}", params=params)

    # -- host -------------------------------------------------------------------

    async def host_info(self) -> HostInfo:
        """The host's description."""
        info: HostInfo = HostInfo.parse(await self.request("GET", f"{API_PREFIX}/host"))
        return info

    async def hosts(
        self, *, online: bool | None = None, tag: str | None = None
    ) -> builtins.list[HostRecord]:
        """The mesh as this host sees it: every host known, this one first."""
        params = {} if online is None else {"online": "true" if online else "false"}
        if tag is not None:
            params["tag"] = tag
        data = await self.request("GET", f"{API_PREFIX}/mesh/hosts", params=params)
        return [HostRecord.from_dict(item) for item in data["hosts"]]

    async def resolve(self, name_or_url: str) -> str:
        """The URL of the host of that name in this host's mesh (a URL is returned as is)."""
        data = await self.request(
            "GET", f"{API_PREFIX}/mesh/resolve", params={"target": name_or_url}
        )
        return str(data["url"])

    async def targets(self, query: TargetQuery | None = None) -> builtins.list[Target]:
        """The online hosts that meet ``query``, best first (`paglets.wire.targets`)."""
        query = query or TargetQuery()
        params = {k: str(v) for k, v in query.to_dict().items() if v is not None and k != "tags"}
        items: builtins.list[tuple[str, str]] = [*params.items(), *(("tag", t) for t in query.tags)]
        data = await self.request("GET", f"{API_PREFIX}/mesh/targets", params=items)
        return [Target.from_dict(item) for item in data["targets"]]

    async def at(self, name_or_url: str) -> AsyncHostClient:
        """A client for another host of the mesh, by name or URL, with the same key and TLS.

        Raises ``HostNotFoundError`` when this host's mesh has no host of that name.
        """
        url = await self.resolve(name_or_url)
        return AsyncHostClient(url, self._key, ssl=self._ssl)

    # -- services -----------------------------------------------------------------

    async def services(self, *, mesh: bool = False) -> builtins.list[ServiceInfo]:
        """The host's resident services; with ``mesh``, every host's (docs/services.md)."""
        params = {"mesh": "true" if mesh else "false"}
        data = await self.request("GET", f"{API_PREFIX}/services", params=params)
        return [ServiceInfo.from_dict(item) for item in data["services"]]

    def service(
        self, contract: Contract, *, where: str | None = None, timeout: float | None = None
    ) -> AsyncServiceClient:
        """A typed client of the service of ``contract``, wherever the mesh has it.

        ``await svc.op(Request(...))`` returns the reply dataclass. ``where`` (a
        host name or URL) picks the host; else this host's service, or an online
        host's that advertises it. ``timeout`` bounds each call (seconds).
        """
        path = f"{API_PREFIX}/services/{contract.name}"

        async def invoke(route: str, body: dict[str, Any]) -> Any:
            wait = None if timeout is None else timeout + 10.0
            channel = await self._open_channel()
            if channel is None:
                return await self.request("POST", f"{path}/{route}", body, timeout=wait)
            try:
                answer = await channel.call(route, contract.name, body, wait)
            except ChannelLost as exc:
                # A service call has no id to deduplicate it by: it is not sent again.
                raise HostUnavailableError(
                    f"{exc}; the call of {contract.name} may or may not have run"
                ) from None
            except TimeoutError:
                raise PagletTimeoutError(
                    f"{route} of {contract.name} at {self.url} got no answer within {wait:g} s"
                ) from None
            return _checked(answer.status, answer.body, self.url)

        return AsyncServiceClient(contract, invoke, where, timeout)

    async def health(self) -> str:
        """The host's status word from the unauthenticated health check."""
        return str((await self.request("GET", "/health"))["status"])

    async def list(self) -> list[PagletInfo]:
        """The paglets on the host."""
        data = await self.request("GET", f"{API_PREFIX}/paglets")
        return [PagletInfo.parse(item) for item in data["paglets"]]

    async def create(
        self,
        class_path: str | type[Paglet[Any]],
        state: PagletState | dict[str, Any] | None = None,
        *,
        agent_id: str | None = None,
        restart_policy: RestartPolicy | None = None,
    ) -> AsyncPagletProxy:
        """Start a paglet of ``class_path`` ("package.module:Class", or the class) on the host.

        A class the host cannot import by module path (defined in ``__main__``,
        a script or a notebook) is shipped by value (`paglets.byvalue`), once per
        host: to a host in this process always, to another only if it trusts code
        by value. ``restart_policy`` overrides the class's own for this paglet.

        Raises:
            CodeNotTrustedError: the class goes by value and the host does not
                trust code by value (the message says how to enable it).
        """
        if isinstance(state, PagletState):
            state = state_to_json(state)
        path, code = (
            (class_path, None) if isinstance(class_path, str) else class_reference(class_path)
        )
        if code is not None:
            await self._send_code(path, code)
        body = {"class_path": path, "state": state, "agent_id": agent_id}
        if restart_policy is not None:
            body["restart_policy"] = restart_policy.to_dict()
        self._open_channel_beside()  # a paglet made is sent messages: the first finds it open
        try:
            answer = await self.request("POST", f"{API_PREFIX}/paglets", body)
        except CodeNotFoundError:
            if code is None:
                raise
            # the host lost its copy (a new state directory): once more, with the code
            self._pool.shipped.discard((self.url, path))
            await self._send_code(path, code)
            answer = await self.request("POST", f"{API_PREFIX}/paglets", body)
        return AsyncPagletProxy(self, PagletInfo.parse(answer).agent_id)

    async def _send_code(self, path: str, code: bytes) -> None:
        """Make the code of the by-value class ``path`` known to the host, once."""
        ref = parse_code_ref(path)
        if ref is None:  # pragma: no cover - class_reference made it
            raise ProtocolError(f"{path} is not a by-value class path")
        if is_local_host(self.url):
            register_in_process(ref, code)  # the host runs in this process: no network
        elif (self.url, path) not in self._pool.shipped:
            await ship_code(self._get_session(), self.url, ref, code, self._headers)
            self._pool.shipped.add((self.url, path))

    def proxy(self, agent_id: str) -> AsyncPagletProxy:
        """A proxy to a paglet on this host, by id (no request is made)."""
        return AsyncPagletProxy(self, agent_id)

    async def retract(
        self,
        paglet: AsyncPagletProxy | PagletRef,
        ticket: TransferTicket | None = None,
    ) -> AsyncPagletProxy:
        """Pull a paglet from the host it is on to this host; returns its proxy here.

        ``on_retracting`` runs on its host, then ``on_arrival`` here.

        Raises:
            TransferError: it did not move; it stays where it was.
        """
        ref = paglet.ref if isinstance(paglet, AsyncPagletProxy) else paglet
        body = {
            "agent_id": ref.agent_id,
            "host": ref.host_url,
            "ticket": ticket.to_dict() if ticket is not None else None,
        }
        data = await self.request("POST", f"{API_PREFIX}/retract", body)
        return AsyncPagletProxy(self.sibling(str(data["url"])), str(data["agent_id"]))

    async def events(
        self,
        since: int = 0,
        limit: int = 100,
        *,
        agent_id: str | None = None,
        wait: float = 0.0,
    ) -> tuple[builtins.list[ContextEvent], int]:
        """Events after cursor ``since`` and the cursor to ask from next time.

        With ``wait`` > 0 the host holds the request until an event arrives.
        """
        params = {"since": str(since), "limit": str(limit), "wait": str(wait)}
        if agent_id is not None:
            params["agent_id"] = agent_id
        data = await self.request("GET", f"{API_PREFIX}/events", params=params)
        return [event_from_dict(e) for e in data["events"]], int(data["cursor"])

    async def follow_events(self, since: int = 0) -> AsyncIterator[ContextEvent]:
        """Yield events as they are logged, forever (long polling)."""
        cursor = since
        while True:
            events, cursor = await self.events(cursor, 1000, wait=_RESULT_POLL)
            for event in events:
                yield event

    async def send_body(
        self,
        method: str,
        path: str,
        data: Any,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One API call whose body is ``data`` as it is (bytes, a `FileBody`, an async
        iterator of chunks: streamed, never read whole); returns the decoded JSON answer.

        Raises:
            HostUnavailableError: the host cannot be reached or dropped the connection;
                PagletTimeoutError: no answer within ``timeout``; the host's error otherwise.
        """
        url = f"{self.url}{path}"
        try:
            async with asyncio.timeout(timeout):
                async with self._get_session().request(
                    method, url, data=data, params=params
                ) as resp:
                    return _decode(resp.status, await resp.read(), url)
        except TimeoutError:
            raise PagletTimeoutError(f"{method} {url} got no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise HostUnavailableError(f"cannot reach host {self.url}: {exc}") from None

    @contextlib.asynccontextmanager
    async def stream_body(
        self, path: str, *, params: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """``GET path`` whose answer the caller reads as a stream (a download).

        Raises:
            HostUnavailableError: the host cannot be reached; the host's error for a 4xx/5xx.
        """
        url = f"{self.url}{path}"
        try:
            async with self._get_session().get(url, params=params) as resp:
                if resp.status >= 400:  # noqa: PLR2004
                    _decode(resp.status, await resp.read(), url)
                yield resp
        except aiohttp.ClientError as exc:
            raise HostUnavailableError(f"cannot reach host {self.url}: {exc}") from None


def _decode(status: int, payload: bytes, url: str) -> Any:
    try:
        data = json.loads(payload) if payload else None
    except (ValueError, RecursionError):  # nesting too deep for the parser: not ours either
        data = None
    if status >= 400:  # noqa: PLR2004
        return _checked(status, data, url, payload)
    if data is None and payload:
        raise ProtocolError(f"{url} answered with a body that is not JSON")
    return data


def _checked(status: int, data: Any, url: str, raw: bytes | None = None) -> Any:
    """``data``, the body of a success; the host's error, raised, for a failure."""
    if status < 400:  # noqa: PLR2004
        return data
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and "type" in error:
        raise error_from_wire(
            str(error["type"]), str(error.get("message", "")), error.get("traceback")
        )
    shown = raw[:200] if raw is not None else repr(data)[:200]
    raise PagletError(f"HTTP {status} from {url}: {shown!r}")


class AsyncPagletProxy:
    """The handle to a paglet, for async code. See `paglets.PagletProxy`."""

    def __init__(self, client: AsyncHostClient, agent_id: str) -> None:
        self.client = client
        self.agent_id = check_id(agent_id, IdKind.AGENT)  # it goes into URLs
        self._path = f"{API_PREFIX}/paglets/{agent_id}"

    def __repr__(self) -> str:
        return f"<AsyncPagletProxy {self.agent_id} at {self.client.url}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncPagletProxy) and self.ref == other.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    async def _request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        """A request about this paglet; follows it when it has moved to another host."""
        return await self._following(
            lambda client: client.request(method, path, body, timeout=timeout)
        )

    async def _call(self, op: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        """A message (or a future's reply) for this paglet; follows it when it has moved."""
        return await self._following(
            lambda client: client.call_paglet(op, self.agent_id, body, timeout)
        )

    async def _following(self, ask: Callable[[AsyncHostClient], Awaitable[Any]]) -> Any:
        """``ask`` this paglet's host; after a move, its new host (a few hops at most)."""
        for _ in range(MAX_HOPS):
            try:
                return await ask(self.client)
            except PagletMovedError as exc:
                if exc.location is None:
                    raise
                self.client = self.client.sibling(exc.location)
        raise TransferError(f"paglet {self.agent_id} moved more than {MAX_HOPS} times in a row")

    async def dispatch(self, target: str, ticket: TransferTicket | None = None) -> AsyncPagletProxy:
        """Move the paglet to ``target`` (a host name or URL), between two messages.

        Returns this proxy, now pointing at the new host.

        Raises:
            TransferError: it did not move (refused, unreachable, ticket unmet);
                it stays where it was, running.
        """
        data = await self._move("dispatch", target, ticket)
        self.client = self.client.sibling(str(data["url"]))
        return self

    async def clone(
        self, target: str | None = None, ticket: TransferTicket | None = None
    ) -> AsyncPagletProxy:
        """Copy the paglet, with a new id, to ``target`` (default: its own host)."""
        data = await self._move("clone", target, ticket)
        return AsyncPagletProxy(self.client.sibling(str(data["url"])), str(data["agent_id"]))

    async def retract(self, to: str, ticket: TransferTicket | None = None) -> AsyncPagletProxy:
        """Pull the paglet to the host ``to`` (a name or URL) from where it is."""
        here = self.client.sibling(await self.client.resolve(to))
        moved = await here.retract(self, ticket)
        self.client = moved.client
        return self

    async def _move(
        self, kind: str, target: str | None, ticket: TransferTicket | None
    ) -> dict[str, Any]:
        body = {
            "kind": kind,
            "target": target,
            "ticket": ticket.to_dict() if ticket is not None else None,
        }
        data: dict[str, Any] = await self._request("POST", f"{self._path}/move", body)
        return data

    @property
    def ref(self) -> PagletRef:
        """The serializable reference to this paglet."""
        return PagletRef(self.agent_id, self.client.url)

    def _body(
        self, msg: Message, mode: str, timeout: float | None, *, no_delay: bool = False
    ) -> dict[str, Any]:
        return {
            "no_delay": no_delay,
            "kind": msg.kind,
            "args": msg.args,
            "priority": msg.priority,
            "message_id": msg.message_id or os.urandom(16).hex(),  # 128 random bits
            "sender": msg.sender,
            "mode": mode,
            "timeout": timeout,
        }

    async def send(
        self,
        message: Message | str,
        args: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        no_delay: bool = False,
    ) -> Any:
        """Send and wait for the handler's reply.

        ``message`` is a `Message` or a kind (then ``args``/``priority``
        go beside it). Raises the handler's error as a ``HandlerError``, or
        ``PagletTimeoutError`` after ``timeout`` seconds. A message to an
        inactive paglet activates it first; with ``no_delay`` it fails at once
        with ``PagletInactiveError`` instead.
        """
        msg = _message(message, args, priority)
        data = await self._call(
            "send",
            self._body(msg, "sync", timeout, no_delay=no_delay),
            timeout=None if timeout is None else timeout + 5.0,
        )
        return data["reply"]

    async def send_oneway(
        self,
        message: Message | str,
        args: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
    ) -> None:
        """Queue a message and return at once; failures go to the event log."""
        msg = _message(message, args, priority)
        await self._call("send", self._body(msg, "oneway", None))

    async def send_future(
        self,
        message: Message | str,
        args: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
    ) -> AsyncPagletFuture:
        """Queue a message; the returned future gives its reply later."""
        msg = _message(message, args, priority)
        data = await self._call("send", self._body(msg, "future", None))
        return AsyncPagletFuture(self, str(data["message_id"]))

    async def deactivate(
        self, duration: float | None = None, *, until: float | None = None
    ) -> None:
        """Write the paglet to disk and stop its process, after the messages queued.

        Its next message activates it again, as does the wake-up time:
        ``duration`` seconds from now or ``until`` (seconds since the epoch).

        Raises:
            StorageError: its checkpoint could not be written; it stays active.
        """
        body: dict[str, Any] = {"duration": duration, "until": until}
        await self._request("POST", f"{self._path}/deactivate", body)

    async def activate(self) -> None:
        """Start an inactive paglet again (``on_activation``, then ``run()``)."""
        await self._request("POST", f"{self._path}/activate", {})

    async def checkpoint(self) -> None:
        """Have the paglet write its state to disk now; the host recovers from it."""
        await self._request("POST", f"{self._path}/checkpoint", {})

    async def info(self) -> PagletInfo:
        """Where and how the paglet is (``agent_id``, ``host``, ``status``, ...)."""
        info: PagletInfo = PagletInfo.parse(await self._request("GET", self._path))
        return info

    async def state(self) -> dict[str, Any]:
        """The JSON projection of the paglet's state, taken between two messages."""
        data = await self._request("GET", f"{self._path}/state")
        state: dict[str, Any] = data["state"]
        return state

    async def dispose(self) -> None:
        """Run ``on_disposing`` and end the paglet."""
        await self._request("DELETE", self._path)


class AsyncPagletFuture:
    """The reply to a message sent with ``send_future``, kept by the host."""

    def __init__(self, proxy: AsyncPagletProxy, message_id: str) -> None:
        self.proxy = proxy
        self.message_id = message_id
        self._done = False
        self._reply: Any = None

    def __repr__(self) -> str:
        return f"<AsyncPagletFuture {self.message_id} {'done' if self._done else 'pending'}>"

    async def _poll(self, wait: float) -> bool:
        if self._done:
            return True
        body = {"message_id": self.message_id, "wait": wait}
        data = await self.proxy.client.call_paglet("result", self.proxy.agent_id, body, None)
        if data["done"]:
            self._done, self._reply = True, data["reply"]
        return self._done

    async def done(self) -> bool:
        """Whether the reply is there (raises the handler's error if it failed)."""
        return await self._poll(0.0)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the reply; ``PagletTimeoutError`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = _RESULT_POLL if deadline is None else deadline - loop.time()
            if await self._poll(max(0.0, min(remaining, _RESULT_POLL))):
                return self._reply
            if deadline is not None and loop.time() >= deadline:
                raise PagletTimeoutError(f"no reply to message {self.message_id} yet")


class AsyncReplySet:
    """Fan-in over several futures: iterate replies as they complete."""

    def __init__(self, futures: Iterable[AsyncPagletFuture] = ()) -> None:
        self.futures = list(futures)

    def add(self, future: AsyncPagletFuture) -> None:
        self.futures.append(future)

    def __len__(self) -> int:
        return len(self.futures)

    async def gather(self, timeout: float | None = None) -> list[Any]:
        """All replies, in the order the futures were added."""
        return list(await asyncio.gather(*(f.result(timeout) for f in self.futures)))

    async def as_completed(
        self, timeout: float | None = None
    ) -> AsyncIterator[tuple[AsyncPagletFuture, Any]]:
        """Yield ``(future, reply)`` pairs in completion order."""

        async def one(fut: AsyncPagletFuture) -> tuple[AsyncPagletFuture, Any]:
            return fut, await fut.result(timeout)

        for next_done in asyncio.as_completed([one(f) for f in self.futures]):
            yield await next_done
