"""A connect-mode host's session to its hub (``--connect-to``), and how it serves with no socket.

The host opens no listening socket. It connects out to its hub and keeps one
authenticated session there: a WebSocket by default; where a proxy refuses the
upgrade, HTTP long polls, each held by the hub at most `POLL_HOLD` s
(``--relay-transport auto|websocket|long-poll``). The hub hands it the requests
callers sent to ``<hub>/v1/relay/hosts/<name>``; the host serves each with its
own application over an in-memory connection (`LocalServer`: the same handlers,
checks and key as a request from the network) and sends the response back as the item's
answer, which is also its acknowledgement.

Channel calls (`paglets.wire.relay.RelayedCall`: a caller's proxy channel to this
host, carried by the hub on a WebSocket session) skip that second HTTP parse:
each is answered by the channel's own `paglets.transport.channel.answer_call`,
with the same checks and ordering (one-way and future sends in the order they
came, the rest side by side), and its reply is written at once on the session
that carried it, or nowhere: the hub has closed that caller's channel when its
session ended, and the caller sends the call again over HTTP.

Nothing twice: an item whose id is being served, or was served lately, is not
served again (its answer is sent again). Heartbeats go both ways (WebSocket
pings; a poll at least every `POLL_HOLD` s). A lost session is reopened after a
jittered, growing backoff; each session has a new id, newer than the last, so
the hub lets it replace an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from paglets.core.errors import HostError, PagletError, ProtocolError
from paglets.mesh.memorypipe import MemoryConnector
from paglets.mesh.relayhub import POLL_HOLD
from paglets.transport.cacerts import connector
from paglets.transport.channel import answer_call, encoded_answer, in_order
from paglets.transport.filebody import CHUNK
from paglets.wire import strict_json
from paglets.wire.channel import HEARTBEAT, Call, parse_frame
from paglets.wire.channel import Answer as ChannelAnswer
from paglets.wire.records import ErrorBody
from paglets.wire.relay import (
    MAX_INLINE_BODY,
    PIPE_ROUTE,
    POLL_ROUTE,
    SESSION_ROUTE,
    Answer,
    Poll,
    PollReply,
    RelayedCall,
    Request,
    encode_items,
)

if TYPE_CHECKING:
    import ssl as ssl_module
    from collections.abc import Callable

    from aiohttp import web

    from paglets.config import HostConfig

__all__ = ["LocalServer", "RelayClient"]

log = logging.getLogger(__name__)

BACKOFF_FIRST: Final = 0.2
BACKOFF_CAP: Final = 10.0
REMEMBERED: Final = 4096  # answers kept, by item id, to answer a duplicate again
HANDLING_MAX: Final = 256  # items served at once
DROPPED_HEADERS: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)


class LocalServer:
    """Serves relayed requests with the host's own application, without a listening socket.

    Args:
        factory: the runner's server (an `aiohttp.web.Server`), a protocol factory.
        app: the application, whose API answers channel calls (`call`).
    """

    def __init__(self, factory: Callable[[], asyncio.Protocol], app: web.Application) -> None:
        self._app = app
        self._session = aiohttp.ClientSession(
            connector=MemoryConnector(factory),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )

    def __repr__(self) -> str:
        return "<LocalServer>"

    async def serve(self, request: Request, stream: aiohttp.StreamReader | None = None) -> Answer:
        """The host's answer to ``request``, as one answer item.

        Args:
            request: the item.
            stream: its body, for a piped request (as it arrives from the hub).
        """
        dropped = DROPPED_HEADERS - {"content-length"} if stream is not None else DROPPED_HEADERS
        headers = [(k, v) for k, v in request.headers if k.lower() not in dropped]
        data: Any = request.body or None
        if stream is not None:
            data = stream.iter_chunked(CHUNK)
        async with self._session.request(
            request.method,
            f"http://relayed{request.path}",
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as response:
            body = await read_all(response.content, MAX_INLINE_BODY)
            if body is None:
                return _error_answer(request, 502, f"the answer is over {MAX_INLINE_BODY} bytes")
            kept = tuple(
                (k, v) for k, v in response.headers.items() if k.lower() not in DROPPED_HEADERS
            )
            return Answer(request.seq, request.id, response.status, kept, body)

    async def call(self, call: Call) -> str:
        """The host's answer to a channel call, as the encoded reply item for the hub."""
        answer = encoded_answer(ChannelAnswer(call.id, *await answer_call(self._app, call)))
        if len(answer) > MAX_INLINE_BODY:
            error = HostError(f"the answer is over {MAX_INLINE_BODY} bytes: too big for a relay")
            body = {"error": ErrorBody(type(error).__name__, error.message).to_dict()}
            answer = ChannelAnswer(call.id, 502, body).encode()
        return f'{{"t":"reply","answer":{answer}}}'

    async def close(self) -> None:
        """Close the client side."""
        await self._session.close()


