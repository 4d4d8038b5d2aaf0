"""``HostCalls``: what a host does when one of its paglets asks.

Paglet code reaches its host through ``self.context`` (`paglets.runtime.link`);
each call names a method served here. The host answers from its own tables
(the mesh view), its supervisor (paglets on this host) or another host's API
(paglets elsewhere, through one pooled client per host).
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from paglets.byvalue.local import register_in_process
from paglets.byvalue.refs import parse_code_ref
from paglets.core.errors import (
    HostNotFoundError,
    HostUnavailableError,
    RequestError,
    TransferError,
)
from paglets.core.ids import IdKind, check_id
from paglets.runtime.delivery import SendMode
from paglets.wire.services import check_kind
from paglets.wire.targets import TargetQuery

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from paglets.config import HostConfig
    from paglets.mesh.service import MeshService
    from paglets.runtime.supervisor import Supervisor
    from paglets.transport.client import AsyncHostClient

log = logging.getLogger(__name__)


class HostCalls:
    """Serves calls from paglets; see the module docstring."""

    def __init__(self, config: HostConfig, supervisor: Supervisor, mesh: MeshService) -> None:
        self.config = config
        self.supervisor = supervisor
        self.mesh = mesh
        self._clients: dict[str, AsyncHostClient] = {}
        self._methods: dict[str, Callable[[str, dict[str, Any]], Awaitable[Any]]] = {
            "mesh.hosts": self.mesh_hosts,
            "mesh.targets": self.mesh_targets,
            "paglet.send": self.send,
            "paglet.create": self.create,
        }

    def __repr__(self) -> str:
        return f"<HostCalls {sorted(self._methods)}>"

    def register(self, method: str, serve: Callable[[str, dict[str, Any]], Awaitable[Any]]) -> None:
        """Serve ``method`` with ``await serve(agent_id, args)``."""
        self._methods[method] = serve

    async def __call__(self, agent_id: str, method: str, args: dict[str, Any]) -> Any:
        serve = self._methods.get(method)
        if serve is None:
            raise RequestError(
                f"the host answers no call {method!r} (known: {sorted(self._methods)})"
            )
        return await serve(agent_id, args)

    async def client(self, url: str) -> AsyncHostClient:
        """A pooled client to the mesh member at ``url``, with this host's API key.

        Every call this host makes for a paglet or a caller (messages, monitors,
        retracts) goes through here; the client also checks each host a moved
        paglet leads it to. With a key, ``url`` must first have proved that it
        holds the key too (`MeshService.prove`: a hello, which sends no key), so
        that a member's address taken over by someone else never gets the key.

        Raises:
            HostNotFoundError: ``url`` is not a member of this host's mesh.
            HostUnavailableError: it could not prove that it holds the mesh key.
        """
        url = url.rstrip("/")
        self.check_member(url)
        if self.config.api_key and not await self.mesh.prove(url):
            raise HostUnavailableError(
                f"{url} did not prove that it holds the mesh key (a hello), so "
                f"{self.config.name} sends it nothing; is the host there up, and of this mesh?"
            )
        client = self._clients.get(url)
        if client is None:
            # imported on the first call to another host: a host starts without it
            from paglets.transport.client import AsyncHostClient  # noqa: PLC0415

            tls = self.config.client_ssl()
            client = AsyncHostClient(
                url,
                self.config.api_key or "",
                ssl=None if isinstance(tls, bool) else tls,
                guard=self.check_member,
            )
            self._clients[url] = client
        return client

    def check_member(self, url: str) -> None:
        """Refuse to call ``url`` (with the key, or at all) unless it is a mesh member.

        Raises:
            HostNotFoundError: ``url`` is not a member (`MeshService.is_member`).
        """
        if not self.mesh.is_member(url):
            raise HostNotFoundError(
                f"{url} is not a host of the mesh of {self.config.name}: a host calls, and "
                "sends its API key to, members of its mesh only; join that host to the mesh "
                "(--peer) or name a host of it"
            )

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # -- methods --------------------------------------------------------------------

    async def mesh_hosts(self, _agent_id: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        records = self.mesh.hosts(
            online=args.get("online"),
            tags=args.get("tags") or (),
            mesh_version=args.get("mesh_version"),
        )
        rows = []
        for record in records:
            try:
                self.mesh.movement_target(record.url)
                movable = True
            except (TransferError, HostNotFoundError):
                movable = False
            if args.get("movable") and not movable:
                continue
            row = record.to_dict()
            row["movable"] = movable
            rows.append(row)
        return rows

    async def mesh_targets(self, _agent_id: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """``self.context.targets(...)``: the hosts that meet the query, best first."""
        return [t.to_dict() for t in self.mesh.targets(TargetQuery.from_dict(args))]

    def is_here(self, host: str | None) -> bool:
        """Whether ``host`` (a name, a URL or None) names this host."""
        if host is None or host == self.config.name:
            return True
        me = self.mesh.table.me
        return host.startswith(("http://", "https://")) and me.answers_on(host)

    async def send(self, agent_id: str, args: dict[str, Any]) -> Any:
        target = check_id(_str(args, "agent_id"), IdKind.AGENT)
        kind = check_kind(_str(args, "kind"))
        body = args.get("args") or {}
        mode = SendMode(args.get("mode", "sync"))
        host = args.get("host")
        if self.is_here(host):
            return await self.supervisor.delivery.send(
                target, kind, body, sender=agent_id, mode=mode
            )
        url = self.mesh.resolve(str(host))
        proxy = (await self.client(url)).proxy(target)
        if mode is SendMode.SYNC:
            return await proxy.send(kind, body)
        await proxy.send_oneway(kind, body)
        return None

    async def create(self, _agent_id: str, args: dict[str, Any]) -> dict[str, str]:
        """A paglet creates one on this host, as a key holder's create does.

        A class by value it sends is registered as this process's own code
        (`paglets.byvalue.local`): the paglet runs code on this host already.
        """
        class_path = _str(args, "class_path")
        code = args.get("code")
        if code is not None:
            ref = parse_code_ref(class_path)
            if ref is None or not isinstance(code, str):
                raise RequestError("code goes only with a by-value class path, as base64")
            try:
                data = base64.b64decode(code, validate=True)
            except ValueError:
                raise RequestError("call argument 'code' is not base64") from None
            # its process runs code here already: what it creates may run too
            register_in_process(ref, data)
        state = args.get("state")
        if state is not None and not isinstance(state, dict):
            raise RequestError("'state' must be a JSON object of the state's fields")
        agent_id = args.get("agent_id")
        if agent_id is not None:
            agent_id = check_id(agent_id, IdKind.AGENT)
        record = await self.supervisor.create(class_path, state, agent_id)
        return {"agent_id": record.agent_id}


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"call argument {key!r} must be a non-empty string")
    return value
