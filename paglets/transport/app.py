"""The host's aiohttp application: routes of the ``/v1`` control API.

The host owns the `aiohttp.web.Application` (never subclassed) and
passes everything the routes need as one `ApiContext` under a typed
``AppKey``. Every error leaves as JSON ``{"error": {type, message, traceback}}``
with the status its `PagletError` class names.

Every request passes one middleware, `front_middleware`: it tells the
connection guard the head has arrived, checks the key, checks the identifiers
in the URL and turns every error into its JSON body (one layer, not four: a
message's round trip pays for each). Every identifier in a URL (``{agent_id}``,
``{message_id}``, ``{transfer_id}``) is checked once, there, before any handler
sees it; a route whose URL holds a name `ROUTE_IDS` does not know stops the host
at start, so a route added later cannot skip the check.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from paglets.core.errors import (
    PagletError,
    RequestError,
)
from paglets.core.events import EventKind
from paglets.core.ids import IdKind, check_id
from paglets.core.policy import RestartPolicy
from paglets.runtime.delivery import SendMode
from paglets.transport.auth import check_key, is_open
from paglets.transport.body import json_response, read_json
from paglets.wire.records import (
    API_PREFIX,
    CreateRequest,
    ErrorBody,
    PagletInfo,
    SendRequest,
    event_to_dict,
)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from aiohttp.typedefs import Handler, Middleware

    from paglets.core.status import HostStatus
    from paglets.persistence.events import EventLog
    from paglets.runtime.records import AgentRecord
    from paglets.runtime.supervisor import Supervisor
    from paglets.transport.guard import ConnectionGuard
    from paglets.wire.records import HostInfo

log = logging.getLogger(__name__)

MAX_WAIT = 60.0


@dataclass(frozen=True)
class ApiContext:
    """What the routes need from the host."""

    supervisor: Supervisor
    events: EventLog
    host_info: Callable[[], HostInfo]
    status: Callable[[], HostStatus]
    api_key: str | None
    max_body: int
    read_timeout: float
    debug_errors: bool = False  # tracebacks in error bodies (--debug-errors)


API: web.AppKey[ApiContext] = web.AppKey("paglets.transport.app.API", ApiContext)


def error_response(exc: PagletError, *, debug: bool = False) -> web.Response:
    """The JSON error response for ``exc``; its traceback only with ``debug``."""
    body = ErrorBody(type(exc).__name__, exc.message, exc.remote_traceback if debug else None)
    return json_response({"error": body.to_dict()}, status=exc.http_status)


def unexpected_error(exc: Exception, what: str, *, debug: bool = False) -> dict[str, Any]:
    """The error body of a bug met serving ``what``: logged, with an id to find it by."""
    error_id = uuid.uuid4().hex[:12]
    log.error("unexpected error %s serving %s", error_id, what, exc_info=exc)
    message = f"internal error {error_id}; the host's log has its details"
    if debug:
        message = f"internal error {error_id}: {type(exc).__name__}: {exc}"
    body = ErrorBody("HostError", message, traceback.format_exc() if debug else None)
    return {"error": body.to_dict()}


def _error_answer(request: web.Request, exc: Exception, *, debug: bool) -> web.StreamResponse:
    """The JSON error answer for ``exc``, raised serving ``request``; a redirect is raised on.

    An unexpected exception is a bug: it is logged with its traceback and an
    error id, and the caller gets a ``500 HostError`` naming that id only.
    """
    if isinstance(exc, PagletError):
        return error_response(exc, debug=debug)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:  # noqa: PLR2004 - redirects pass through
            raise exc
        kind = "PagletNotFoundError" if exc.status == 404 else "RequestError"  # noqa: PLR2004
        body = ErrorBody(kind, f"{exc.status} {exc.reason}: {request.method} {request.path}")
        return json_response({"error": body.to_dict()}, status=exc.status)
    what = f"{request.method} {request.path}"
    return json_response(unexpected_error(exc, what, debug=debug), status=500)


def front_middleware(
    api_key: str | None, guard: ConnectionGuard | None, *, debug: bool = False
) -> Middleware:
    """The one middleware of the host's application; see the module docstring.

    In order: the guard hears the head has arrived (`ConnectionGuard.request_started`);
    a route other than `paglets.transport.auth.OPEN_PATHS` needs the key; each
    identifier in the URL is checked (`ROUTE_IDS`); every error leaves as an error
    body, without a traceback unless ``debug``; the guard hears the answer is done.
    """
    expected = api_key.encode() if api_key else None

    @web.middleware
    async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
        open_route = is_open(request.path)
        conn = guard.request_started(request, open_route=open_route) if guard else None
        try:
            if expected is not None and not open_route:
                check_key(request, expected)
            for name, value in request.match_info.items():
                check_id(value, ROUTE_IDS[name])
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - every error leaves as an answer
            return _error_answer(request, exc, debug=debug)
        finally:
            if conn is not None:
                conn.request_done()

    return front


ROUTE_IDS: Final[dict[str, IdKind]] = {
    "agent_id": IdKind.AGENT,
    "message_id": IdKind.MESSAGE,
    "transfer_id": IdKind.TRANSFER,
    "code_id": IdKind.CODE,
    "service": IdKind.SERVICE,
    "artifact": IdKind.ARTIFACT,
}
"""The kind of every identifier a route may take from its URL, by its name there."""


async def check_route_ids(app: web.Application) -> None:
    """At start: every name a route takes from its URL is an identifier of a known kind.

    Raises:
        TypeError: a route takes a name `ROUTE_IDS` does not know (a programming error).
    """
    for resource in app.router.resources():
        pattern = resource.get_info().get("pattern")
        names = set(pattern.groupindex) if pattern is not None else set()
        unknown = names - ROUTE_IDS.keys()
        if unknown:
            raise TypeError(
                f"route {resource.canonical} takes {sorted(unknown)} from its URL; "
                "add each to paglets.transport.app.ROUTE_IDS with its IdKind"
            )


def paglet_info(record: AgentRecord, ctx: ApiContext) -> PagletInfo:
    sup = ctx.supervisor
    return PagletInfo(
        agent_id=record.agent_id,
        class_path=record.class_path,
        host=sup.host_name,
        host_url=sup.host_url,
        status=record.status.value,
        created_at=record.created_at,
        pid=record.pid,
        pending=record.pending,
        exit_reason=record.exit.reason.value if record.exit else None,
        exit_detail=record.exit.detail if record.exit else None,
    )


def _query_float(request: web.Request, name: str, default: float, upper: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RequestError(f"query parameter {name!r} must be a number") from None
    if not 0 <= value <= upper:
        raise RequestError(f"query parameter {name!r} must be between 0 and {upper:g}")
    return value


def _query_int(request: web.Request, name: str, default: int, upper: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"query parameter {name!r} must be an integer") from None
    if not 0 <= value <= upper:
        raise RequestError(f"query parameter {name!r} must be between 0 and {upper}")
    return value


# -- handlers -------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    ctx = request.app[API]
    return json_response({"status": ctx.status().value})


async def host_info(request: web.Request) -> web.Response:
    return json_response(request.app[API].host_info().to_dict())


async def list_paglets(request: web.Request) -> web.Response:
    ctx = request.app[API]
    return json_response(
        {"paglets": [paglet_info(r, ctx).to_dict() for r in ctx.supervisor.list()]}
    )


async def create_paglet(request: web.Request) -> web.Response:
    ctx = request.app[API]
    req: CreateRequest = CreateRequest.parse(
        await read_json(request, ctx.max_body, ctx.read_timeout)
    )
    if req.state is not None and not isinstance(req.state, dict):
        raise RequestError("'state' must be a JSON object of the state's fields")
    policy = None if req.restart_policy is None else RestartPolicy.from_dict(req.restart_policy)
    record = await ctx.supervisor.create(
        req.class_path, req.state, req.agent_id, restart_policy=policy
    )
    return json_response(paglet_info(record, ctx).to_dict(), status=201)


async def get_paglet(request: web.Request) -> web.Response:
    ctx = request.app[API]
    record = ctx.supervisor.get(request.match_info["agent_id"])
    return json_response(paglet_info(record, ctx).to_dict())


async def get_state(request: web.Request) -> web.Response:
    ctx = request.app[API]
    state = await ctx.supervisor.state(request.match_info["agent_id"])
    return json_response({"state": state})


async def send_message(request: web.Request) -> web.Response:
    ctx = request.app[API]
    req = SendRequest.parse(await read_json(request, ctx.max_body, ctx.read_timeout))
    status, body = await deliver(ctx, request.match_info["agent_id"], req)
    return json_response(body, status=status)


_MODES: Final = {mode.value: mode for mode in SendMode}


def _message_id(req: SendRequest, mode: SendMode) -> str | None:
    """The message's id: the sender's, or a new one for a future (its result's key)."""
    if req.message_id is None and mode is SendMode.FUTURE:
        return uuid.uuid4().hex
    return req.message_id


def replied(reply: Any) -> tuple[int, dict[str, Any]]:
    """What a synchronous message is answered once its paglet replied: status and body."""
    return 200, {"reply": reply}


def _accepted(message_id: str | None) -> tuple[int, dict[str, Any]]:
    """What a one-way or future message is answered once it is queued: status and body."""
    return 202, {"accepted": True, "message_id": message_id}


async def deliver(ctx: ApiContext, agent_id: str, req: SendRequest) -> tuple[int, dict[str, Any]]:
    """Deliver a message as ``POST /v1/paglets/{agent_id}/messages`` does: status and body."""
    mode = _MODES[req.mode]  # one of them: SendRequest.parse checked it
    message_id = _message_id(req, mode)
    reply = await ctx.supervisor.delivery.send(
        agent_id,
        req.kind,
        req.args,
        priority=req.priority,
        message_id=message_id,
        sender=req.sender,
        mode=mode,
        timeout=req.timeout,
        no_delay=req.no_delay,
    )
    return replied(reply) if mode is SendMode.SYNC else _accepted(message_id)


def deliver_now(
    ctx: ApiContext, agent_id: str, req: SendRequest
) -> tuple[int, dict[str, Any]] | asyncio.Future[Any] | None:
    """`deliver`, with nothing to await, when the paglet can take the message now.

    Returns a one-way or future message's status and body; a synchronous one's
    reply future (answered as `replied` once it resolves); ``None`` when
    `deliver` must run instead (the paglet is to be woken, or a synchronous
    send has a timeout), with nothing done.

    Raises:
        PagletError: the message is refused, as `deliver` refuses it.
    """
    mode = _MODES[req.mode]
    if mode is SendMode.SYNC and req.timeout is not None:
        return None
    delivery = ctx.supervisor.delivery
    recipient = delivery.running(agent_id)
    if recipient is None:
        return None
    message_id = _message_id(req, mode)
    waiter = delivery.post(
        recipient, req.kind, req.args, req.priority, message_id, req.sender, mode
    )
    return waiter if waiter is not None else _accepted(message_id)


async def message_result(request: web.Request) -> web.Response:
    ctx = request.app[API]
    wait = _query_float(request, "wait", 0.0, MAX_WAIT)
    return json_response(
        await future_result(
            ctx, request.match_info["agent_id"], request.match_info["message_id"], wait
        )
    )


async def future_result(
    ctx: ApiContext, agent_id: str, message_id: str, wait: float
) -> dict[str, Any]:
    """A future's reply, as ``GET /v1/paglets/{agent_id}/messages/{message_id}`` answers it."""
    done, reply = await ctx.supervisor.delivery.result(agent_id, message_id, wait)
    return {"done": done, "reply": reply}


async def dispose_paglet(request: web.Request) -> web.Response:
    ctx = request.app[API]
    await ctx.supervisor.dispose(request.match_info["agent_id"])
    return json_response({"disposed": True})


async def list_events(request: web.Request) -> web.Response:
    ctx = request.app[API]
    since = _query_int(request, "since", 0, 2**62)
    limit = _query_int(request, "limit", 100, 10_000)
    wait = _query_float(request, "wait", 0.0, MAX_WAIT)
    agent_id = request.query.get("agent_id")
    if agent_id is not None:
        check_id(agent_id, IdKind.AGENT)
    kinds = None
    if "kind" in request.query:
        try:
            kinds = [EventKind(k) for k in request.query.getall("kind")]
        except ValueError as exc:
            raise RequestError(f"unknown event kind: {exc}") from None
    events = await ctx.events.query_async(since, limit, agent_id=agent_id, kinds=kinds)
    if not events and wait > 0 and await ctx.events.wait_after(since, wait):
        events = await ctx.events.query_async(since, limit, agent_id=agent_id, kinds=kinds)
    cursor = events[-1].cursor if events else max(since, 0)
    shown = [event_to_dict(e) for e in events]
    if not ctx.debug_errors:  # a paglet's failure notes carry tracebacks: debug only
        for event in shown:
            if isinstance(event["data"], dict) and "traceback" in event["data"]:
                event["data"] = {k: v for k, v in event["data"].items() if k != "traceback"}
    return json_response({"events": shown, "cursor": cursor})


def build_app(ctx: ApiContext, guard: ConnectionGuard | None = None) -> web.Application:
    """The application serving the control API for one host, its connections watched
    by ``guard``."""
    front = front_middleware(ctx.api_key, guard, debug=ctx.debug_errors)
    app = web.Application(middlewares=[front], client_max_size=ctx.max_body)
    app[API] = ctx
    app.on_startup.append(check_route_ids)
    p = API_PREFIX
    # The route of every message first: a request's route is found by trying,
    # in the order they were added, those under its URL's longest known prefix.
    app.router.add_post(f"{p}/paglets/{{agent_id}}/messages", send_message)
    app.router.add_get("/health", health)
    app.router.add_get(f"{p}/host", host_info)
    app.router.add_get(f"{p}/paglets", list_paglets)
    app.router.add_post(f"{p}/paglets", create_paglet)
    app.router.add_get(f"{p}/paglets/{{agent_id}}", get_paglet)
    app.router.add_delete(f"{p}/paglets/{{agent_id}}", dispose_paglet)
    app.router.add_get(f"{p}/paglets/{{agent_id}}/state", get_state)
    app.router.add_get(f"{p}/paglets/{{agent_id}}/messages/{{message_id}}", message_result)
    app.router.add_get(f"{p}/events", list_events)
    from paglets.transport.channel import add_routes  # noqa: PLC0415 - it imports this module

    add_routes(app)
    return app
