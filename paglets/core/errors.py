"""The one exception tree of paglets.

Every error raised by paglets derives from `PagletError`. Where a caller
would naturally catch a builtin, the paglets error inherits it too::

    PagletError
     ├── ConfigurationError (ValueError)         bad host or CLI options
     ├── RequestError (ValueError)                a request the host cannot accept (400)
     │    ├── InvalidStateError                   state that does not fit the state class
     │    ├── PayloadTooLargeError                body, message or state over a limit (413)
     │    ├── ClassNotAllowedError (PermissionError)  module outside the allow-list (403)
     │    ├── ClassNotFoundError (ImportError)    class path not importable on that host
     │    │    └── CodeNotFoundError              a by-value class's code is not on that host (404)
     │    ├── CodeNotTrustedError (PermissionError)  that host does not run code by value (403)
     │    ├── ChecksumMismatchError               upload bytes not of the sha256 declared (422)
     │    └── InfeasibleError                     no host of the mesh could ever run that job (422)
     ├── AuthenticationError (PermissionError)    missing or wrong API key (401)
     ├── PagletNotFoundError (LookupError)        no such paglet on that host (404)
     │    └── PagletMovedError                    it moved; ``location`` says where
     ├── MessageNotHandledError                   the handler returned ``not_handled()``
     ├── HandlerError                             the paglet's handler raised
     ├── MailboxFullError                         too many messages waiting (429)
     ├── PagletInactiveError                      inactive, and the sender asked for no delay (409)
     ├── PagletTimeoutError (TimeoutError)        no reply within the caller's timeout
     ├── PagletDeadError                          the paglet stopped before replying (410)
     │    ├── PagletCrashedError                  its process died; the message says how
     │    └── PagletDisposedError                 it was disposed
     ├── HostError                                host-level failures
     │    ├── HostUnavailableError (ConnectionError)  the host cannot be reached
     │    ├── HostNotRunningError                 the host is stopping or stopped (503)
     │    ├── TooManyConnectionsError             at its connection limit, all busy (503)
     │    ├── HostFullError                       at its paglet count or child memory limit (503)
     │    ├── HostNotFoundError (LookupError)     no host of that name or URL in the mesh (404)
     │    ├── ServiceNotFoundError (LookupError)  no host of the mesh serves that contract (404)
     │    ├── ServiceUnavailableError             the hosts serving it are offline (503)
     │    ├── UpdateError                         a step of a git auto-update failed
     │    └── RelayQueueFullError                 a hub's queue for a relayed host is full (429)
     ├── ServiceLeasedError                       another caller holds a lease on that service (409)
     ├── ArtifactNotFoundError (LookupError)      no artifact of that name on that host (404)
     ├── TransferError                            a move did not happen; the paglet stayed
     │    └── TooManyTransfersError               the target takes no more at once (429)
     ├── StorageError (OSError)                   the host's disk or database failed (507)
     │    └── QuotaExceededError                  the host's artifact quota is full (507)
     └── ProtocolError                            a malformed frame or wire record
          └── EnvelopeError                       a malformed or truncated movement envelope

Errors cross process and host boundaries by name (`error_from_wire`),
never by unpickling. An error name the receiver does not know becomes a plain
`PagletError` that keeps the remote type name.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar


class PagletError(Exception):
    """Root of every paglets error.

    Attributes:
        remote_type: for an error that came from another process, the name of the
            exception type raised there.
        remote_traceback: the traceback text from the other process, if any.
    """

    http_status: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(
        self,
        message: str = "",
        *,
        remote_type: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return self.message


class ConfigurationError(PagletError, ValueError):
    """An option given to a host, client or command is invalid."""

    http_status = HTTPStatus.BAD_REQUEST


class RequestError(PagletError, ValueError):
    """A request that the host cannot accept as sent."""

    http_status = HTTPStatus.BAD_REQUEST


class InvalidStateError(RequestError):
    """State data that does not fit the paglet's state class."""


class PayloadTooLargeError(RequestError):
    """A body, message, reply or state larger than the configured limit."""

    http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class ClassNotAllowedError(RequestError, PermissionError):
    """A class path outside the module prefixes the host allows."""

    http_status = HTTPStatus.FORBIDDEN


class ClassNotFoundError(RequestError, ImportError):
    """A class path that cannot be imported on the host."""


class CodeNotFoundError(ClassNotFoundError):
    """The code of a class shipped by value is not on that host: send it first."""

    http_status = HTTPStatus.NOT_FOUND


class CodeNotTrustedError(RequestError, PermissionError):
    """That host does not run classes shipped by value (``--trust-code-by-value`` is off)."""

    http_status = HTTPStatus.FORBIDDEN


class InfeasibleError(RequestError):
    """A compute job asks more than any host of the mesh has; the message names the largest."""

    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class AuthenticationError(PagletError, PermissionError):
    """A missing or wrong API key."""

    http_status = HTTPStatus.UNAUTHORIZED


class PagletNotFoundError(PagletError, LookupError):
    """No paglet with that id on the host asked."""

    http_status = HTTPStatus.NOT_FOUND


