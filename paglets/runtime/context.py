"""The child's implementation of `paglets.core.context.PagletContext`."""

from __future__ import annotations

import base64
import logging
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from paglets.byvalue.pickling import class_reference
from paglets.core.context import MeshHost
from paglets.core.errors import ProtocolError, RequestError, StorageError, TransferError
from paglets.core.state import PagletState
from paglets.userinfo.stream import NoticeStream
from paglets.wire.services import ServiceClient
from paglets.wire.state_json import state_to_json
from paglets.wire.targets import DEFAULT_LIMIT, Target, TargetQuery

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from paglets.core.contract import Contract
    from paglets.core.movement import TransferTicket
    from paglets.runtime.child import ChildRuntime
    from paglets.runtime.link import HostLink
    from paglets.runtime.mailbox import Mailbox
    from paglets.runtime.moving import Location


class ChildContext:
    """What a paglet sees of its host, from inside its process."""

    def __init__(
        self,
        *,
        agent_id: str,
        host_name: str,
        host_url: str,
        work_dir: Path,
        file_roots: tuple[Path, ...] = (),
        mailbox: Mailbox,
        link: HostLink,
        runtime: ChildRuntime,
    ) -> None:
        self._agent_id = agent_id
        self._host_name = host_name
        self._host_url = host_url
        self._work_dir = work_dir
        self._file_roots = file_roots
        self._mailbox = mailbox
        self._link = link
        self._runtime = runtime
        self._log = logging.getLogger(f"paglets.agent.{agent_id}")

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def host_name(self) -> str:
        return self._host_name

    @property
    def host_url(self) -> str:
        return self._host_url

    @property
    def work_dir(self) -> Path:
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    @property
    def file_roots(self) -> tuple[Path, ...]:
        return self._file_roots

    @property
    def pending_messages(self) -> int:
        return len(self._mailbox)

    @property
    def log(self) -> logging.Logger:
        return self._log

    @property
    def link(self) -> HostLink:
        """The raw call channel to the host (runtime internals use it)."""
        return self._link

    def hosts(
        self,
        *,
        online: bool | None = None,
        tags: Iterable[str] = (),
        mesh_version: str | None = None,
        movable: bool = False,
    ) -> list[MeshHost]:
        rows = self._link.call(
            "mesh.hosts",
            online=online,
            tags=list(tags),
            mesh_version=mesh_version,
            movable=movable,
        )
        return [_mesh_host(row) for row in rows]

    def service(
        self, contract: Contract, *, where: str | None = None, timeout: float | None = None
    ) -> ServiceClient:
        name = contract.name

        def invoke(route: str, body: dict[str, Any]) -> Any:
            return self._link.call("service.call", contract=name, route=route, body=body)

        return ServiceClient(contract, invoke, where, timeout)

    def targets(
        self,
        *,
        max_load_per_cpu: float | None = None,
        min_free_memory: int | None = None,
        min_free_disk: int | None = None,
        tags: Iterable[str] = (),
        limit: int = DEFAULT_LIMIT,
    ) -> list[Target]:
        if isinstance(tags, str):
            raise RequestError(f"tags must be a list of tags, not the string {tags!r:.40}")
        query = TargetQuery(max_load_per_cpu, min_free_memory, min_free_disk, tuple(tags), limit)
        rows = self._link.call("mesh.targets", **query.to_dict())
        if not isinstance(rows, list):
            raise ProtocolError("the host answered mesh.targets with no list")
        return [Target.from_dict(row) for row in rows]

    def proxy(self, agent_id: str, host: str | None = None) -> ChildProxy:
        return ChildProxy(self._link, agent_id, host)

    def create(
        self,
        paglet_class: str | type,
        state: PagletState | dict[str, Any] | None = None,
        *,
        agent_id: str | None = None,
    ) -> ChildProxy:
        code = None
        if isinstance(paglet_class, str):
            path = paglet_class
        else:
            path, code = class_reference(paglet_class)
        if isinstance(state, PagletState):
            state = state_to_json(state)
        answer = self._link.call(
            "paglet.create",
            class_path=path,
            state=state,
            agent_id=agent_id,
            code=None if code is None else base64.b64encode(code).decode(),
        )
        return ChildProxy(self._link, str(answer["agent_id"]), None)

    # -- movement -----------------------------------------------------------------

    def _move(self, kind: str, target: str | None, ticket: TransferTicket | None) -> Location:
        paglet = self._runtime.paglet
        if paglet is None:
            raise TransferError("a paglet cannot move before it is built")
        return self._runtime.mover.move(
            paglet, kind, target, ticket.to_dict() if ticket is not None else None
        )

    def dispatch(self, target: str, ticket: TransferTicket | None = None) -> None:
        self._move("dispatch", target, ticket)

    def clone(self, target: str | None = None, ticket: TransferTicket | None = None) -> ChildProxy:
        location = self._move("clone", target, ticket)
        return ChildProxy(self._link, location.agent_id, location.url)

    def retract(self, agent_id: str, host: str, ticket: TransferTicket | None = None) -> ChildProxy:
        answer = self._link.call(
            "transfer.retract",
            agent_id=agent_id,
            host=host,
            ticket=ticket.to_dict() if ticket is not None else None,
        )
        return ChildProxy(self._link, str(answer["agent_id"]), str(answer["url"]))

    def dispose(self) -> None:
        self._link.call("paglet.dispose")

    def deactivate(self, wake_at: float | None = None) -> None:
        self._link.call("paglet.deactivate", wake_at=wake_at)

    def monitor(self, agent_id: str, host: str | None = None) -> None:
        self._link.call("paglet.monitor", agent_id=agent_id, host=host)

    def checkpoint(self) -> None:
        paglet = self._runtime.paglet
        if paglet is None:
            raise StorageError("a paglet cannot checkpoint before it is built")
        path = self._runtime.mover.checkpoint(paglet, sync=self._runtime.init.fsync)
        self._link.call(
            "paglet.checkpointed",
            envelope=str(path),
            generation=self._runtime.mover.generation,
        )

    def register_file(
        self, path: str | Path, *, name: str | None = None, mode: str = "copy"
    ) -> str:
        return self._runtime.mover.register(path, name, mode)

    @property
    def files(self) -> Mapping[str, Path]:
        return MappingProxyType({f.name: f.path for f in self._runtime.mover.files.values()})

    def notify(
        self,
        title: str,
        message: str = "",
        *,
        severity: str = "info",
        job: str | None = None,
    ) -> int:
        return int(
            self._link.call("user.notify", title=title, message=message, severity=severity, job=job)
        )

    def stream(self, name: str, *, job: str | None = None) -> NoticeStream:
        def send(lines: list[str]) -> None:
            self._link.call("user.lines", stream=name, lines=lines, job=job)

        return NoticeStream(name, send)

    def __repr__(self) -> str:
        return f"<ChildContext {self._agent_id} on {self._host_name}>"


