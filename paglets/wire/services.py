"""Service calls on the wire, and the typed clients that make them.

A call is ``{"op": name, "request": <the request's JSON projection>}``; its
answer is the reply's JSON projection. Both are built with
`paglets.wire.state_json` and decoded strictly into the contract's own
dataclasses, never unpickled.

`ServiceClient` (blocking) and `AsyncServiceClient` (async) are what
``client.service(Contract)`` and ``self.context.service(Contract)`` return:
``svc.echo(EchoRequest("hi"))`` (or ``svc.call("echo", ...)``) encodes the
request, hands the call's body to the caller's ``invoke`` (an HTTP request, a
call to the host over the child's link) and decodes the reply. A request of
the wrong type or an unknown operation fails before anything is sent, naming
the contract. ``take_lease``/``renew_lease``/``release_lease`` manage a lease
(`paglets.services.leases`); while one is held, calls carry it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import (
    InvalidStateError,
    ProtocolError,
    RequestError,
    ServiceLeasedError,
)
from paglets.wire.state_json import state_from_json, state_to_json

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from paglets.core.contract import Contract, Operation

SERVICE_CALL = "service.call"
"""The message kind a host delivers a service call to its paglet with."""
SERVICE_RESTORE = "service.restore"
"""The message kind a host gives a replicated service the newest copy of its
state with (``{"state"}``, `paglets.services.replicas`)."""
HOST_KINDS: Final = frozenset({SERVICE_CALL, SERVICE_RESTORE})
"""Message kinds only the host sends: a message of one of them from a client or
a paglet is refused (a service call goes through ``client.service(...)``, which
checks the request and any lease first)."""


def check_kind(kind: str) -> str:
    """``kind`` unless only the host may send it (`HOST_KINDS`); `RequestError` then."""
    if kind in HOST_KINDS:
        raise RequestError(
            f"message kind {kind!r} is the host's own; call a service through "
            "client.service(Contract) or self.context.service(Contract)"
        )
    return kind


def encode_request(contract: Contract, op: str, request: object) -> dict[str, Any]:
    """The JSON form of ``request`` for operation ``op``; `RequestError` names the contract."""
    contract.check_request(op, request)
    return state_to_json(request)  # type: ignore[arg-type]


def decode_request(contract: Contract, op: str, data: object) -> tuple[Operation, Any]:
    """Operation ``op`` and its request rebuilt from ``data``, strictly.

    Raises:
        RequestError: no such operation; InvalidStateError: ``data`` does not fit
            the request dataclass (the message names the contract and field).
    """
    operation = contract.operation(op)
    return operation, _decode(contract, operation.request, data, f"{op} request")


def encode_reply(contract: Contract, operation: Operation, reply: object) -> dict[str, Any]:
    """The JSON form of ``reply``; `ProtocolError` if it is not the operation's reply type."""
    if type(reply) is not operation.reply:
        raise ProtocolError(
            f"service of contract {contract.name}: operation {operation.name!r} returned a "
            f"{type(reply).__qualname__}, not its reply type {operation.reply.__qualname__}"
        )
    return state_to_json(reply)  # type: ignore[arg-type]


def decode_reply(contract: Contract, op: str, data: object) -> Any:
    """The reply of ``op`` rebuilt from ``data``; `ProtocolError` if it does not fit."""
    try:
        return _decode(contract, contract.operation(op).reply, data, f"{op} reply")
    except InvalidStateError as exc:
        raise ProtocolError(str(exc)) from None


