"""``GET /v1/channel``: a persistent WebSocket over which a client sends many messages.

A script or a host that sends many messages keeps one authenticated WebSocket
to a host and multiplexes its calls over it (`paglets.wire.channel`: numbered
calls, answers matched by number). A call does what the HTTP route does, with
the same checks, errors, ordering and exactly-once delivery by message id:

- ``send``: the body of ``POST /v1/paglets/{agent_id}/messages``; the answer is
  what that route answers (``200 {"reply"}``, or ``202 {"accepted",
  "message_id"}`` for one-way and future messages);
- ``result``: ``{"message_id", "wait"}``, as ``GET .../messages/{message_id}``;
- ``calls`` and ``lease`` (to a ``service`` by contract name): the body of
  ``POST /v1/services/{service}/calls`` or ``.../lease``, answered as those
  routes answer (`paglets.services.routes`).

One-way and future messages are taken in the order their frames arrive (each
is queued before the next frame is read); synchronous sends and waits for a
result run side by side, at most `MAX_INFLIGHT` at once per channel: past
that, the host reads no more frames until one finishes (the client's writes
wait, as over TCP); so too while more than `MAX_BACKLOG` answers wait for the
client to read them.

Who gets what: a caller with the key opens a channel as it would call any route;
without the key the upgrade is refused ``401`` like every route but ``/health``
and the mesh hello; a paglet holds no key; a stranger gets the same ``401``. A
frame may hold an array of calls (`paglets.wire.channel`), and the answers ready
in one turn of the host's loop go back as one frame. A frame that is not calls
closes the channel (code 1008, with the reason); a call with a bad field gets
its error answer, like a bad request.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from paglets.core.errors import HandlerError, PagletError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.services.routes import REGISTRY, answer_service
from paglets.transport.app import (
    API,
    MAX_WAIT,
    ApiContext,
    deliver,
    deliver_now,
    future_result,
    replied,
    unexpected_error,
)
from paglets.wire.channel import (
    CHANNEL_ROUTE,
    HEARTBEAT,
    MAX_BATCH,
    Answer,
    Call,
    encode_frame,
    parse_frame,
)
from paglets.wire.records import ErrorBody, SendRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from paglets.services.registry import ServiceRegistry

__all__ = ["MAX_INFLIGHT", "add_routes", "answer_call", "encoded_answer", "in_order"]

log = logging.getLogger(__name__)

MAX_INFLIGHT: Final = 256
ANSWER_CHUNK: Final = 64
"""Answers of one frame sent before the rest of it is taken: the two ends work at once."""
MAX_BACKLOG: Final = 4 * MAX_BATCH
"""Answers waiting to be written past which the host reads no more frames (the
client's writes wait, as over TCP) until they are."""

_OPEN: web.AppKey[set[web.WebSocketResponse[bool]]] = web.AppKey("paglets.transport.channel.OPEN")
# Calls running, of every channel: kept until they finish, a channel closed or not.
_RUNNING: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("paglets.transport.channel.RUNNING")


async def _answer(ctx: ApiContext, services: ServiceRegistry, call: Call) -> tuple[int, Any]:
    """What the HTTP API answers the same call: its status and body."""
    try:
        if call.op == "send":
            return await deliver(ctx, call.target, SendRequest.parse(call.body))
        if call.op == "result":
            return 200, await future_result(ctx, call.target, *_result_args(call.body))
        return 200, await answer_service(services, call.op, call.target, call.body)
    except Exception as exc:  # noqa: BLE001 - every error is an answer
        return _failure(ctx, call, exc)


def _failure(ctx: ApiContext, call: Call, exc: BaseException) -> tuple[int, Any]:
    """The answer to a call that raised ``exc``, as the HTTP API answers it."""
    if isinstance(exc, PagletError):
        tb = exc.remote_traceback if ctx.debug_errors else None
        return exc.http_status, {"error": ErrorBody(type(exc).__name__, exc.message, tb).to_dict()}
    # a bug: logged, answered 500 with its id
    what = f"channel {call.op} to {call.target}"
    if not isinstance(exc, Exception):  # a reply's future holds only Exceptions
        exc = RuntimeError(repr(exc))
    return 500, unexpected_error(exc, what, debug=ctx.debug_errors)


def _now(ctx: ApiContext, call: Call) -> tuple[int, Any] | asyncio.Future[Any] | None:
    """A send its paglet takes at once, delivered with nothing to await
    (`deliver_now`): its answer, or a synchronous send's reply future (no task
    waits on it: a callback answers); ``None`` when the call needs `_answer`.

    Raises:
        PagletError: the send is refused (a bad body, a full mailbox...).
    """
    if call.op != "send":
        return None
    return deliver_now(ctx, call.target, SendRequest.parse(call.body))


def _result_args(body: dict[str, Any]) -> tuple[str, float]:
    if set(body) - {"message_id", "wait"}:
        raise RequestError('a result call\'s body is {"message_id", "wait"}')
    wait = body.get("wait", 0.0)
    if type(wait) not in (int, float) or not 0 <= wait <= MAX_WAIT:
        raise RequestError(f"'wait' must be a number of seconds from 0 to {MAX_WAIT:g}")
    return check_id(body.get("message_id"), IdKind.MESSAGE), float(wait)


def answer_call(app: web.Application, call: Call) -> Awaitable[tuple[int, Any]]:
    """What ``app``'s API answers ``call``, as over a channel to it: its status and body.

    A relayed host (`paglets.mesh.relayclient`) answers the channel calls its hub
    carries to it with this.
    """
    return _answer(app[API], app[REGISTRY], call)


def in_order(call: Call) -> bool:
    """Whether a call is taken before the calls after it (one-way and future sends)."""
    return _in_order(call)


def encoded_answer(answer: Answer) -> str:
    """The answer's JSON; one strict JSON cannot carry becomes a 422, as over HTTP."""
    return _encoded(answer)


def _in_order(call: Call) -> bool:
    """Whether the call is taken before the next frame is read (one-way and future sends)."""
    return call.op == "send" and call.body.get("mode", "sync") in ("oneway", "future")


def _encoded(answer: Answer) -> str:
    """The answer's JSON; a reply strict JSON cannot carry is a 422, as over HTTP."""
    try:
        return answer.encode()
    except (ValueError, TypeError) as exc:
        error = HandlerError(
            f"the answer holds a number JSON cannot carry ({exc}); use finite numbers"
        )
        body = {"error": ErrorBody(type(error).__name__, error.message).to_dict()}
        return Answer(answer.id, error.http_status, body).encode()


class _Outbox:
    """Answers ready in one turn of the loop, sent as one frame at its end, in order.

    One task writes them: started by the first answer of a turn, it runs right
    after that turn and takes every answer put by then (`MAX_BATCH` a frame).
    """

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._items: list[str] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Answers not written yet (the client reads slower than it asks)."""
        return len(self._items)

    def put(self, answer: Answer) -> None:
        if self._ws.closed:
            return  # the client went away; its retries carry the same message ids
        self._items.append(_encoded(answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._items and not self._ws.closed:
                items = self._items[:MAX_BATCH]
                del self._items[:MAX_BATCH]
                await self._ws.send_str(encode_frame(items))
        except (ConnectionError, RuntimeError):  # closed meanwhile
            self._items.clear()
        finally:
            self._writer = None

    async def let_out(self) -> None:
        """Yield a turn of the loop so the writer sends the answers waiting: the
        client works on them while this host goes on with its frame."""
        if self._items:
            await asyncio.sleep(0)

    async def drained(self) -> None:
        """Wait until the answers put so far are written (or the channel closed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)


class _Slots:
    """The calls of one channel running side by side (synchronous sends, waits)."""

    def __init__(self) -> None:
        self.running = 0
        self._freed: asyncio.Future[None] | None = None

    @property
    def full(self) -> bool:
        return self.running >= MAX_INFLIGHT

    async def room(self) -> None:
        """Wait until fewer than `MAX_INFLIGHT` run."""
        while self.full:
            if self._freed is None or self._freed.done():
                self._freed = asyncio.get_running_loop().create_future()
            await self._freed

    def free(self) -> None:
        """One finished."""
        self.running -= 1
        if self._freed is not None and not self._freed.done():
            self._freed.set_result(None)


class _Calls:
    """The calls of one channel: taken in frame order, answered through its outbox.

    A send its paglet takes at once is delivered with nothing to await (`_now`):
    a one-way or future send is answered there, a synchronous one by a callback
    on its reply's future; no coroutine or task per message. Other calls that
    may wait run as tasks, side by side (`_Slots`); one-way and future sends
    are taken before the next call is read (`in_order`).
    """

    def __init__(self, ctx: ApiContext, services: ServiceRegistry, outbox: _Outbox) -> None:
        self._ctx, self._services, self._outbox = ctx, services, outbox
        self._slots = _Slots()

    def take_now(self, call: Call, running: set[asyncio.Task[None]]) -> bool:
        """Start ``call`` (a task it runs as goes into ``running``), or answer it, with
        nothing to await; ``False`` (nothing done) when `take` must: no room, or a
        one-way or future send that waits to be delivered."""
        if self._slots.full:
            return False
        ctx, outbox = self._ctx, self._outbox
        try:
            now = _now(ctx, call)
        except Exception as exc:  # noqa: BLE001 - every error is an answer
            outbox.put(Answer(call.id, *_failure(ctx, call, exc)))
            return True
        if isinstance(now, tuple):
            outbox.put(Answer(call.id, *now))
            return True
        if now is None and _in_order(call):
            return False
        self._slots.running += 1
        if now is not None:
            now.add_done_callback(partial(self._replied, call))
            return True
        task = asyncio.create_task(self._reply(call))
        running.add(task)
        task.add_done_callback(running.discard)
        return True

    async def take(self, call: Call, running: set[asyncio.Task[None]]) -> None:
        """`take_now`, after waiting for room; a one-way or future send is answered
        once delivered (so it is taken before the calls after it)."""
        await self._slots.room()
        if not self.take_now(call, running):
            self._outbox.put(Answer(call.id, *await _answer(self._ctx, self._services, call)))

    async def _reply(self, call: Call) -> None:
        try:
            self._outbox.put(Answer(call.id, *await _answer(self._ctx, self._services, call)))
        finally:
            self._slots.free()

    def _replied(self, call: Call, waited: asyncio.Future[Any]) -> None:
        self._slots.free()
        if waited.cancelled():  # nothing cancels it: a bug, answered as one
            failed = _failure(self._ctx, call, RuntimeError("the reply's future was cancelled"))
            self._outbox.put(Answer(call.id, *failed))
            return
        error = waited.exception()
        if error is None:
            self._outbox.put(Answer(call.id, *replied(waited.result())))
        else:
            self._outbox.put(Answer(call.id, *_failure(self._ctx, call, error)))


async def serve_channel(request: web.Request) -> web.WebSocketResponse:
    ctx = request.app[API]
    ws = web.WebSocketResponse(max_msg_size=ctx.max_body, heartbeat=HEARTBEAT, compress=False)
    await ws.prepare(request)
    request.app[_OPEN].add(ws)
    running = request.app[_RUNNING]
    outbox = _Outbox(ws)
    calls = _Calls(ctx, request.app[REGISTRY], outbox)
    try:
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
                break
            if outbox.backlog > MAX_BACKLOG:  # the client does not read its answers
                await outbox.drained()
            try:
                items = parse_frame(frame.data)
            except RequestError as exc:
                reason = f"not a channel frame: {exc.message}"[:120].encode()
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason)
                break
            for item in items:
                try:
                    call = Call.parse(item)
                except RequestError as exc:
                    call_id = Call.id_of(item)
                    if call_id is None:
                        reason = f"not a channel call: {exc.message}"[:120].encode()
                        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason)
                        return ws
                    error = ErrorBody(type(exc).__name__, exc.message).to_dict()
                    outbox.put(Answer(call_id, exc.http_status, {"error": error}))
                    continue
                if not calls.take_now(call, running):
                    await calls.take(call, running)
                if outbox.backlog >= ANSWER_CHUNK:
                    await outbox.let_out()
            await outbox.let_out()  # the answers of this frame go before the next is read
    finally:
        # Calls still running go on, as an HTTP request's handler does when its
        # client leaves: a message taken is handled, and a retry with its id
        # (over HTTP, or a new channel) gets its reply.
        request.app[_OPEN].discard(ws)
    return ws


async def _close_all(app: web.Application) -> None:
    """The host stops: close every channel first, so no handler holds the stop up."""
    channels = app[_OPEN]
    for ws in list(channels):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"host stopping")


def add_routes(app: web.Application) -> None:
    """Serve the channel in ``app`` (whose `API` context the calls use)."""
    app[_OPEN] = set()
    app[_RUNNING] = set()
    app.on_shutdown.append(_close_all)
    app.router.add_get(CHANNEL_ROUTE, serve_channel)
