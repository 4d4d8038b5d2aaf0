"""paglets: mobile Python agents on a process mesh.

The names here are the public API: what a paglet author or a script needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from paglets._version import __version__
from paglets.core.context import MeshHost, PagletContext, PagletLink
from paglets.core.errors import (
    AuthenticationError,
    ClassNotAllowedError,
    ClassNotFoundError,
    CodeNotFoundError,
    CodeNotTrustedError,
    ConfigurationError,
    HandlerError,
    HostError,
    HostFullError,
    HostNotFoundError,
    HostNotRunningError,
    HostUnavailableError,
    InvalidStateError,
    MailboxFullError,
    MessageNotHandledError,
    PagletCrashedError,
    PagletDeadError,
    PagletDisposedError,
    PagletError,
    PagletInactiveError,
    PagletMovedError,
    PagletNotFoundError,
    PagletTimeoutError,
    PayloadTooLargeError,
    ProtocolError,
    RelayQueueFullError,
    RequestError,
    StorageError,
    TransferError,
)
from paglets.core.events import ContextEvent, EventKind, LifecycleEvent, LifecycleKind
from paglets.core.message import NOT_HANDLED, Message, Priority
from paglets.core.movement import ArrivalMode, Itinerary, ItineraryStop, TransferTicket
from paglets.core.paglet import Paglet
from paglets.core.policy import RestartMode, RestartPolicy
from paglets.core.state import PagletState
from paglets.core.status import ExitReason, HostStatus, PagletStatus

if TYPE_CHECKING:
    from paglets.config import HostConfig
    from paglets.host import Host
    from paglets.transport.client import (
        AsyncHostClient,
        AsyncPagletFuture,
        AsyncPagletProxy,
        AsyncReplySet,
        PagletRef,
    )
    from paglets.transport.sync import HostClient, PagletFuture, PagletProxy, ReplySet
    from paglets.wire.mesh import HostRecord
    from paglets.wire.records import HostInfo, PagletInfo

# Host-side names load on first use, so a paglet's child process, which imports
# ``paglets`` for the authoring model, never loads aiohttp or the host.
_LAZY = {
    "HostConfig": "paglets.config",
    "Host": "paglets.host",
    "AsyncHostClient": "paglets.transport.client",
    "AsyncPagletFuture": "paglets.transport.client",
    "AsyncPagletProxy": "paglets.transport.client",
    "AsyncReplySet": "paglets.transport.client",
    "PagletRef": "paglets.transport.client",
    "HostClient": "paglets.transport.sync",
    "PagletFuture": "paglets.transport.sync",
    "PagletProxy": "paglets.transport.sync",
    "ReplySet": "paglets.transport.sync",
    "HostInfo": "paglets.wire.records",
    "HostRecord": "paglets.wire.mesh",
    "PagletInfo": "paglets.wire.records",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'paglets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "NOT_HANDLED",
    "ArrivalMode",
    "AsyncHostClient",
    "AsyncPagletFuture",
    "AsyncPagletProxy",
    "AsyncReplySet",
    "AuthenticationError",
    "ClassNotAllowedError",
    "ClassNotFoundError",
    "CodeNotFoundError",
    "CodeNotTrustedError",
    "ConfigurationError",
    "ContextEvent",
    "EventKind",
    "ExitReason",
    "HandlerError",
    "Host",
    "HostClient",
    "HostConfig",
    "HostError",
    "HostFullError",
    "HostInfo",
    "HostNotFoundError",
    "HostNotRunningError",
    "HostRecord",
    "HostStatus",
    "HostUnavailableError",
    "InvalidStateError",
    "Itinerary",
    "ItineraryStop",
    "LifecycleEvent",
    "LifecycleKind",
    "MailboxFullError",
    "MeshHost",
    "Message",
    "MessageNotHandledError",
    "Paglet",
    "PagletContext",
    "PagletCrashedError",
    "PagletDeadError",
    "PagletDisposedError",
    "PagletError",
    "PagletFuture",
    "PagletInactiveError",
    "PagletInfo",
    "PagletLink",
    "PagletMovedError",
    "PagletNotFoundError",
    "PagletProxy",
    "PagletRef",
    "PagletState",
    "PagletStatus",
    "PagletTimeoutError",
    "PayloadTooLargeError",
    "Priority",
    "ProtocolError",
    "RelayQueueFullError",
    "ReplySet",
    "RequestError",
    "RestartMode",
    "RestartPolicy",
    "StorageError",
    "TransferError",
    "TransferTicket",
    "__version__",
]
