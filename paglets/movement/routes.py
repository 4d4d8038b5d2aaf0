"""The movement routes of the ``/v1`` API.

=======  ===================================  ==============================================
POST     ``/v1/paglets/{id}/move``            ``{"kind": "dispatch"|"clone"|"retract",
                                              "target", "ticket"}`` → where it runs now
POST     ``/v1/retract``                      ``{"agent_id", "host", "ticket"}``: pull a paglet
                                              from ``host`` to this host
POST     ``/v1/transfers``                    a movement envelope
                                              (``application/vnd.paglets.envelope``), with the
                                              ``X-Paglets-Transfer`` id header
POST     ``/v1/transfers/{id}/abort``         the source gives up: ``{"phase"}`` says whether
                                              the transfer had committed
=======  ===================================  ==============================================
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from paglets.core.errors import RequestError, TransferError
from paglets.core.ids import IdKind, check_id
from paglets.movement.source import MESH_HEADER, TRANSFER_HEADER
from paglets.transport.body import json_response, read_json
from paglets.wire.envelope import MEDIA_TYPE
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from paglets.movement.service import TransferService

log = logging.getLogger(__name__)

TRANSFERS: web.AppKey[TransferService] = web.AppKey("paglets.movement.routes.TRANSFERS")


async def _body(request: web.Request) -> dict[str, Any]:
    cfg = request.app[TRANSFERS].config
    data = await read_json(request, cfg.max_body, cfg.read_timeout)
    if not isinstance(data, dict):
        raise RequestError("expected a JSON object")
    return data


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise RequestError(f"{key!r} must be a non-empty string")
    return value


async def move(request: web.Request) -> web.Response:
    service = request.app[TRANSFERS]
    data = await _body(request)
    unknown = set(data) - {"kind", "target", "ticket"}
    if unknown:
        raise RequestError(f"unknown fields {sorted(unknown)}; expected kind, target, ticket")
    answer = await service.move(
        request.match_info["agent_id"],
        str(data.get("kind", "dispatch")),
        _opt_str(data, "target"),
        data.get("ticket"),
    )
    return json_response(answer)


async def retract(request: web.Request) -> web.Response:
    service = request.app[TRANSFERS]
    data = await _body(request)
    agent_id, host = _opt_str(data, "agent_id"), _opt_str(data, "host")
    if agent_id is None or host is None:
        raise RequestError("retract needs 'agent_id' and 'host' (the host it is on)")
    check_id(agent_id, IdKind.AGENT)
    return json_response(await service.retract(agent_id, host, data.get("ticket")))


async def receive(request: web.Request) -> web.Response:
    service = request.app[TRANSFERS]
    if request.content_type != MEDIA_TYPE:
        raise RequestError(f"a transfer body must be {MEDIA_TYPE}, not {request.content_type}")
    transfer_id = request.headers.get(TRANSFER_HEADER)
    if transfer_id is None:
        raise RequestError(f"a transfer needs the {TRANSFER_HEADER} header")
    try:
        check_id(transfer_id, IdKind.TRANSFER)
    except RequestError as exc:
        raise RequestError(f"the {TRANSFER_HEADER} header: {exc.message}") from None
    mine = service.config.mesh_version
    theirs = request.headers.get(MESH_HEADER)
    if theirs != mine:
        raise TransferError(
            f"host {service.config.name} runs mesh version {mine!r}, the sender {theirs!r}: "
            "paglets move only between hosts of the same --mesh-version"
        )
    timeout = service.config.read_timeout

    async def read(n: int) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await request.content.read(n)
        except TimeoutError:
            raise RequestError(f"no envelope bytes arrived for {timeout:g} s") from None
        except ConnectionError as exc:
            # The sender died or hung up mid-stream: a normal end of a move that did
            # not happen (nothing was committed; the paglet is still at its source).
            log.warning(
                "transfer %s aborted: its sender went away mid-stream (%s)", transfer_id, exc
            )
            raise TransferError(
                f"transfer {transfer_id} aborted: the sender's connection was lost mid-stream"
            ) from None

    answer = await service.receiver.receive(transfer_id, read, request.content_length)
    return json_response(answer)


async def abort(request: web.Request) -> web.Response:
    service = request.app[TRANSFERS]
    data = await _body(request)
    agent_id = _opt_str(data, "agent_id") or ""
    if agent_id:
        check_id(agent_id, IdKind.AGENT)
    source = _opt_str(data, "source") or ""
    phase = await service.receiver.abort(request.match_info["transfer_id"], agent_id, source)
    me = service.mesh.table.me
    return json_response({"phase": phase.value, "host": me.name, "url": me.url})


def add_routes(app: web.Application, service: TransferService) -> None:
    """Register the movement routes on ``app`` (before it starts)."""
    app[TRANSFERS] = service
    app.router.add_post(f"{API_PREFIX}/paglets/{{agent_id}}/move", move)
    app.router.add_post(f"{API_PREFIX}/retract", retract)
    app.router.add_post(f"{API_PREFIX}/transfers", receive)
    app.router.add_post(f"{API_PREFIX}/transfers/{{transfer_id}}/abort", abort)
