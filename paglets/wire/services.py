"""Service calls on the wire, and the typed clients that make them.

A call is ``{"op": name, "request": <the request's JSON projection>}``; its
answer is the reply's JSON projection. Both are built with
`paglets.wire.state_json` and decoded strictly into the contract's own
dataclasses, never unpickled.

`ServiceClient` (blocking) and `AsyncServiceClient` (async) are what
``client.service(Contract)`` and ``self.context.service(Contract)`` return:
``svc.echo(EchoRequest("hi"))`` (or ``svc.call("echo", ...)``) encodes the
request, hands it to the caller's ``invoke`` (an HTTP request, a call to the
host over the child's link) and decodes the reply. A request of the wrong
type or an unknown operation fails before anything is sent, naming the
contract.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import InvalidStateError, ProtocolError
from paglets.wire.state_json import state_from_json, state_to_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from paglets.core.contract import Contract, Operation

SERVICE_CALL = "service.call"
"""The message kind a host delivers a service call to its paglet with."""


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


class ServiceClient:
    """Blocking calls of one contract; see the module docstring.

    Args:
        contract: the contract called.
        invoke: sends ``(op, request JSON)`` and returns the reply JSON.
        where: where the calls go, for ``repr``.
    """

    def __init__(
        self, contract: Contract, invoke: Callable[[str, dict[str, Any]], Any], where: str
    ) -> None:
        self.contract = contract
        self._invoke = invoke
        self._where = where

    def __repr__(self) -> str:
        return f"<ServiceClient {self.contract.name} via {self._where}>"

    def call(self, op: str, request: object) -> Any:
        """Call ``op`` with ``request``; returns its reply dataclass."""
        body = encode_request(self.contract, op, request)
        return decode_reply(self.contract, op, self._invoke(op, body))

    def __getattr__(self, op: str) -> Callable[[object], Any]:
        if op.startswith("_"):
            raise AttributeError(op)
        self.contract.operation(op)
        return functools.partial(self.call, op)


class AsyncServiceClient:
    """Async calls of one contract; see the module docstring and `ServiceClient`."""

    def __init__(
        self,
        contract: Contract,
        invoke: Callable[[str, dict[str, Any]], Coroutine[Any, Any, Any]],
        where: str,
    ) -> None:
        self.contract = contract
        self._invoke = invoke
        self._where = where

    def __repr__(self) -> str:
        return f"<AsyncServiceClient {self.contract.name} via {self._where}>"

    async def call(self, op: str, request: object) -> Any:
        """Call ``op`` with ``request``; returns its reply dataclass."""
        body = encode_request(self.contract, op, request)
        return decode_reply(self.contract, op, await self._invoke(op, body))

    def __getattr__(self, op: str) -> Callable[[object], Awaitable[Any]]:
        if op.startswith("_"):
            raise AttributeError(op)
        self.contract.operation(op)
        return functools.partial(self.call, op)


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
        offline_for: seconds since the host was last heard of, when offline.
    """

    contract: str
    host: str
    online: bool = True
    name: str | None = None
    status: str | None = None
    start: str | None = None
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
            "offline_for": self.offline_for,
        }

    @classmethod
    def from_dict(cls, data: object) -> ServiceInfo:
        """Decode the JSON form strictly; `ProtocolError` says what is wrong."""
        if not isinstance(data, dict) or data.keys() != _INFO_KEYS:
            raise ProtocolError(f"malformed service record: {data!r:.200}")
        texts = ("contract", "host")
        optional = ("name", "status", "start")
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
