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

``POST /v1/services/{service}/lease`` ``{"action", "seconds", "lease"?, "where"?}``
    Take (``take``, without ``lease``), renew or release (with it) a lease on the
    service: exclusive use for ``seconds`` (`paglets.services.leases`), on the
    host that serves it (forwarded as calls are). Answers ``{"lease", "host",
    "expires_in"}``, or ``{"released", "host"}``; 409 while another holds one.
    With the key: that; without it: 401; a paglet through ``self.context.service``.

``PUT /v1/services/{service}/replica`` ``{"version", "state", "origin"}``
    A copy of a replicated mesh service's state, sent by the host that serves it
    to the others that advertise it (`paglets.services.replicas`); kept if newer
    than the copy held. Answers ``{"kept"}``; 404 if this host serves no
    replicated ``{service}``. Hosts send it with the mesh's key; without the key:
    401 (a stranger cannot plant a state); a paglet never holds the key.

``GET /v1/services/{service}/replica``
    The newest copy this host has, ``{"replica": {...} | null}``, asked by a host
    that takes the service over; the host serving it answers with its state as it
    is now. With the key: that; without it: 401, so a service's state is never
    read by a stranger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from paglets.core.bounds import bounded
from paglets.core.contract import check_contract_name
from paglets.core.errors import RequestError
from paglets.services.leases import MAX_LEASE, MIN_LEASE
from paglets.services.replicas import Replica
from paglets.transport.body import json_response, read_json
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from paglets.services.registry import ServiceRegistry

MAX_CALL_TIMEOUT: Final = 600.0
_CALL_KEYS: Final = frozenset({"op", "request", "where", "timeout", "forwarded", "lease"})
_LEASE_KEYS: Final = frozenset({"action", "seconds", "lease", "where", "forwarded"})
_LEASE_ID: Final = re.compile(r"[0-9a-f]{32}")
LEASE_ACTIONS: Final = ("take", "renew", "release")

REGISTRY: web.AppKey[ServiceRegistry] = web.AppKey("paglets.services.routes.REGISTRY")


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One call's body, checked."""

    op: str
    request: dict[str, Any]
    where: str | None = None
    timeout: float | None = None
    forwarded: bool = False
    lease: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """One lease request's body, checked."""

    action: str
    seconds: float
    lease: str | None = None
    where: str | None = None
    forwarded: bool = False


