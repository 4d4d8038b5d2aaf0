"""What the supervisor keeps of each paglet, and the bounds it enforces.

`AgentRecord` is the host's entry for one paglet (live, inactive, or the
tombstone of one disposed or moved away); `SupervisorLimits` are the host's
bounds on heartbeats, mailboxes, memory and paglet count; `Keeper` is what
keeps paglets on disk (`paglets.durability`), as the supervisor sees it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from paglets.core.errors import ConfigurationError

if TYPE_CHECKING:
    from paglets.core.policy import RestartPolicy
    from paglets.core.status import PagletStatus
    from paglets.runtime.handle import ChildHandle, ExitInfo


@dataclass(frozen=True, slots=True)
class SupervisorLimits:
    """Bounds the supervisor enforces."""

    heartbeat_interval: float = 0.5
    hang_timeout: float = 10.0
    start_timeout: float = 30.0
    stop_grace: float = 5.0
    max_mailbox: int = 10_000  # messages of every mode waiting for one paglet
    max_mailbox_bytes: int = 64 * 1024**2  # and their encoded size
    memory_limit: int | None = 2 * 1024**3  # RSS of one child; over it, the child is killed
    max_paglets: int | None = 1000  # live paglets on the host (see paglets.runtime.admission)
    max_child_memory: int | None = None  # bytes: the RSS of all children together

    def __post_init__(self) -> None:
        if self.max_mailbox < 1 or self.max_mailbox_bytes < 1:
            raise ConfigurationError("max_mailbox and max_mailbox_bytes must be at least 1")
        if self.max_paglets is not None and self.max_paglets < 1:
            raise ConfigurationError("max_paglets must be at least 1 (None: no limit)")
        if self.max_child_memory is not None and self.max_child_memory < 1024**2:
            raise ConfigurationError("max_child_memory must be at least 1 MiB (None: no limit)")

    remembered_messages: int = 4096
    tombstones: int = 10_000


@dataclass(eq=False)
class AgentRecord:
    """What the host knows of one paglet."""

    agent_id: str
    class_path: str
    status: PagletStatus
    created_at: float
    handle: ChildHandle | None = field(default=None, repr=False)
    exit: ExitInfo | None = None
    disposal: asyncio.Task[None] | None = field(default=None, repr=False)
    moved_to: tuple[str, str] | None = None  # (host name, URL) once it has left
    restart_policy: RestartPolicy | None = None  # the instance's own, else the class's
    restarts: list[float] = field(default_factory=list, repr=False)  # monotonic times
    started: asyncio.Future[None] | None = field(default=None, repr=False)  # set once started
    idle_timeout: float | None = None  # the class's deactivation_policy
    last_used: float = field(default_factory=time.monotonic)  # the latest message (monotonic)
    generation: int = 0  # of this start (`paglets.persistence.checkpoints`)

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle and self.exit is None else None

    @property
    def pending(self) -> int:
        return self.handle.pending if self.handle else 0

    async def until_started(self) -> None:
        """Wait while its process is starting (e.g. it just arrived); at once otherwise."""
        if self.started is not None and not self.started.done():
            await asyncio.shield(self.started)


class Keeper(Protocol):
    """What keeps paglets on disk (`paglets.durability`), as the supervisor sees it."""

    def generation(self, agent_id: str) -> int:
        """A new generation for a start of the paglet, newer than any it had here."""

    async def created(
        self,
        record: AgentRecord,
        state: dict[str, Any] | None,
        envelope: str | None,
        *,
        flushed: bool = False,
    ) -> None:
        """A paglet started (created, arrived, activated); remember it.

        ``flushed``: the envelope's bytes are on disk already (its receiver
        flushed them before it committed the arrival), so only its new name is.

        Started from an envelope, it returns once the paglet is durably kept
        (so the envelope's owner may drop the envelope); else at once.
        """

    def gone(self, agent_id: str) -> None:
        """A paglet was disposed or moved away; forget it."""

    async def activate(self, agent_id: str) -> None:
        """Start an inactive paglet from its checkpoint."""

    async def settle(self, agent_id: str) -> None:
        """Wait until a deactivation or restart of the paglet in progress has finished."""

    def settled(self, agent_id: str) -> bool:
        """Whether `settle` would return at once: no deactivation or restart in progress."""

    def crashed(self, record: AgentRecord, info: ExitInfo) -> None:
        """The paglet's process ended unasked; apply its restart policy."""

    def deactivate_idle(self, agent_id: str) -> None:
        """The paglet was idle past its deactivation policy; deactivate it."""
