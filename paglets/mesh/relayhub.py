"""The relay hub: hosts that only connect out reach the mesh through it.

Any host can be a hub. A connect-mode host (``--connect-to HUB``) keeps one
session to it (`paglets.mesh.relayclient`) and is known to the mesh by the URL
``<hub>/v1/relay/hosts/<name>`` (`paglets.wire.relay.relay_url`). Every request
under that URL (a message, a reply, a control call, gossip, an envelope) is
written to the hub's durable queue (`paglets.mesh.relayqueue`), handed to the
host over its session, and answered with what the host answered. An item is
dropped only when its answer arrives, so a cut poll, a dropped WebSocket, a
reconnect or a restart of the hub loses nothing: the host gets every item not
yet answered on its next session, and drops the ones it already handled by id.

Routes (every one needs the API key; a paglet holds no key; a stranger gets 401):

- ``GET /v1/relay/session?name=N&session=S``: the WebSocket session of host N.
- ``POST /v1/relay/poll?name=N&wait=SECONDS``: one long poll of host N (a `Poll`
  body; answers the requests not yet seen, holding at most `POLL_HOLD` s).
- ``GET /v1/relay/diagnostics``: per relayed host, its transport, online state,
  queue depth and bytes, age of its oldest item, last poll, reconnects, refusals.
- ``* /v1/relay/hosts/N/<path>``: the request forwarded to host N (its answer, or
  ``503`` offline, ``429`` queue full with ``Retry-After``, ``504`` not answered
  within ``--relay-delivery-timeout``; an item accepted stays queued).
- ``GET /v1/relay/hosts/N/v1/channel`` (a WebSocket upgrade): the proxy channel of
  host N (`paglets.transport.channel`), carried on N's WebSocket session (see
  "Channels" below). ``503`` when N has no session now, ``404`` when its
  session is long polls (the caller uses HTTP, as with a host without a channel).

Channels: a caller's channel call (a message, a future's result, a service call)
is checked here as the host would check it, renumbered, and written on the
session at once, with the other calls of the caller's frame; its answer goes
back to the caller's channel under its own number, at once too when the caller
keeps up (else by a task, so a slow caller never holds the session up). Unlike a
request, a call is not written to the queue: the caller holds it until the
answer comes, as over a channel to a host it reaches directly, so nothing the
caller was told is accepted depends on the hub. When the session that carried
a call ends (a dropped WebSocket, a newer session, the hub stopping or killed)
the caller's channel is closed; its client sends the calls still waiting again
over HTTP, through the queue, with their message ids, which the host does not
deliver twice (a service call has no id: its caller hears that it may or may
not have run, as over any channel that breaks). So a call is answered once,
or its caller hears of it: never a silent loss.

A newer session of a host (its session id starts with a larger time) replaces
an older one; the hub tells its clients ``bye`` before it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from paglets.core.errors import (
    HostUnavailableError,
    InvalidStateError,
    PagletError,
    PagletTimeoutError,
    ProtocolError,
    RelayQueueFullError,
    RequestError,
)
from paglets.core.ids import IdKind, check_id
from paglets.mesh.relayqueue import RelayQueue
from paglets.transport.app import error_response
from paglets.transport.auth import is_open
from paglets.transport.body import json_response, read_capped, read_json
from paglets.transport.channel import MAX_INFLIGHT
from paglets.transport.filebody import CHUNK
from paglets.wire import strict_json
from paglets.wire.channel import (
    CHANNEL_ROUTE,
    HEARTBEAT,
    MAX_BATCH,
    Call,
    parse_frame,
)
from paglets.wire.channel import Answer as ChannelAnswer
from paglets.wire.records import ErrorBody
from paglets.wire.relay import (
    DIAGNOSTICS_ROUTE,
    HOSTS_PREFIX,
    MAX_INLINE_BODY,
    PIPE_OVER,
    PIPE_ROUTE,
    POLL_ROUTE,
    SESSION_ROUTE,
    Poll,
    PollReply,
    RelayedCall,
    RelayedReply,
    Request,
    encode_items,
    frames_of,
    parse_answers,
    parse_session,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiohttp.typedefs import Handler

    from paglets.config import HostConfig
    from paglets.wire.relay import Answer

__all__ = ["POLL_HOLD", "RelayHub"]

log = logging.getLogger(__name__)

POLL_HOLD: Final = 20.0
"""The longest a long poll is held: well under the 60 s proxies allow by default."""
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
    }
)
MAX_FORWARDED_HEADERS: Final = 48
MAX_CHANNELS: Final = 64
"""Callers' channels a relayed host may have open through the hub at once."""
QUICK_FRAME: Final = 16 * 1024
"""A frame of answers this small goes to a caller that keeps up at once, in the turn
its answers came in (a write that cannot wait: far below the transport's high mark)."""
MAX_KEYLESS: Final = 8
"""Requests without the key (``/health``, the mesh hello) a relayed host may have
waiting at the hub at once: strangers cannot fill its queue, members still meet it."""