def _decode(contract: Contract, cls: type[Any], data: object, what: str) -> Any:
    if not isinstance(data, dict):
        raise InvalidStateError(f"contract {contract.name}: the {what} must be a JSON object")
    try:
        return state_from_json(cls, data)
    except InvalidStateError as exc:
        raise InvalidStateError(f"contract {contract.name}: the {what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ServiceLease:
    """A lease held on a service: its id, the host of the service, seconds left."""

    lease_id: str
    host: str
    expires_in: float

    @classmethod
    def from_dict(cls, data: object) -> ServiceLease:
        """Decode a lease answer strictly; `ProtocolError` says what is wrong."""
        if (
            not isinstance(data, dict)
            or data.keys() != {"lease", "host", "expires_in"}
            or not isinstance(data["lease"], str)
            or not isinstance(data["host"], str)
            or isinstance(data["expires_in"], bool)
            or not isinstance(data["expires_in"], int | float)
        ):
            raise ProtocolError(f"malformed lease answer: {data!r:.200}")
        return cls(data["lease"], data["host"], float(data["expires_in"]))


def _held(lease: ServiceLease | None) -> ServiceLease:
    if lease is None:  # pragma: no cover - take and renew always answer a lease
        raise ProtocolError("the host answered no lease")
    return lease


class _Calls:
    """What both clients share: the contract, where calls go, the lease they carry."""

    def __init__(self, contract: Contract, where: str | None, timeout: float | None) -> None:
        self.contract = contract
        self.where = where
        self.timeout = timeout
        self.lease: ServiceLease | None = None
        self._seconds = 0.0

    def __repr__(self) -> str:
        held = f" lease {self.lease.lease_id}" if self.lease else ""
        return f"<{type(self).__name__} {self.contract.name} at {self.where or 'any host'}{held}>"

    def _call_body(self, op: str, request: object) -> dict[str, Any]:
        return {
            "op": op,
            "request": encode_request(self.contract, op, request),
            "where": self.where,
            "timeout": self.timeout,
            "lease": self.lease.lease_id if self.lease else None,
        }

    def _lease_body(self, action: str, seconds: float | None) -> dict[str, Any]:
        if action == "take":
            self._seconds = float(seconds or 0.0)
        elif self.lease is None:
            raise ServiceLeasedError(f"no lease on service {self.contract.name} is held here")
        return {
            "action": action,
            "seconds": self._seconds if seconds is None else seconds,
            "lease": self.lease.lease_id if self.lease and action != "take" else None,
            "where": self.where,
        }

    def _leased(self, action: str, answer: Any) -> ServiceLease | None:
        if action == "release":
            self.lease = None
            return None
        self.lease = ServiceLease.from_dict(answer)
        self.where = self.lease.host  # the lease is that host's: calls go there
        return self.lease

    def _op(self, op: str) -> None:
        if op.startswith("_"):
            raise AttributeError(op)
        self.contract.operation(op)


class ServiceClient(_Calls):
    """Blocking calls of one contract; see the module docstring.

    Args:
        contract: the contract called.
        invoke: posts ``(route, body)`` (``calls`` or ``lease``) and returns the answer.
        where: the host (name or URL) calls go to; ``None``: where the mesh has it.
        timeout: seconds each call may take.
    """

    def __init__(
        self,
        contract: Contract,
        invoke: Callable[[str, dict[str, Any]], Any],
        where: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(contract, where, timeout)
        self._invoke = invoke

    def call(self, op: str, request: object) -> Any:
        """Call ``op`` with ``request``; returns its reply dataclass."""
        answer = self._invoke("calls", self._call_body(op, request))
        return decode_reply(self.contract, op, answer["reply"])

    def __getattr__(self, op: str) -> Callable[[object], Any]:
        self._op(op)
        return functools.partial(self.call, op)

    def take_lease(self, seconds: float) -> ServiceLease:
        """Take exclusive use of the service for ``seconds``; calls carry it from now on."""
        return _held(self._lease("take", seconds))

    def renew_lease(self, seconds: float | None = None) -> ServiceLease:
        """Extend the lease held to ``seconds`` (default: as long as it was taken for)."""
        return _held(self._lease("renew", seconds))

    def release_lease(self) -> None:
        """Give the lease up."""
        self._lease("release", None)

    def _lease(self, action: str, seconds: float | None) -> ServiceLease | None:
        return self._leased(action, self._invoke("lease", self._lease_body(action, seconds)))


class AsyncServiceClient(_Calls):
    """Async calls of one contract; see the module docstring and `ServiceClient`."""

    def __init__(
        self,
        contract: Contract,
        invoke: Callable[[str, dict[str, Any]], Coroutine[Any, Any, Any]],
        where: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(contract, where, timeout)
        self.invoke = invoke

    async def call(self, op: str, request: object) -> Any:
        """Call ``op`` with ``request``; returns its reply dataclass."""
        answer = await self.invoke("calls", self._call_body(op, request))
        return decode_reply(self.contract, op, answer["reply"])

    def __getattr__(self, op: str) -> Callable[[object], Coroutine[Any, Any, Any]]:
        self._op(op)
        return functools.partial(self.call, op)

    async def take_lease(self, seconds: float) -> ServiceLease:
        """Take exclusive use of the service for ``seconds``; calls carry it from now on."""
        return _held(await self._lease("take", seconds))

    async def renew_lease(self, seconds: float | None = None) -> ServiceLease:
        """Extend the lease held to ``seconds`` (default: as long as it was taken for)."""
        return _held(await self._lease("renew", seconds))

    async def release_lease(self) -> None:
        """Give the lease up."""
        await self._lease("release", None)

    async def _lease(self, action: str, seconds: float | None) -> ServiceLease | None:
        answer = await self.invoke("lease", self._lease_body(action, seconds))
        return self._leased(action, answer)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One service as ``GET /v1/services`` lists it.

    Attributes:
        contract: the contract it serves.
        host: the name of the host that serves it.
        online: whether that host is online, as the host asked judges it.
        name: its name in that host's launch file (``None`` for another host's).
        status: its paglet's status: ``advertised`` (not started yet), ``active``,
            ``inactive``, ... (``None`` for another host's).
        start: ``eager`` or ``lazy`` (``None`` for another host's).
        scope: ``host`` or ``mesh`` (``None`` for another host's).
        offline_for: seconds since the host was last heard of, when offline.
    """

    contract: str
    host: str
    online: bool = True
    name: str | None = None
    status: str | None = None
    start: str | None = None
    scope: str | None = None
    offline_for: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "contract": self.contract,
            "host": self.host,
            "online": self.online,
            "name": self.name,
            "status": self.status,
            "start": self.start,
            "scope": self.scope,
            "offline_for": self.offline_for,
        }

    @classmethod
    def from_dict(cls, data: object) -> ServiceInfo:
        """Decode the JSON form strictly; `ProtocolError` says what is wrong."""
        if not isinstance(data, dict) or data.keys() != _INFO_KEYS:
            raise ProtocolError(f"malformed service record: {data!r:.200}")
        texts = ("contract", "host")
        optional = ("name", "status", "start", "scope")
        number = data["offline_for"]
        if (
            not all(isinstance(data[k], str) for k in texts)
            or not all(data[k] is None or isinstance(data[k], str) for k in optional)
            or not isinstance(data["online"], bool)
            or not (number is None or (isinstance(number, int | float) and number >= 0))
        ):
            raise ProtocolError(f"malformed service record: {data!r:.200}")
        return cls(**data)


_INFO_KEYS: Final = frozenset(ServiceInfo.__slots__)
