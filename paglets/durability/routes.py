"""The durability routes: deactivate, activate and checkpoint a paglet over HTTP."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from paglets.core.bounds import bounded
from paglets.core.errors import PagletDisposedError, PagletMovedError, RequestError
from paglets.core.status import PagletStatus
from paglets.durability.timers import MAX_SLEEP, wake_time
from paglets.transport.body import json_response, read_json
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from paglets.durability.service import DurabilityService


DURABILITY: web.AppKey[DurabilityService] = web.AppKey("paglets.durability.DURABILITY")


async def _deactivate_route(request: web.Request) -> web.Response:
    """``POST /v1/paglets/{id}/deactivate`` ``{"until": epoch seconds | "duration": s}``."""
    service = request.app[DURABILITY]
    data = await read_json(request, service.config.max_body, service.config.read_timeout)
    if not isinstance(data, dict) or set(data) - {"until", "duration"}:
        raise RequestError('deactivate takes {"until": epoch seconds} or {"duration": seconds}')
    until, duration = data.get("until"), data.get("duration")
    if until is not None and duration is not None:
        raise RequestError("give 'until' or 'duration', not both")
    now = time.time()
    wake_at = None
    if duration is not None:
        wake_at = now + bounded(duration, "'duration' (seconds)", 0.0, MAX_SLEEP)
    elif until is not None:
        wake_at = wake_time(until, now)
    agent_id = request.match_info["agent_id"]
    await service.deactivate(agent_id, wake_at)
    return json_response({"agent_id": agent_id, "status": "inactive", "wake_at": wake_at})


async def _activate_route(request: web.Request) -> web.Response:
    service = request.app[DURABILITY]
    agent_id = request.match_info["agent_id"]
    record = service.supervisor.get(agent_id)  # 404 for a paglet this host never had
    if record.moved_to is not None:
        raise PagletMovedError.to(agent_id, *record.moved_to)
    if record.status is PagletStatus.DISPOSED:
        raise PagletDisposedError(f"paglet {agent_id} was disposed")
    await service.supervisor.wake(agent_id)
    status = service.supervisor.get(agent_id).status
    return json_response({"agent_id": agent_id, "status": status.value})


async def _checkpoint_route(request: web.Request) -> web.Response:
    service = request.app[DURABILITY]
    agent_id = request.match_info["agent_id"]
    await service.checkpoint(agent_id)
    return json_response({"agent_id": agent_id, "checkpointed": True})


def add_routes(app: web.Application, service: DurabilityService) -> None:
    """Register the deactivate, activate and checkpoint routes on ``app``."""
    app[DURABILITY] = service
    prefix = f"{API_PREFIX}/paglets/{{agent_id}}"
    app.router.add_post(f"{prefix}/deactivate", _deactivate_route)
    app.router.add_post(f"{prefix}/activate", _activate_route)
    app.router.add_post(f"{prefix}/checkpoint", _checkpoint_route)
