"""The mesh routes of the ``/v1`` API, registered on the host's application.

=======  ======================  ============================================
GET      ``/v1/mesh/hosts``      every host known: ``{"hosts": [HostRecord]}``
POST     ``/v1/mesh/gossip``     merge a peer's table, answer with ours
POST     ``/v1/mesh/hello``      prove this host holds the mesh key (no key sent)
GET      ``/v1/mesh/resolve``    ``?target=NAME_OR_URL`` → ``{"url", "host"}``
GET      ``/v1/mesh/targets``    hosts that meet constraints, best first
=======  ======================  ============================================

``/v1/mesh/hello`` is the one route besides ``/health`` served without the key
(`paglets.mesh.hello`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from paglets.core.errors import HostNotFoundError, ProtocolError, RequestError
from paglets.mesh.gossip import GOSSIP_MAX_BYTES, GOSSIP_PATH, gossip_body, parse_gossip
from paglets.mesh.hello import HELLO_MAX_BYTES, HELLO_PATH, Hello
from paglets.transport.body import json_response, read_json
from paglets.wire.records import API_PREFIX
from paglets.wire.targets import TargetQuery

if TYPE_CHECKING:
    from paglets.mesh.service import MeshService

MESH: web.AppKey[MeshService] = web.AppKey("paglets.mesh.routes.MESH")


def _query_bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise RequestError(f"query parameter {name!r} must be true or false")


async def list_hosts(request: web.Request) -> web.Response:
    mesh = request.app[MESH]
    hosts = mesh.hosts(
        online=_query_bool(request, "online"),
        tags=request.query.getall("tag", []),
        mesh_version=request.query.get("mesh_version"),
    )
    return json_response({"hosts": [h.to_dict() for h in hosts]})


async def gossip(request: web.Request) -> web.Response:
    mesh = request.app[MESH]
    cfg = mesh.config
    data = await read_json(request, min(cfg.max_body, GOSSIP_MAX_BYTES), cfg.read_timeout)
    try:
        sent_at, records = parse_gossip(data)
    except ProtocolError as exc:
        raise RequestError(f"invalid gossip: {exc}") from None
    hosts = mesh.receive_gossip(sent_at, records)
    sent_at, _ = mesh.table.gossip()
    return json_response(gossip_body(sent_at, hosts))


async def hello(request: web.Request) -> web.Response:
    mesh = request.app[MESH]
    data = await read_json(request, HELLO_MAX_BYTES, mesh.config.read_timeout)
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    reply = mesh.answer_hello(Hello.from_dict(data), sockname)
    return json_response(reply.to_dict())


async def resolve(request: web.Request) -> web.Response:
    mesh = request.app[MESH]
    target = request.query.get("target")
    if not target:
        raise RequestError("query parameter 'target' (a host name or URL) is required")
    url = mesh.resolve(target)
    try:
        host = mesh.lookup(target).to_dict()
    except HostNotFoundError:
        host = None
    return json_response({"url": url, "host": host})


async def targets(request: web.Request) -> web.Response:
    """``GET /v1/mesh/targets?max_load_per_cpu=&min_free_memory=&min_free_disk=&tag=&limit=``.

    The online hosts whose gossiped resources meet every constraint, ranked
    (`paglets.wire.targets`): ``{"targets": [Target]}``. Sizes are bytes; ``tag``
    repeats. A bad or unknown parameter is a 400 naming it. With the host's key
    (or on a host without one): the list; without it: 401. A paglet asks
    through ``self.context.targets(...)``.
    """
    mesh = request.app[MESH]
    query = TargetQuery.from_query(request.query, request.query.getall("tag", []))
    return json_response({"targets": [t.to_dict() for t in mesh.targets(query)]})


def add_routes(app: web.Application, mesh: MeshService) -> None:
    """Register the mesh routes on ``app`` (before it starts)."""
    app[MESH] = mesh
    app.router.add_get(f"{API_PREFIX}/mesh/hosts", list_hosts)
    app.router.add_post(GOSSIP_PATH, gossip)
    app.router.add_post(HELLO_PATH, hello)
    app.router.add_get(f"{API_PREFIX}/mesh/resolve", resolve)
    app.router.add_get(f"{API_PREFIX}/mesh/targets", targets)