async def read_all(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """All of ``stream``, or ``None`` once it passes ``limit`` bytes."""
    chunks = []
    size = 0
    async for chunk in stream.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error_answer(request: Request, status: int, message: str) -> Answer:
    body = {"error": {"type": "HostError", "message": message, "traceback": None}}
    headers = (("Content-Type", "application/json"),)
    return Answer(request.seq, request.id, status, headers, strict_json.dumps(body).encode())


class _Refused(Exception):  # noqa: N818 - internal signal
    """The hub refused the session (wrong key, replaced): retry after a backoff."""


def new_session_id() -> str:
    """A session id that sorts after every earlier one of this host (``<ns>-<hex>``)."""
    return f"{time.time_ns()}-{uuid.uuid4().hex[:12]}"


class RelayClient:
    """The session of a connect-mode host; see the module docstring.

    Args:
        config: the host's options (``connect_to``, ``relay_transport``, key, CA).
        local: serves the items.
    """

    def __init__(self, config: HostConfig, local: LocalServer) -> None:
        assert config.connect_to is not None  # noqa: S101 - only built in connect mode
        self.config = config
        self.hub = config.connect_to
        self.local = local
        self.transport = "long-poll" if config.relay_transport == "long-poll" else "websocket"
        self.connected = asyncio.Event()
        self.sessions = 0
        self.last_error = ""
        self.refused = ""  # why the hub refused this host's key, if it did
        self.settled = asyncio.Event()  # the first session opened, or the key was refused
        self._headers = {"Authorization": f"Bearer {config.api_key or ''}"}
        self._ssl: ssl_module.SSLContext | bool = config.client_ssl()
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._handling: dict[str, asyncio.Task[None]] = {}
        self._done: OrderedDict[str, Answer] = OrderedDict()
        self._outbox: asyncio.Queue[Answer] = asyncio.Queue()
        self._slots = asyncio.Semaphore(HANDLING_MAX)
        self._calls: set[asyncio.Task[None]] = set()
        self._last_in_order: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<RelayClient {self.config.name} -> {self.hub} {self.transport}>"

    def start(self) -> None:
        """Start keeping the session (in the background)."""
        self._http = aiohttp.ClientSession(
            headers=self._headers,
            connector=connector(self._ssl),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
        )
        self._task = asyncio.create_task(self._run(), name=f"relay-{self.config.name}")

    async def stop(self) -> None:
        """Close the session and whatever it serves."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = [*self._handling.values(), *self._calls]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        await self.local.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                if self.transport == "websocket":
                    await self._websocket()
                else:
                    await self._long_poll()
                self.last_error = "the hub ended the session"
            except asyncio.CancelledError:
                raise
            except _Fallback as exc:
                log.warning("relay: %s; falling back to long polling", exc)
                self.transport = "long-poll"
                failures = 0
                continue
            except (aiohttp.ClientError, OSError, PagletError, _Refused, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("relay session to %s lost: %s", self.hub, self.last_error)
            self.connected.clear()
            if time.monotonic() - started > BACKOFF_CAP:
                failures = 0
            failures += 1
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** min(failures, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter

    # -- serving items ----------------------------------------------------------------

    def _take(self, request: Request) -> None:
        """Serve ``request`` unless it is served now; a served one is answered again."""
        done = self._done.get(request.id)
        if done is not None:
            self._outbox.put_nowait(done)
            return
        if request.id in self._handling:
            return
        self._handling[request.id] = asyncio.create_task(self._serve(request))

    async def _serve(self, request: Request) -> None:
        try:
            async with self._slots:
                try:
                    answer = await self._answer(request)
                except (aiohttp.ClientError, OSError) as exc:
                    answer = _error_answer(request, 502, f"the relayed host failed: {exc}")
            self._done[request.id] = answer
            while len(self._done) > REMEMBERED:
                self._done.popitem(last=False)
            self._outbox.put_nowait(answer)
        finally:
            self._handling.pop(request.id, None)

    async def _answer(self, request: Request) -> Answer:
        if not request.pipe:
            return await self.local.serve(request)
        assert self._http is not None  # noqa: S101 - start() made it
        params = {"id": request.pipe}
        async with self._http.get(f"{self.hub}{PIPE_ROUTE}", params=params) as source:
            if source.status != 200:  # noqa: PLR2004 - the pipe is gone: say why
                body = await read_all(source.content, MAX_INLINE_BODY) or b""
                headers = (("Content-Type", source.headers.get("Content-Type", "text/plain")),)
                return Answer(request.seq, request.id, source.status, headers, body)
            return await self.local.serve(request, source.content)

    def _take_call(self, call: Call, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Answer a channel call; one-way and future sends after the ones before them."""
        after = self._last_in_order if in_order(call) else None
        task = asyncio.create_task(self._serve_call(call, ws, after))
        if in_order(call):
            self._last_in_order = task
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _serve_call(
        self, call: Call, ws: aiohttp.ClientWebSocketResponse, after: asyncio.Task[None] | None
    ) -> None:
        if after is not None and not after.done():
            await asyncio.wait([after])
        async with self._slots:
            reply = await self.local.call(call)
        with contextlib.suppress(ConnectionError, RuntimeError):  # the session ended
            if not ws.closed:
                await ws.send_str(reply)

    # -- WebSocket ----------------------------------------------------------------------

    async def _websocket(self) -> None:
        assert self._http is not None  # noqa: S101 - start() made it
        session = new_session_id()
        params = {"name": self.config.name, "session": session}
        try:
            ws = await self._http.ws_connect(
                f"{self.hub}{SESSION_ROUTE}",
                params=params,
                heartbeat=HEARTBEAT / 3,
                max_msg_size=2 * MAX_INLINE_BODY + 65536,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                self.refused = f"the hub refused the key ({exc.status})"
                self.settled.set()
                raise _Refused(self.refused) from None
            if self.config.relay_transport == "auto":
                raise _Fallback(f"the hub's WebSocket upgrade was refused ({exc.status})") from None
            raise
        async with ws:
            self._session_up(session)
            # answers not yet acknowledged by a previous session go again
            sender = asyncio.create_task(self._ws_send(ws))
            try:
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        continue
                    if self._ws_items(msg.data, ws):
                        break
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            if ws.close_code not in (None, 1000) and ws.close_code is not None:
                raise _Refused(f"the hub closed the session ({ws.close_code})")

    def _ws_items(self, text: str, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Take the items of a frame; whether the hub said bye."""
        try:
            items = parse_frame(text)
        except PagletError as exc:
            raise ProtocolError(f"a relay frame from the hub is not items: {exc}") from None
        for item in items:
            kind = item.get("t") if isinstance(item, dict) else None
            if kind == "bye":
                log.info("relay: the hub says bye: %s", str(item.get("reason", ""))[:200])
                return True
            if kind == "call":
                self._take_call(RelayedCall.parse(item).call, ws)
            else:
                self._take(Request.parse(item))
        return False

    async def _ws_send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            answers = [await self._outbox.get()]
            while not self._outbox.empty():
                answers.append(self._outbox.get_nowait())
            try:
                for frame in encode_items(answers):
                    await ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                for answer in answers:  # the next session sends them
                    self._outbox.put_nowait(answer)
                return

    # -- long polling ---------------------------------------------------------------------

    async def _long_poll(self) -> None:
        session = new_session_id()
        seen = 0
        first = True
        flusher = asyncio.create_task(self._flush_loop(session))
        try:
            while True:
                reply = await self._poll(session, [], seen, POLL_HOLD if not first else 0)
                if first:
                    self._session_up(session)
                    first = False
                for request in reply.requests:
                    seen = max(seen, request.seq)
                    self._take(request)
                if reply.bye:
                    log.info("relay: the hub says bye: %s", reply.bye)
                    return
                if flusher.done():
                    flusher.result()
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flusher

    async def _flush_loop(self, session: str) -> None:
        """Send answers as they are ready, in short polls beside the long one."""
        while True:
            answers = [await self._outbox.get()]
            while not self._outbox.empty():
                answers.append(self._outbox.get_nowait())
            try:
                reply = await self._poll(session, answers, 2**53 - 1, 0)
            except BaseException:
                for answer in answers:
                    self._outbox.put_nowait(answer)
                raise
            if reply.bye:
                return

    async def _poll(self, session: str, answers: list[Answer], seen: int, wait: float) -> PollReply:
        assert self._http is not None  # noqa: S101 - start() made it
        body = Poll(session, tuple(answers)).to_dict()
        params = {"name": self.config.name, "seen": str(seen), "wait": f"{wait:g}"}
        async with asyncio.timeout(wait + 30.0):
            async with self._http.post(
                f"{self.hub}{POLL_ROUTE}", params=params, data=strict_json.dumps(body)
            ) as response:
                data: Any = await response.read()
                if response.status in (401, 403):
                    self.refused = f"the hub refused the key ({response.status})"
                    self.settled.set()
                    raise _Refused(self.refused)
                if response.status != 200:  # noqa: PLR2004
                    raise _Refused(f"the hub answered {response.status}: {data[:300]!r}")
        return PollReply.parse(strict_json.loads(data, "relay poll reply"))

    def _session_up(self, session: str) -> None:
        self.sessions += 1
        self.refused = ""
        self.connected.set()
        self.settled.set()
        log.info("relay session %s to %s open (%s)", session, self.hub, self.transport)


class _Fallback(Exception):  # noqa: N818 - internal signal
    """The WebSocket upgrade was refused: use long polling."""