def _mesh_host(row: Any) -> MeshHost:
    try:
        return MeshHost(
            name=row["name"],
            url=row["url"],
            online=row["online"],
            mesh_version=row["mesh_version"],
            protocol_version=row["protocol_version"],
            version=row["version"],
            commit=row["commit"],
            paglets=row["paglets"],
            tags=tuple(row["tags"]),
            properties=dict(row["properties"]),
            movable=row["movable"],
        )
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed host record from the host: {exc}") from None


class ChildProxy:
    """A paglet reached from inside another paglet; see `paglets.core.context.PagletLink`."""

    def __init__(self, link: HostLink, agent_id: str, host: str | None) -> None:
        self._link = link
        self._agent_id = agent_id
        self._host = host

    def __repr__(self) -> str:
        return f"<ChildProxy {self._agent_id} on {self._host or 'this host'}>"

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def host(self) -> str | None:
        return self._host

    def _args(self, kind: str, args: dict[str, Any], mode: str) -> dict[str, Any]:
        return {
            "agent_id": self._agent_id,
            "host": self._host,
            "kind": kind,
            "args": args,
            "mode": mode,
        }

    def send(self, kind: str, /, **args: Any) -> Any:
        return self._link.call("paglet.send", **self._args(kind, args, "sync"))

    def send_oneway(self, kind: str, /, **args: Any) -> None:
        self._link.call("paglet.send", **self._args(kind, args, "oneway"))

    async def send_async(self, kind: str, /, **args: Any) -> Any:
        return await self._link.call_async("paglet.send", **self._args(kind, args, "sync"))