def session_rank(session: str) -> int:
    """The time a session id starts with (``<ns>-<hex>``); newer sessions rank higher."""
    head, _, _ = session.partition("-")
    return int(head) if head.isdigit() and len(head) <= 20 else 0  # noqa: PLR2004


@dataclass(eq=False)
class Link:
    """What the hub knows of one relayed host."""

    name: str
    session: str = ""
    transport: str = ""
    ws: web.WebSocketResponse | None = None
    connected_at: float = 0.0
    last_seen: float = 0.0
    polling: int = 0  # polls held now
    reconnects: int = -1  # sessions after the first
    queued: int = 0  # items not yet answered
    refusals: Counter[str] = field(default_factory=Counter)
    waiters: dict[int, asyncio.Future[Answer]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ws_sent: set[int] = field(default_factory=set)
    keyless: int = 0  # items without the key (health, hello) not yet answered
    channels: set[_Caller] = field(default_factory=set)  # callers' channels to the host
    calls: dict[int, _Waiting] = field(default_factory=dict)  # channel calls sent, by number

    @property
    def connected(self) -> bool:
        return self.ws is not None or self.polling > 0


class RelayHub:
    """The hub of one host; see the module docstring.

    Args:
        config: the host's options (``relay_*``, ``home``, ``transfer_fsync``).
    """

    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.queue = RelayQueue(config.home / "relay.sqlite3", sync=config.transfer_fsync)
        self.links: dict[str, Link] = {}
        self.pipes: dict[str, _Pipe] = {}
        self._stopping = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)  # of channel calls, unique while the hub runs

    def __repr__(self) -> str:
        return f"<RelayHub {self.config.name} {len(self.links)} links>"

    def install(self, app: web.Application) -> None:
        """Add the relay routes, the forwarding middleware and the queue's lifetime."""
        app.router.add_get(SESSION_ROUTE, self._session)
        app.router.add_post(POLL_ROUTE, self._poll)
        app.router.add_get(DIAGNOSTICS_ROUTE, self._diagnostics)
        app.router.add_get(PIPE_ROUTE, self._pipe)
        app.middlewares.append(self._forward_middleware)
        app.cleanup_ctx.append(self._queue_ctx)
        app.on_shutdown.append(self._say_bye)

    async def _queue_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        for name in await self.queue.hosts():  # items accepted before a restart
            link = self._link(name)
            link.queued = (await self.queue.depth(name)).items
            link.last_seen = time.time()  # offline only after --relay-offline-after
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.queue.close()

    def _link(self, name: str) -> Link:
        link = self.links.get(name)
        if link is None:
            link = self.links[name] = Link(name)
        return link

    # -- sessions -------------------------------------------------------------------

    def _open(self, link: Link, session: str, transport: str) -> None:
        """Make ``session`` the link's current one; a newer one replaces an older one.

        Raises:
            RequestError: ``session`` is older than the link's current one (409).
        """
        if session == link.session:
            link.transport = transport
            return
        if link.session and session_rank(session) < session_rank(link.session):
            link.refusals["replaced"] += 1
            raise _Replaced(f"session {session} of {link.name} was replaced by a newer one")
        old = link.ws
        if old is not None:
            link.ws = None
            self._spawn(old.close(code=WSCloseCode.POLICY_VIOLATION, message=b"replaced"))
        link.session, link.transport = session, transport
        link.connected_at = time.time()
        link.reconnects += 1
        link.ws_sent.clear()
        link.wake.set()  # a poll of the old session returns
        log.info("relayed host %s connected (%s, session %s)", link.name, transport, session)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket session of a relayed host (see the module docstring)."""
        name = check_id(request.query.get("name", ""), IdKind.HOST)
        try:
            session = parse_session(request.query.get("session", ""))
        except ProtocolError as exc:
            raise RequestError(str(exc)) from None
        if self._stopping:
            raise HostUnavailableError(f"hub {self.config.name} is stopping")
        link = self._link(name)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT / 3, max_msg_size=2 * MAX_INLINE_BODY)
        await ws.prepare(request)
        try:
            self._open(link, session, "websocket")
        except _Replaced as exc:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=str(exc).encode()[:120])
            return ws
        link.ws = ws
        sender = asyncio.create_task(self._send_loop(link, ws))
        try:
            async for msg in ws:
                link.last_seen = time.time()
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    answers = parse_answers(msg.data)
                except ProtocolError as exc:
                    await ws.close(
                        code=WSCloseCode.POLICY_VIOLATION, message=str(exc).encode()[:120]
                    )
                    break
                await self._took(link, answers)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if link.ws is ws:
                link.ws = None
                link.last_seen = time.time()
            self._session_ended(link, ws)
        return ws

    async def _send_loop(self, link: Link, ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not ws.closed:
                link.wake.clear()
                fresh = [
                    r
                    for r in await self.queue.pending(link.name, MAX_BATCH + len(link.ws_sent))
                    if r.seq not in link.ws_sent
                ]
                for frame in encode_items(fresh):
                    await ws.send_str(frame)
                link.ws_sent.update(r.seq for r in fresh)
                if self._stopping:
                    await ws.send_str(strict_json.dumps({"t": "bye", "reason": self._stopping}))
                    return
                await link.wake.wait()

    async def _poll(self, request: web.Request) -> web.Response:
        """One long poll of a relayed host (see the module docstring)."""
        name = check_id(request.query.get("name", ""), IdKind.HOST)
        try:
            wait = min(float(request.query.get("wait", POLL_HOLD)), POLL_HOLD)
            seen = int(request.query.get("seen", "0"))
        except ValueError:
            raise RequestError("wait must be seconds and seen a seq number") from None
        try:
            poll = Poll.parse(await read_json(request, 2 * MAX_INLINE_BODY + 65536, 30.0))
        except ProtocolError as exc:
            raise RequestError(str(exc)) from None
        link = self._link(name)
        try:
            self._open(link, poll.session, "long-poll")
        except _Replaced as exc:
            return _refused(RequestError(str(exc)), 409, "replaced")
        link.last_seen = time.time()
        for answer in poll.answers:
            await self._answered(link, answer)
        link.polling += 1
        try:
            deadline = time.monotonic() + max(wait, 0.0)
            while True:
                link.wake.clear()
                fresh = [r for r in await self.queue.pending(link.name, MAX_BATCH) if r.seq > seen]
                left = deadline - time.monotonic()
                if fresh or self._stopping or left <= 0 or link.session != poll.session:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await link.wake.wait()
        finally:
            link.polling -= 1
            link.last_seen = time.time()
        bye = self._stopping or ("replaced" if link.session != poll.session else "")
        return json_response(PollReply(tuple(fresh), bye).to_dict())

    async def _answered(self, link: Link, answer: Answer) -> None:
        # The caller hears the answer first; the item is forgotten after. A hub killed
        # in between hands it to its host again, which drops it as a duplicate by id.
        waiter = link.waiters.pop(answer.seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)
        if await self.queue.drop(link.name, answer.seq):
            link.queued = max(0, link.queued - 1)
        link.ws_sent.discard(answer.seq)

    async def _say_bye(self, _app: web.Application) -> None:
        self._stopping = f"hub {self.config.name} is stopping"
        for link in self.links.values():
            for caller in list(link.channels):  # their clients go on over HTTP
                self._spawn(caller.close(WSCloseCode.GOING_AWAY, self._stopping))
            link.wake.set()
            for waiter in link.waiters.values():  # their callers hear it now, not at a timeout
                if not waiter.done():
                    waiter.set_exception(_Stopping(self._stopping))
        await asyncio.sleep(0.05)  # the send loops and polls answer first

    # -- forwarding -----------------------------------------------------------------

    @web.middleware
    async def _forward_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        if not raw.startswith(HOSTS_PREFIX):
            return await handler(request)
        name, _, tail = raw[len(HOSTS_PREFIX) :].partition("/")
        check_id(name, IdKind.HOST)
        tail = "/" + tail
        if ".." in tail.split("/") or not tail.startswith(("/v1/", "/health")):
            raise RequestError(f"no route {tail!r} on relayed host {name}: expected /v1/...")
        if request.headers.get("Upgrade"):
            if tail == CHANNEL_ROUTE and request.method == "GET":
                return await self._channel(name, request)
            raise web.HTTPNotFound(text=f"no WebSocket to {tail!r} of a relayed host; use HTTP")
        query = request.rel_url.raw_query_string
        return await self.forward(name, request, tail + (f"?{query}" if query else ""))

    async def forward(self, name: str, request: web.Request, path: str) -> web.StreamResponse:
        """Queue ``request`` for the relayed host ``name`` and answer what it answers."""
        cfg = self.config
        link = self.links.get(name)
        now = time.time()
        if link is None or (not link.connected and now - link.last_seen > cfg.relay_offline_after):
            if link is not None:
                link.refusals["offline"] += 1
            seen = (
                "never connected" if link is None else f"offline for {now - link.last_seen:.0f} s"
            )
            return _refused(
                HostUnavailableError(f"relayed host {name} is {seen} (no session to this hub)"),
                503,
                "offline",
            )
        keyless = is_open(path.partition("?")[0])
        if keyless and link.keyless >= MAX_KEYLESS:
            link.refusals["keyless-full"] += 1
            return _refused(
                RelayQueueFullError(
                    f"{link.keyless} requests without the key wait for {name} already "
                    f"(at most {MAX_KEYLESS}); try again later, or send the key"
                ),
                429,
                "keyless-full",
            )
        link.keyless += keyless
        try:
            return await self._queue_and_deliver(link, request, path)
        finally:
            link.keyless -= keyless

    async def _queue_and_deliver(
        self, link: Link, request: web.Request, path: str
    ) -> web.StreamResponse:
        """Accept ``request`` durably for ``link``'s host, hand it over, answer its answer."""
        cfg, name = self.config, link.name
        if link.queued >= cfg.relay_queue_limit:
            link.refusals["queue-full"] += 1
            return _refused(
                RelayQueueFullError(
                    f"the relay queue of {name} is full ({link.queued} items, "
                    f"--relay-queue-limit {cfg.relay_queue_limit}); try again later"
                ),
                429,
                "queue-full",
            )
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP][
            :MAX_FORWARDED_HEADERS
        ]
        length = request.content_length
        pipe = ""
        body = b""
        if request.body_exists and (length is None or length > PIPE_OVER):
            pipe = uuid.uuid4().hex  # the body streams to the host when it asks for it
            if length is not None:
                headers.append(("Content-Length", str(length)))
            self.pipes[pipe] = _Pipe(request)
        elif request.body_exists:
            body = await read_capped(request, PIPE_OVER, cfg.read_timeout)
        try:
            item = await self.queue.put(
                name,
                Request(1, uuid.uuid4().hex, request.method, path, tuple(headers), body, pipe),
            )
            return await self._deliver(link, item)
        finally:
            if pipe:
                await self._close_pipe(pipe)

    async def _deliver(self, link: Link, item: Request) -> web.StreamResponse:
        """Hand ``item`` (accepted) to its host; answer what the host answers."""
        cfg, name = self.config, link.name
        link.queued += 1
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        link.waiters[item.seq] = waiter
        link.wake.set()
        try:
            answer = await self._answer_of(item, waiter)
        except _Stopping as exc:
            return _refused(
                HostUnavailableError(f"{exc}; the request stays queued for {name}"), 503, "stopping"
            )
        except TimeoutError:
            link.refusals["timeout"] += 1
            return _refused(
                PagletTimeoutError(
                    f"relayed host {name} did not answer within {cfg.relay_delivery_timeout:g} s "
                    "(--relay-delivery-timeout); the request stays queued for it"
                ),
                504,
                "timeout",
            )
        finally:
            link.waiters.pop(item.seq, None)
        response = web.Response(status=answer.status, body=answer.body)
        for key, value in answer.headers:
            if key.lower() not in HOP_BY_HOP:
                response.headers.add(key, value)
        return response

    async def _answer_of(self, item: Request, waiter: asyncio.Future[Answer]) -> Answer:
        """The answer to ``item``; `TimeoutError` after ``--relay-delivery-timeout``, counted
        again while its piped body is still streaming to the host."""
        while True:
            try:
                async with asyncio.timeout(self.config.relay_delivery_timeout):
                    return await asyncio.shield(waiter)
            except TimeoutError:
                entry = self.pipes.get(item.pipe) if item.pipe else None
                if entry is None or not entry.taken or entry.done.is_set():
                    raise

    async def _close_pipe(self, pipe: str) -> None:
        """Forget a pipe; wait (bounded) for a transfer of its body still under way."""
        entry = self.pipes.pop(pipe, None)
        if entry is not None and entry.taken:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.read_timeout):
                    await entry.done.wait()

    async def _pipe(self, request: web.Request) -> web.StreamResponse:
        """The body of a piped request, streamed to its relayed host as it arrives (once)."""
        try:
            pipe = parse_session(request.query.get("id", ""))
        except ProtocolError as exc:
            raise RequestError(str(exc)) from None
        entry = self.pipes.get(pipe)
        if entry is None or entry.taken:
            raise InvalidStateError(
                f"relay pipe {pipe} is gone or taken: its caller went away, or the hub restarted"
            )
        entry.taken = True
        try:
            source = entry.request
            response = web.StreamResponse()
            response.content_type = "application/octet-stream"
            if source.content_length is not None:
                response.content_length = source.content_length
            await response.prepare(request)
            async for chunk in source.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            entry.done.set()

    # -- channels -------------------------------------------------------------------

    async def _channel(self, name: str, request: web.Request) -> web.StreamResponse:
        """A caller's proxy channel to the relayed host ``name``, carried on its session.

        Who gets what: the hub's key was checked before (a caller without it, a
        paglet, a stranger get ``401``, as for every route but the open ones).

        Raises:
            HostUnavailableError: ``name`` has no session now, or the hub stops (503).
            RelayQueueFullError: ``name`` has `MAX_CHANNELS` channels open (429).
        """
        link = self.links.get(name)
        if link is None or link.ws is None or self._stopping:
            if link is not None and link.transport == "long-poll" and not self._stopping:
                raise web.HTTPNotFound(
                    text=f"relayed host {name} is on long polls: no channel to it; use HTTP"
                )
            raise HostUnavailableError(f"relayed host {name} has no session to this hub now")
        if len(link.channels) >= MAX_CHANNELS:
            link.refusals["channels-full"] += 1
            raise RelayQueueFullError(
                f"{len(link.channels)} channels to {name} are open through this hub already "
                f"(at most {MAX_CHANNELS}); use HTTP, or fewer clients"
            )
        ws = web.WebSocketResponse(
            max_msg_size=MAX_INLINE_BODY, heartbeat=HEARTBEAT, compress=False
        )
        await ws.prepare(request)
        caller = _Caller(ws, request.transport)
        link.channels.add(caller)
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    await caller.close(WSCloseCode.UNSUPPORTED_DATA, "text frames only")
                    break
                if not await self._take_calls(link, caller, frame.data):
                    break
        finally:
            link.channels.discard(caller)
            for number in caller.numbers:
                link.calls.pop(number, None)
        return ws

    async def _take_calls(self, link: Link, caller: _Caller, text: str) -> bool:
        """Send the calls of a caller's frame on the session, as one frame; whether to
        read on. Written at once, not at the end of the loop's turn: a client batches
        the calls of its turn already, and a turn less is worth more than a frame less."""
        try:
            calls, refused = _calls_of(text)
        except RequestError as exc:
            await caller.close(WSCloseCode.POLICY_VIOLATION, exc.message)
            return False
        texts = []
        for call in calls:
            await caller.slots.acquire()  # at most MAX_INFLIGHT waiting: reads wait
            ws = link.ws
            if ws is None or caller.ws.closed:
                caller.slots.release()
                await caller.close(WSCloseCode.GOING_AWAY, f"the session of {link.name} ended")
                return False
            number = next(self._numbers)
            caller.numbers.add(number)
            link.calls[number] = _Waiting(caller, call, ws)
            texts.append(RelayedCall(Call(number, call.op, call.target, call.body)).encode())
        if refused:
            await caller.send(refused)
        ws = link.ws
        try:
            if ws is None:
                raise ConnectionResetError
            for frame in frames_of(texts):
                await ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            if ws is not None:
                self._session_ended(link, ws)
            await caller.close(WSCloseCode.GOING_AWAY, f"the session of {link.name} ended")
            return False
        return True

    async def _took(self, link: Link, answers: list[Answer | RelayedReply]) -> None:
        """The items of a frame from a relayed host: replies to calls first (they wait
        for nothing), then answers to requests (each drops its item from the queue)."""
        replies = [a for a in answers if isinstance(a, RelayedReply)]
        if replies:
            await self._replied(link, replies)
        for answer in answers:
            if not isinstance(answer, RelayedReply):
                await self._answered(link, answer)

    async def _replied(self, link: Link, answers: list[RelayedReply]) -> None:
        """The host's answers to channel calls: to their callers, under their numbers."""
        ready: dict[_Caller, list[ChannelAnswer]] = {}
        for reply in answers:
            answer = reply.answer
            waiting = link.calls.pop(answer.id, None)
            if waiting is None:
                continue  # its caller went away, or a reply to a call of an older session
            waiting.caller.numbers.discard(answer.id)
            waiting.caller.slots.release()
            ready.setdefault(waiting.caller, []).append(
                ChannelAnswer(waiting.call.id, answer.status, answer.body)
            )
        for caller, them in ready.items():
            await caller.send(them)

    def _session_ended(self, link: Link, ws: web.WebSocketResponse) -> None:
        """Close the channels with calls the session ``ws`` carried: their clients send
        them again over HTTP, through the queue (see the module docstring)."""
        callers = {w.caller: w for w in link.calls.values() if w.ws is ws}
        for waiting in callers.values():
            self._fail(link, waiting)

    def _fail(self, link: Link, waiting: _Waiting) -> None:
        caller = waiting.caller
        for number in caller.numbers:
            link.calls.pop(number, None)
            caller.slots.release()  # a read waiting for a slot goes on, and sees it closed
        caller.numbers.clear()
        link.channels.discard(caller)
        self._spawn(caller.close(WSCloseCode.GOING_AWAY, f"the session of {link.name} ended"))

    # -- diagnostics ----------------------------------------------------------------

    async def _diagnostics(self, _request: web.Request) -> web.Response:
        """Per relayed host: transport, online, queue, oldest item, last poll, reconnects."""
        now = time.time()
        clients = []
        for link in sorted(self.links.values(), key=lambda x: x.name):
            depth = await self.queue.depth(link.name)
            clients.append(
                {
                    "name": link.name,
                    "transport": link.transport,
                    "online": link.connected,
                    "session": link.session,
                    "queue_items": depth.items,
                    "queue_bytes": depth.bytes,
                    "oldest_age": None if depth.oldest is None else round(now - depth.oldest, 3),
                    "last_seen_age": round(now - link.last_seen, 3) if link.last_seen else None,
                    "reconnects": max(link.reconnects, 0),
                    "channels": len(link.channels),
                    "channel_calls": len(link.calls),
                    "refusals": dict(link.refusals),
                }
            )
        return json_response({"hub": self.config.name, "clients": clients})


