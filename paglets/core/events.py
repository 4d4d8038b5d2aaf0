"""Lifecycle events given to hooks, and context events kept in a host's log."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class LifecycleKind(StrEnum):
    """Which lifecycle transition a hook is called for."""

    CREATION = "creation"
    DISPOSING = "disposing"
    DISPATCHING = "dispatching"
    RETRACTING = "retracting"
    ARRIVAL = "arrival"
    CLONING = "cloning"
    CLONE = "clone"
    CLONED = "cloned"
    DEACTIVATING = "deactivating"
    ACTIVATION = "activation"


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """What a lifecycle hook receives.

    Attributes:
        kind: the transition.
        agent_id: the paglet's id.
        host_name: the host it happens on.
        target: for ``dispatching``, ``retracting`` and ``cloning``: the host
            (name or URL) the paglet or its copy goes to.
        origin: for ``arrival`` and ``clone``: the name of the host it came from.
        clone_id: for ``cloned`` (in the original): the copy's id.
        hops: how many moves this paglet has made (0 until its first arrival).
    """

    kind: LifecycleKind
    agent_id: str
    host_name: str
    target: str | None = None
    origin: str | None = None
    clone_id: str | None = None
    hops: int = 0


class EventKind(StrEnum):
    """Kinds of context events in a host's event log."""

    HOST_STARTED = "host.started"
    HOST_STOPPING = "host.stopping"
    PAGLET_CREATED = "paglet.created"
    PAGLET_CREATE_FAILED = "paglet.create_failed"
    PAGLET_DISPOSED = "paglet.disposed"
    PAGLET_CRASHED = "paglet.crashed"
    PAGLET_HUNG = "paglet.hung"
    RUN_FAILED = "paglet.run_failed"
    HOOK_FAILED = "paglet.hook_failed"
    MESSAGE_FAILED = "message.failed"
    PAGLET_DEACTIVATED = "paglet.deactivated"
    PAGLET_ACTIVATED = "paglet.activated"
    PAGLET_CHECKPOINTED = "paglet.checkpointed"
    PAGLET_RECOVERED = "paglet.recovered"
    PAGLET_RESTARTED = "paglet.restarted"
    PAGLET_FAILED = "paglet.failed"
    TRANSFER_SENT = "transfer.sent"
    TRANSFER_RECEIVED = "transfer.received"
    TRANSFER_FAILED = "transfer.failed"
    TRANSFER_IN_DOUBT = "transfer.in_doubt"
    TRANSFER_RESOLVED = "transfer.resolved"
    TRANSFER_START_FAILED = "transfer.start_failed"
    MESH_HOST_JOINED = "mesh.host_joined"
    MESH_HOST_MOVED = "mesh.host_moved"
    MESH_HOST_OFFLINE = "mesh.host_offline"
    MESH_HOST_ONLINE = "mesh.host_online"
    MESH_HOST_FORGOTTEN = "mesh.host_forgotten"
    MESH_DUPLICATE_NAME = "mesh.duplicate_name"
    MESH_RECORD_REFUSED = "mesh.record_refused"
    MESH_ADDRESS_CHANGED = "mesh.address_changed"
    UPDATE_WAITING = "update.waiting"
    UPDATE_STARTED = "update.started"
    UPDATE_FAILED = "update.failed"
    UPDATE_DONE = "update.done"


@dataclass(frozen=True, slots=True)
class ContextEvent:
    """One entry of a host's event log.

    Attributes:
        cursor: position in the log; strictly increasing on one host.
        timestamp: seconds since the epoch.
        kind: what happened.
        host: the name of the host that logged it.
        agent_id: the paglet concerned, if any.
        detail: a human-readable sentence.
        data: small JSON-compatible facts (exit code, class path, ...).
    """

    cursor: int
    timestamp: float
    kind: EventKind
    host: str
    agent_id: str | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
