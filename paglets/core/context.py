"""``PagletContext``: what a running paglet sees of its host.

The runtime provides the implementation; paglet code only reads it through
``self.context``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from paglets.core.contract import Contract
    from paglets.core.movement import TransferTicket
    from paglets.core.state import PagletState
    from paglets.userinfo.stream import NoticeStream
    from paglets.wire.targets import Target


class PagletContext(Protocol):
    """The host as seen from inside a paglet."""

    @property
    def agent_id(self) -> str:
        """This paglet's id."""
        ...

    @property
    def host_name(self) -> str:
        """The name of the host the paglet runs on."""
        ...

    @property
    def host_url(self) -> str:
        """The URL of that host's API."""
        ...

    @property
    def work_dir(self) -> Path:
        """A scratch directory for this paglet, removed when it is disposed."""
        ...

    @property
    def file_roots(self) -> tuple[Path, ...]:
        """Where paglets that move files may read and write on this host.

        The system temp directory, the host's files directory and each
        ``--file-root``; build a path in them with `paglets.persistence.paths.in_roots`.
        """
        ...

    @property
    def pending_messages(self) -> int:
        """How many messages wait in the mailbox, not counting the one in hand."""
        ...

    @property
    def log(self) -> logging.Logger:
        """A logger named after the paglet."""
        ...

    def hosts(
        self,
        *,
        online: bool | None = None,
        tags: Iterable[str] = (),
        mesh_version: str | None = None,
        movable: bool = False,
    ) -> list[MeshHost]:
        """The hosts of the mesh this host knows, itself first.

        Args:
            online: only hosts online (``True``) or offline (``False``).
            tags: only hosts carrying every one of these ``--tag`` values.
            mesh_version: only hosts of this ``--mesh-version``.
            movable: only hosts a paglet here may move to (online, same mesh
                and protocol version).
        """
        ...

    def service(
        self, contract: Contract, *, where: str | None = None, timeout: float | None = None
    ) -> Any:
        """A typed client of the resident service of ``contract`` (docs/services.md).

        ``self.context.service(ECHO).echo(EchoRequest("hi"))`` blocks until the
        reply dataclass is back. ``where`` (a host name or URL) picks the host;
        else this host's service, or an online host's that advertises it.
        """
        ...

    def targets(
        self,
        *,
        max_load_per_cpu: float | None = None,
        min_free_memory: int | None = None,
        min_free_disk: int | None = None,
        tags: Iterable[str] = (),
        limit: int = 16,
    ) -> list[Target]:
        """The online hosts that meet every constraint, the best first.

        From the host's gossiped snapshot of every host (docs/builtin-services.md):
        ranked by 1-minute load per CPU, then available memory. Sizes are bytes.
        Each `paglets.wire.targets.Target` has the host's ``name`` (for
        ``move_to``) and its ``resources``.

        Raises:
            RequestError: a constraint out of range.
        """
        ...

    def proxy(self, agent_id: str, host: str | None = None) -> PagletLink:
        """A handle to another paglet, on this host or on ``host`` (a name or URL)."""
        ...

    def create(
        self,
        paglet_class: str | type,
        state: PagletState | dict[str, Any] | None = None,
        *,
        agent_id: str | None = None,
    ) -> PagletLink:
        """Start a new paglet on this host; returns a handle to it.

        ``paglet_class`` is ``"module:Class"`` or the class itself; a class defined
        in a script or a notebook goes by value, under the host's trust rule (see
        `paglets.AsyncHostClient.create`).
        """
        ...

    def dispatch(self, target: str, ticket: TransferTicket | None = None) -> None:
        """Move this paglet; see `paglets.Paglet.dispatch`."""
        ...

    def clone(self, target: str | None = None, ticket: TransferTicket | None = None) -> PagletLink:
        """Copy this paglet; see `paglets.Paglet.clone`."""
        ...

    def retract(self, agent_id: str, host: str, ticket: TransferTicket | None = None) -> PagletLink:
        """Pull the paglet ``agent_id`` from ``host`` (name or URL) to this host."""
        ...

    def dispose(self) -> None:
        """Dispose this paglet once the current handler returns."""
        ...

    def deactivate(self, wake_at: float | None = None) -> None:
        """Deactivate this paglet after the current handler; see `paglets.Paglet.deactivate`."""
        ...

    def checkpoint(self) -> None:
        """Write the state to disk now; see `paglets.Paglet.checkpoint`."""
        ...

    def monitor(self, agent_id: str, host: str | None = None) -> None:
        """Be told when the paglet ``agent_id`` (on ``host``, default this one) goes down.

        This paglet then receives a one-way message of kind ``paglet.down`` with
        ``agent_id``, ``host``, ``reason`` (``crashed``, ``failed``, ``disposed`` or
        ``host_offline``) and ``detail``, once.
        """
        ...

    def register_file(
        self, path: str | Path, *, name: str | None = None, mode: str = "copy"
    ) -> str:
        """Have a file travel with this paglet; returns its name.

        Args:
            path: the file on this host.
            name: a relative POSIX name for it (default: the file's name).
            mode: ``copy`` keeps the file here too; ``move`` deletes it here once
                a dispatch has succeeded (a clone always copies).
        """
        ...

    @property
    def files(self) -> Mapping[str, Path]:
        """Registered files by name, where they are on this host."""
        ...

    def notify(
        self,
        title: str,
        message: str = "",
        *,
        severity: str = "info",
        job: str | None = None,
    ) -> int:
        """Tell the person something: a notice kept by this host (docs/user-info.md).

        Args:
            title: a short title (at most 200 characters).
            message: the text (at most 8192 characters).
            severity: ``debug``, ``info``, ``warning`` or ``error``.
            job: the id of the job it is about, if any.

        Returns the notice's number on this host. ``paglets-user-info list``
        and ``follow`` show it, across the mesh.
        """
        ...

    def stream(self, name: str, *, job: str | None = None) -> NoticeStream:
        """A text stream called ``name``: ``write`` appends lines the person can follow."""
        ...


@dataclass(frozen=True, slots=True)
class MeshHost:
    """One host of the mesh, as a paglet sees it through `PagletContext.hosts`.

    Attributes:
        name: the host's unique name.
        url: the URL it publishes.
        online: whether its heartbeat is recent.
        mesh_version: its ``--mesh-version``.
        protocol_version: the wire protocol it speaks.
        version: the paglets version it runs.
        commit: the git commit it runs from, if any.
        paglets: how many paglets it holds.
        tags: its ``--tag`` values.
        properties: its ``--property`` pairs.
        movable: whether a paglet on the asking host may move there.
    """

    name: str
    url: str
    online: bool
    mesh_version: str
    protocol_version: int
    version: str
    commit: str | None
    paglets: int
    tags: tuple[str, ...]
    properties: Mapping[str, str]
    movable: bool


class PagletLink(Protocol):
    """Another paglet, as a paglet reaches it through `PagletContext.proxy`.

    Calls block until the host answered, from ``def`` and ``async def`` code
    alike; ``send_async`` does not block the paglet's event loop.
    """

    @property
    def agent_id(self) -> str: ...

    @property
    def host(self) -> str | None: ...

    def send(self, kind: str, /, **args: Any) -> Any:
        """Deliver a message and return the handler's reply."""
        ...

    def send_oneway(self, kind: str, /, **args: Any) -> None:
        """Deliver a message without waiting for it to be handled."""
        ...

    async def send_async(self, kind: str, /, **args: Any) -> Any:
        """`send` as a coroutine."""
        ...