@dataclass(eq=False)
class _Pipe:
    """A piped request's body, waiting for its host to fetch it."""

    request: web.Request
    taken: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _calls_of(text: str) -> tuple[list[Call], list[ChannelAnswer]]:
    """The calls of a caller's frame, and the error answers to those with a bad field.

    Raises:
        RequestError: the frame is not calls (its message is the reason to close with).
    """
    try:
        items = parse_frame(text)
    except RequestError as exc:
        raise RequestError(f"not a channel frame: {exc.message}") from None
    calls, refused = [], []
    for item in items:
        try:
            calls.append(Call.parse(item))
        except RequestError as exc:
            call_id = Call.id_of(item)
            if call_id is None:
                raise RequestError(f"not a channel call: {exc.message}") from None
            error = ErrorBody(type(exc).__name__, exc.message).to_dict()
            refused.append(ChannelAnswer(call_id, exc.http_status, {"error": error}))
    return calls, refused


class _Caller:
    """A caller's channel to a relayed host."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        self.ws = ws
        self.slots = asyncio.Semaphore(MAX_INFLIGHT)
        self.numbers: set[int] = set()  # the hub's numbers of its calls waiting
        self._transport = transport
        self._sending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<_Caller waiting={len(self.numbers)}>"

    async def send(self, answers: list[ChannelAnswer]) -> None:
        """Send answers to the caller, without ever making the session wait for it.

        A frame is written at once when the caller keeps up (nothing of its own
        waits to go out, so this write cannot make the writer wait), else by a
        task of its own, in order behind the ones before it.
        """
        if self.ws.closed:
            return  # the client went away; its retries carry the same message ids
        for frame in frames_of([a.encode() for a in answers]):
            transport = self._transport
            quick = (
                not self._sending
                and transport is not None
                and transport.get_write_buffer_size() == 0
                and len(frame) < QUICK_FRAME
            )
            if quick:
                with contextlib.suppress(ConnectionError, RuntimeError):  # closed meanwhile
                    await self.ws.send_str(frame)
                continue
            previous = next(iter(self._sending), None)
            task = asyncio.create_task(self._send_after(previous, frame))
            self._sending = {task}
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)

    async def _send_after(self, previous: asyncio.Task[None] | None, frame: str) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        with contextlib.suppress(ConnectionError, RuntimeError):  # closed meanwhile
            await self.ws.send_str(frame)

    async def close(self, code: int, reason: str) -> None:
        """Close the channel: its client sends the calls still waiting again over HTTP."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode()[:120])


@dataclass(eq=False)
class _Waiting:
    """A channel call sent to the relayed host (on the session ``ws``), not yet answered."""

    caller: _Caller
    call: Call
    ws: web.WebSocketResponse


class _Stopping(Exception):  # noqa: N818 - internal signal
    """The hub stops before the answer came."""


class _Replaced(Exception):  # noqa: N818 - internal signal, never answered as is
    """A session older than the link's current one (answered 409)."""


def _refused(exc: PagletError, status: int, reason: str) -> web.Response:
    """An error response for a refused relay request, with ``Retry-After`` and a reason."""
    response = error_response(exc)
    response.set_status(status)
    response.headers["Retry-After"] = "1"
    response.headers["X-Paglets-Relay-Refusal"] = reason
    return response
