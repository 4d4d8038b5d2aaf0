"""paglets: mobile Python agents on a process mesh.

The names here are the public API: what a paglet author or a script needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from paglets._version import __version__

# The authoring model loads on first use too: ``paglets-host`` installs its cache of
# dataclass code (paglets.runtime.dataclasscode) before these modules make theirs.
if TYPE_CHECKING:
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
    "MeshHost": "paglets.core.context",
    "PagletContext": "paglets.core.context",
    "PagletLink": "paglets.core.context",
    "AuthenticationError": "paglets.core.errors",
    "ClassNotAllowedError": "paglets.core.errors",
    "ClassNotFoundError": "paglets.core.errors",
    "CodeNotFoundError": "paglets.core.errors",
    "CodeNotTrustedError": "paglets.core.errors",
    "ConfigurationError": "paglets.core.errors",
    "HandlerError": "paglets.core.errors",
    "HostError": "paglets.core.errors",
    "HostFullError": "paglets.core.errors",
    "HostNotFoundError": "paglets.core.errors",
    "HostNotRunningError": "paglets.core.errors",
    "HostUnavailableError": "paglets.core.errors",
    "InvalidStateError": "paglets.core.errors",
    "MailboxFullError": "paglets.core.errors",
    "MessageNotHandledError": "paglets.core.errors",
    "PagletCrashedError": "paglets.core.errors",
    "PagletDeadError": "paglets.core.errors",
    "PagletDisposedError": "paglets.core.errors",
    "PagletError": "paglets.core.errors",
    "PagletInactiveError": "paglets.core.errors",
    "PagletMovedError": "paglets.core.errors",
    "PagletNotFoundError": "paglets.core.errors",
    "PagletTimeoutError": "paglets.core.errors",
    "PayloadTooLargeError": "paglets.core.errors",
    "ProtocolError": "paglets.core.errors",
    "RelayQueueFullError": "paglets.core.errors",
    "RequestError": "paglets.core.errors",
    "StorageError": "paglets.core.errors",
    "TransferError": "paglets.core.errors",
    "ContextEvent": "paglets.core.events",
    "EventKind": "paglets.core.events",
    "LifecycleEvent": "paglets.core.events",
    "LifecycleKind": "paglets.core.events",
    "NOT_HANDLED": "paglets.core.message",
    "Message": "paglets.core.message",
    "Priority": "paglets.core.message",
    "ArrivalMode": "paglets.core.movement",
    "Itinerary": "paglets.core.movement",
    "ItineraryStop": "paglets.core.movement",
    "TransferTicket": "paglets.core.movement",
    "Paglet": "paglets.core.paglet",
    "RestartMode": "paglets.core.policy",
    "RestartPolicy": "paglets.core.policy",
    "PagletState": "paglets.core.state",
    "ExitReason": "paglets.core.status",
    "HostStatus": "paglets.core.status",
    "PagletStatus": "paglets.core.status",
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
