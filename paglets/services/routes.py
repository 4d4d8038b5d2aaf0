"""The service routes: list services, call one.

``GET /v1/services[?mesh=true]``
    This host's services (advertised, active or inactive); with ``mesh=true``
    every other host's too, as gossiped. With the host's key (or on a host
    without one): the list. Without the key: 401. A paglet lists none through
    here (it calls services through ``self.context.service``).

``POST /v1/services/{service}/calls`` ``{"op", "request", "where"?, "timeout"?, "forwarded"?}``
    Call operation ``op`` of the service of contract ``{service}`` (e.g.
    ``echo.v1``) with the request's JSON form; answers ``{"reply": ...}``. Served
    here, or forwarded once to the host that serves it (``where``: a host
    name or URL). With the key: the reply, or the error of the service by name
    (400 for a bad request naming the contract, 404 no such service, 503 its
    host offline). Without the key: 401. A paglet makes the same call through
    ``self.context.service`` (its host's key is never in its hands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from paglets.core.bounds import bounded
from paglets.core.contract import check_contract_name
from paglets.core.errors import RequestError
from paglets.transport.body import json_response, read_json
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from paglets.services.registry import ServiceRegistry

MAX_CALL_TIMEOUT: Final = 600.0
_CALL_KEYS: Final = frozenset({"op", "request", "where", "timeout", "forwarded"})

REGISTRY: web.AppKey[ServiceRegistry] = web.AppKey("paglets.services.routes.REGISTRY")


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One call's body, checked."""

    op: str
    request: dict[str, Any]
    where: str | None = None
    timeout: float | None = None
    forwarded: bool = False


def parse_call(contract: object, data: object) -> tuple[str, ServiceCall]:
    """The contract name and call body, strictly checked.

    Raises:
        RequestError: an unknown key, a bad contract name, a missing or empty
            operation, a request that is not an object, a timeout out of range.
    """
    name = check_contract_name(contract)
    if not isinstance(data, dict):
        raise RequestError("a service call is a JSON object with 'op' and 'request'")
    unknown = data.keys() - _CALL_KEYS
    if unknown:
        raise RequestError(
            f"a service call has no field {sorted(unknown)}; its fields: {sorted(_CALL_KEYS)}"
        )
    op, request, where = data.get("op"), data.get("request"), data.get("where")
    if not isinstance(op, str) or not op or len(op) > 128:  # noqa: PLR2004 - a name's bound
        raise RequestError("a service call's 'op' must be the name of an operation")
    if not isinstance(request, dict):
        raise RequestError("a service call's 'request' must be a JSON object")
    if where is not None and (not isinstance(where, str) or not where or len(where) > 512):  # noqa: PLR2004
        raise RequestError("a service call's 'where' must be a host name or URL")
    timeout = data.get("timeout")
    if timeout is not None:
        timeout = bounded(timeout, "'timeout' (seconds)", 0.0, MAX_CALL_TIMEOUT)
    forwarded = data.get("forwarded", False)
    if not isinstance(forwarded, bool):
        raise RequestError("a service call's 'forwarded' must be true or false")
    return name, ServiceCall(op, request, where, timeout, forwarded)


async def _list(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    mesh = request.query.get("mesh", "false")
    if mesh not in ("true", "false"):
        raise RequestError("query parameter 'mesh' must be true or false")
    rows = registry.listing(mesh=mesh == "true")
    return json_response({"services": [row.to_dict() for row in rows]})


async def _call(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    config = registry.config
    data = await read_json(request, config.max_body, config.read_timeout)
    contract, call = parse_call(request.match_info["service"], data)
    reply = await registry.call(
        contract,
        call.op,
        call.request,
        where=call.where,
        forwarded=call.forwarded,
        timeout=call.timeout,
    )
    return json_response({"reply": reply})


def add_routes(app: web.Application, registry: ServiceRegistry) -> None:
    """Add the service routes to the host's application."""
    app[REGISTRY] = registry
    app.router.add_get(f"{API_PREFIX}/services", _list)
    app.router.add_post(f"{API_PREFIX}/services/{{service}}/calls", _call)
