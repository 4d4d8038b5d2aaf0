"""``/v1/artifacts``: list, put, get, rm and copy a host's artifacts.

Who gets what:

- a caller with the key (or any caller of a host that has none, which binds
  loopback only): every route;
- a caller without the key, a stranger: 401, as for every route;
- a paglet: as any key holder, over HTTP (its host's URL is
  ``self.context.host_url``); a paglet of a host with a key has none, unless
  its author gives it one.

Routes:

- ``GET /v1/artifacts``: ``{"host", "quota", "used", "artifacts": [ArtifactInfo...]}``;
- ``PUT /v1/artifacts/{artifact}?size=N&sha256=HEX``: the body is the bytes, streamed;
  201 with the `ArtifactInfo`; 413/507 when it does not fit, 422 when its
  sha256 is not the one declared; see `paglets.artifacts.store`;
- ``GET /v1/artifacts/{artifact}``: the bytes, streamed from the file, with
  ``X-Paglets-Sha256`` and ``Content-Length``;
- ``DELETE /v1/artifacts/{artifact}``: ``{"removed": ArtifactInfo}``;
- ``POST /v1/artifacts/{artifact}/copy`` ``{"to": host name or URL, "as": name or null}``:
  this host streams the artifact to that host of its mesh (its own client, its
  own key), which checks it as any upload; ``{"artifact": ArtifactInfo}`` of the copy.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from paglets.artifacts.contract import ARTIFACTS, ArtifactList, ArtifactRecord
from paglets.artifacts.model import ArtifactInfo, check_name, check_sha256
from paglets.artifacts.store import ArtifactStore
from paglets.core.errors import ProtocolError, RequestError
from paglets.transport.body import json_response, read_json
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from paglets.calls import HostCalls
    from paglets.config import HostConfig
    from paglets.services.registry import ServiceRegistry

CHUNK: Final = 1 << 20
SHA_HEADER: Final = "X-Paglets-Sha256"
MAX_SIZE: Final = 1 << 50
"""The largest size an upload may declare (the quota bounds it further)."""


class ArtifactService:
    """A host's artifacts: the store and the routes that serve it."""

    def __init__(self, config: HostConfig, calls: HostCalls, services: ServiceRegistry) -> None:
        self.config = config
        self.calls = calls
        self.store = ArtifactStore(config.home / "artifacts", config.name, config.artifact_quota)
        services.serve_here(ARTIFACTS, self.answer)

    def __repr__(self) -> str:
        return f"<ArtifactService {self.store!r}>"

    def install(self, app: web.Application) -> None:
        """Open the store (dropping what a crash left), and add the routes."""
        self.store.open()
        base = f"{API_PREFIX}/artifacts"
        app.router.add_get(base, self._list)
        app.router.add_put(f"{base}/{{artifact}}", self._put)
        app.router.add_get(f"{base}/{{artifact}}", self._get)
        app.router.add_delete(f"{base}/{{artifact}}", self._delete)
        app.router.add_post(f"{base}/{{artifact}}/copy", self._copy)

    async def answer(self, op: str, request: Any) -> Any:
        """``artifacts.v1``: ``list``, ``stat``, ``remove`` and ``copy``, as the routes do."""
        store = self.store
        if op == "list":
            records = [ArtifactRecord(**info.to_dict()) for info in store.list()]
            return ArtifactList(store.host, store.quota, store.used, records)
        if op == "stat":
            return ArtifactRecord(**store.info(request.name).to_dict())
        if op == "remove":
            return ArtifactRecord(**(await store.remove(request.name)).to_dict())
        copy = await self.copy(store.info(request.name), request.to, request.as_name)
        return ArtifactRecord(**copy.to_dict())

    async def _list(self, _request: web.Request) -> web.Response:
        store = self.store
        return json_response(
            {
                "host": store.host,
                "quota": store.quota,
                "used": store.used,
                "artifacts": [info.to_dict() for info in store.list()],
            }
        )

    async def _put(self, request: web.Request) -> web.Response:
        name = check_name(request.match_info["artifact"])
        unknown = set(request.query) - {"size", "sha256"}
        if unknown:
            raise RequestError(f"unknown query parameter(s) {sorted(unknown)}; give size, sha256")
        size = _size(request.query.get("size"))
        sha256 = check_sha256(request.query.get("sha256"))
        declared = request.content_length
        if declared is not None and declared != size:
            raise RequestError(f"the body is {declared} bytes, not the size={size} declared")
        info = await self.store.receive(name, size, sha256, self._chunks(request))
        return json_response(info.to_dict(), status=201)

    async def _chunks(self, request: web.Request) -> AsyncIterator[bytes]:
        """The request's body in chunks, each within the host's read timeout."""
        timeout = self.config.read_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await request.content.read(CHUNK)
            except TimeoutError:
                raise RequestError(
                    f"no bytes of the upload for {timeout:g} s; nothing was kept"
                ) from None
            if not chunk:
                return
            yield chunk

    async def _get(self, request: web.Request) -> web.StreamResponse:
        info = self.store.info(request.match_info["artifact"])
        headers = {SHA_HEADER: info.sha256, "Content-Type": "application/octet-stream"}
        return web.FileResponse(self.store.blob(info), headers=headers)

    async def _delete(self, request: web.Request) -> web.Response:
        info = await self.store.remove(request.match_info["artifact"])
        return json_response({"removed": info.to_dict()})

    async def _copy(self, request: web.Request) -> web.Response:
        info = self.store.info(request.match_info["artifact"])
        data = await read_json(request, self.config.max_body, self.config.read_timeout)
        if not isinstance(data, dict) or not set(data) <= {"to", "as"} or "to" not in data:
            raise RequestError('a copy takes {"to": host name or URL, "as": name or null}')
        target, new_name = data["to"], data.get("as")
        if not isinstance(target, str) or not target:
            raise RequestError("a copy's 'to' must be a host name or URL")
        if new_name is not None and not isinstance(new_name, str):
            raise RequestError("a copy's 'as' must be an artifact name or null")
        copy = await self.copy(info, target, new_name)
        return json_response({"artifact": copy.to_dict()})

    async def copy(self, info: ArtifactInfo, target: str, new_name: str | None) -> ArtifactInfo:
        """Copy ``info`` to the host ``target`` of the mesh (or here, under another name).

        Raises:
            RequestError: a bad name, or a copy onto itself; HostNotFoundError: no such host.
        """
        new_name = info.name if new_name is None else check_name(new_name)
        if self.calls.is_here(target):
            if new_name == info.name:
                raise RequestError(f"artifact {info.name!r} is on host {target} already")
            return await self.store.add_name(info, new_name)
        return await self._send(info, self.calls.mesh.resolve(target), new_name)

    async def _send(self, info: ArtifactInfo, url: str, name: str) -> ArtifactInfo:
        """Stream ``info``'s bytes to the host at ``url`` as artifact ``name``."""
        from paglets.transport.filebody import FileBody  # noqa: PLC0415 - on a copy only

        client = await self.calls.client(url)
        body = FileBody(self.store.blob(info), info.size, content_type="application/octet-stream")
        answer: Any = await client.send_body(
            "PUT",
            f"{API_PREFIX}/artifacts/{name}",
            body,
            params={"size": str(info.size), "sha256": info.sha256},
        )
        try:
            return ArtifactInfo.from_dict(answer)
        except ProtocolError as exc:
            raise ProtocolError(f"host at {url} answered a copy so: {exc}") from None


def _size(raw: str | None) -> int:
    try:
        size = int(raw or "")
    except ValueError:
        raise RequestError("an upload needs size=N, its length in bytes") from None
    if not 0 <= size <= MAX_SIZE:
        raise RequestError(f"size={size} is out of range")
    return size