def _fields(data: object, keys: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RequestError(f"a {what} is a JSON object of {sorted(keys)}")
    unknown = data.keys() - keys
    if unknown:
        raise RequestError(f"a {what} has no field {sorted(unknown)}; its fields: {sorted(keys)}")
    where, forwarded = data.get("where"), data.get("forwarded", False)
    if where is not None and (not isinstance(where, str) or not where or len(where) > 512):  # noqa: PLR2004
        raise RequestError(f"a {what}'s 'where' must be a host name or URL")
    if not isinstance(forwarded, bool):
        raise RequestError(f"a {what}'s 'forwarded' must be true or false")
    lease = data.get("lease")
    if lease is not None and (not isinstance(lease, str) or _LEASE_ID.fullmatch(lease) is None):
        raise RequestError(f"a {what}'s 'lease' must be a lease id (32 hex digits)")
    return data


def parse_lease(contract: object, data: object) -> tuple[str, LeaseRequest]:
    """The contract name and lease request, strictly checked.

    Raises:
        RequestError: an unknown key or action, seconds out of range, a bad lease id,
            a renew or release without the lease.
    """
    name = check_contract_name(contract)
    data = _fields(data, _LEASE_KEYS, "lease request")
    action = data.get("action")
    if action not in LEASE_ACTIONS:
        raise RequestError(f"a lease request's 'action' must be one of {', '.join(LEASE_ACTIONS)}")
    seconds = data.get("seconds")
    if action != "release" or seconds is not None:
        seconds = bounded(seconds, "'seconds' of a lease", MIN_LEASE, MAX_LEASE)
    lease = data.get("lease")
    if (lease is None) != (action == "take"):
        raise RequestError("a lease is taken without 'lease', renewed or released with it")
    where, forwarded = data.get("where"), data.get("forwarded", False)
    return name, LeaseRequest(action, seconds or 0.0, lease, where, forwarded)


def parse_call(contract: object, data: object) -> tuple[str, ServiceCall]:
    """The contract name and call body, strictly checked.

    Raises:
        RequestError: an unknown key, a bad contract name, a missing or empty
            operation, a request that is not an object, a timeout out of range.
    """
    name = check_contract_name(contract)
    data = _fields(data, _CALL_KEYS, "service call")
    op, request, where = data.get("op"), data.get("request"), data.get("where")
    if not isinstance(op, str) or not op or len(op) > 128:  # noqa: PLR2004 - a name's bound
        raise RequestError("a service call's 'op' must be the name of an operation")
    if not isinstance(request, dict):
        raise RequestError("a service call's 'request' must be a JSON object")
    timeout = data.get("timeout")
    if timeout is not None:
        timeout = bounded(timeout, "'timeout' (seconds)", 0.0, MAX_CALL_TIMEOUT)
    forwarded = data.get("forwarded", False)
    return name, ServiceCall(op, request, where, timeout, forwarded, data.get("lease"))


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
    return json_response(
        await answer_service(registry, "calls", request.match_info["service"], data)
    )


async def answer_call(
    registry: ServiceRegistry, contract: str, call: ServiceCall
) -> dict[str, Any]:
    """What a checked call of ``contract`` is answered: ``{"reply": ...}``."""
    reply = await registry.call(
        contract,
        call.op,
        call.request,
        where=call.where,
        forwarded=call.forwarded,
        timeout=call.timeout,
        lease=call.lease,
    )
    return {"reply": reply}


async def answer_service(
    registry: ServiceRegistry, route: str, contract: object, body: object
) -> dict[str, Any]:
    """What the route ``calls`` or ``lease`` of ``contract`` answers ``body``, checked.

    The HTTP routes, the proxy channel and a paglet's ``self.context.service``
    all come here, so a call is checked and answered alike whichever way it came.
    """
    if route == "calls":
        name, call = parse_call(contract, body)
        return await answer_call(registry, name, call)
    if route == "lease":
        name, lease = parse_lease(contract, body)
        return await registry.lease(name, lease)
    raise RequestError(f"a service call's route is 'calls' or 'lease', not {route!r:.40}")


async def _lease(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    config = registry.config
    data = await read_json(request, config.max_body, config.read_timeout)
    return json_response(
        await answer_service(registry, "lease", request.match_info["service"], data)
    )


async def _put_replica(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    config = registry.config
    contract = check_contract_name(request.match_info["service"])
    replica = Replica.parse(await read_json(request, config.max_body, config.read_timeout))
    entry = registry.entries.get(contract)
    return json_response({"kept": registry.replicas.receive(entry, contract, replica)})


async def _get_replica(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    contract = check_contract_name(request.match_info["service"])
    replica = await registry.replicas.answer(registry.entries.get(contract), contract)
    return json_response({"replica": None if replica is None else replica.to_dict()})


def add_routes(app: web.Application, registry: ServiceRegistry) -> None:
    """Add the service routes to the host's application."""
    app[REGISTRY] = registry
    app.router.add_put(f"{API_PREFIX}/services/{{service}}/replica", _put_replica)
    app.router.add_get(f"{API_PREFIX}/services/{{service}}/replica", _get_replica)
    app.router.add_get(f"{API_PREFIX}/services", _list)
    app.router.add_post(f"{API_PREFIX}/services/{{service}}/calls", _call)
    app.router.add_post(f"{API_PREFIX}/services/{{service}}/lease", _lease)