class PagletMovedError(PagletNotFoundError):
    """The paglet left the host asked; ``location`` is the URL of the host it went to.

    Proxies follow it by themselves (a few hops at most).
    """

    _AT = " now at "

    @classmethod
    def to(cls, agent_id: str, host_name: str, url: str) -> PagletMovedError:
        """The error for ``agent_id``, which moved to ``host_name`` at ``url``."""
        return cls(f"paglet {agent_id} moved to host {host_name}{cls._AT}{url}")

    @property
    def location(self) -> str | None:
        """The URL of the host the paglet moved to, if the message names one."""
        _, found, url = self.message.rpartition(self._AT)
        if not found:
            return None
        return url.strip() or None


class MessageNotHandledError(PagletError):
    """The paglet's handler did not handle the message kind."""

    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class HandlerError(PagletError):
    """The paglet's message handler raised; the message starts with the exception's type."""

    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class MailboxFullError(PagletError):
    """The paglet has as many messages waiting as its mailbox allows."""

    http_status = HTTPStatus.TOO_MANY_REQUESTS


class PagletInactiveError(PagletError):
    """The paglet is inactive (on disk) and the message asked not to wait for activation."""

    http_status = HTTPStatus.CONFLICT


class PagletTimeoutError(PagletError, TimeoutError):
    """No reply within the caller's timeout."""

    http_status = HTTPStatus.GATEWAY_TIMEOUT


class PagletDeadError(PagletError):
    """The paglet stopped before it could handle or answer the call."""

    http_status = HTTPStatus.GONE


class PagletCrashedError(PagletDeadError):
    """The paglet's process died; the message says how (exit code, signal, ...)."""


class PagletDisposedError(PagletDeadError):
    """The paglet was disposed."""


class HostError(PagletError):
    """A failure of the host itself rather than of one paglet."""

    http_status = HTTPStatus.BAD_GATEWAY


class HostUnavailableError(HostError, ConnectionError):
    """The host cannot be reached."""


class HostNotRunningError(HostError):
    """The host is not running, or is stopping."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class HostFullError(HostError):
    """The host runs as many paglets as ``--max-paglets`` allows, or its children use
    the memory ``--max-child-memory`` allows: it starts no more (create, arrival,
    activation); the message names the flag. Retry later, or on another host.
    """

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class TooManyConnectionsError(HostError):
    """The host has as many connections open as it allows, each busy with a request.

    Answered on a new connection, before its request is read; retry shortly.
    """

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class HostNotFoundError(HostError, LookupError):
    """No host of that name or URL in the mesh."""

    http_status = HTTPStatus.NOT_FOUND


class ServiceNotFoundError(HostError, LookupError):
    """No host of the mesh (or not the host named) serves that service contract."""

    http_status = HTTPStatus.NOT_FOUND


class ServiceUnavailableError(HostError):
    """The hosts that serve that contract are offline or unreachable; the message says
    which and for how long (``unavailable (host beta offline for 12 s)``)."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class UpdateError(HostError):
    """A step of a git auto-update (``--git-auto-update``) failed: fetch, fast-forward,
    dependency sync, the check of the new code, or its restart. The host stays on (or
    goes back to) its old commit; the message says which step and why.
    """


class ServiceLeasedError(PagletError):
    """Another caller holds a lease on the service (exclusive use for a time), or the
    caller's own lease lapsed; the message says for how long it is still held."""

    http_status = HTTPStatus.CONFLICT


class TransferError(PagletError):
    """A dispatch, clone or retract did not happen; the paglet stayed where it was."""

    http_status = HTTPStatus.CONFLICT


class TooManyTransfersError(TransferError):
    """The target receives as many transfers at once as it allows; the paglet stayed.

    Answered before the envelope is read; the source may try again later.
    """

    http_status = HTTPStatus.TOO_MANY_REQUESTS


class StorageError(PagletError, OSError):
    """The host could not read or write its durable state (disk full, corrupt database)."""

    http_status = HTTPStatus.INSUFFICIENT_STORAGE


class ProtocolError(PagletError):
    """A malformed frame or wire record."""

    http_status = HTTPStatus.BAD_REQUEST


class EnvelopeError(ProtocolError):
    """A movement envelope that is malformed, truncated, of another version or of another class."""


class ArtifactNotFoundError(PagletError, LookupError):
    """No artifact of that name on the host asked (`paglets.artifacts`)."""

    http_status = HTTPStatus.NOT_FOUND


class ChecksumMismatchError(RequestError):
    """An upload whose bytes do not have the sha256 its sender declared; nothing was kept."""

    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class QuotaExceededError(StorageError):
    """An artifact that does not fit in the host's artifact quota now; nothing was kept."""


class RelayQueueFullError(HostError):
    """A relay hub holds as many items for a relayed host as it allows; nothing was queued.

    Answered with ``Retry-After``; the caller may try again (``--relay-queue-limit``).
    """

    http_status = HTTPStatus.TOO_MANY_REQUESTS


def _all_error_classes() -> dict[str, type[PagletError]]:
    found: dict[str, type[PagletError]] = {}
    pending: list[type[PagletError]] = [PagletError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def error_from_wire(
    type_name: str, message: str, remote_traceback: str | None = None
) -> PagletError:
    """Rebuild an error sent by another process or host, by its type name.

    Only classes of this tree can be built; any other name becomes a plain
    `PagletError` whose ``remote_type`` keeps the name.
    """
    cls = _all_error_classes().get(type_name, PagletError)
    return cls(message, remote_type=type_name, remote_traceback=remote_traceback)
