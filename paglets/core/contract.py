"""``Contract``: the typed interface of a resident service.

A contract has a versioned name (``artifacts.v1``) and operations, each with a
request and a reply dataclass (`paglets.core.state.PagletState`-style: typed
fields the strict state decoder rebuilds). A service is a paglet class that
declares the contract it serves (`paglets.services.Service`); callers reach it
through a typed client (``client.service(Contract)``) that takes a request
dataclass and returns the reply dataclass::

    @dataclass
    class EchoRequest(PagletState):
        text: str

    @dataclass
    class EchoReply(PagletState):
        text: str

    ECHO = Contract("echo.v1", {"echo": (EchoRequest, EchoReply)})

Requests and replies cross the wire as the JSON projection of their
dataclass, never pickled.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import ConfigurationError, RequestError
from paglets.core.ids import IdKind, is_valid_id

if TYPE_CHECKING:
    from collections.abc import Mapping

CONTRACT_NAME: Final = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*\.v[0-9]+")
"""A contract's name: dotted lower-case words ending in a version, e.g. ``artifacts.v1``."""
_OPERATION: Final = re.compile(r"[a-z][a-z0-9_]*")
MAX_OPERATIONS: Final = 64


def is_contract_name(value: object) -> bool:
    """Whether ``value`` is a well-formed contract name (``name.v1``)."""
    return (
        isinstance(value, str)
        and is_valid_id(value, IdKind.SERVICE)
        and CONTRACT_NAME.fullmatch(value) is not None
    )


def check_contract_name(value: object) -> str:
    """``value`` if it is a contract name; `RequestError` saying what one looks like."""
    if not is_contract_name(value):
        raise RequestError(
            f"{value!r:.80} is not a contract name: use dotted lower-case words ending in "
            "a version, e.g. 'artifacts.v1'"
        )
    return str(value)


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a contract: its name and its request and reply dataclasses."""

    name: str
    request: type[Any]
    reply: type[Any]


@dataclass(frozen=True, slots=True, init=False)
class Contract:
    """A service contract: a versioned name and its operations.

    Args:
        name: ``word.v1`` (dotted lower-case words ending in a version).
        operations: each operation's name mapped to its ``(Request, Reply)``
            dataclasses; names are lower-case Python identifiers.

    Raises:
        ConfigurationError: a bad name, an operation name that is not a
            lower-case identifier, or a request or reply that is not a dataclass.
    """

    name: str
    operations: Mapping[str, Operation]

    def __init__(self, name: str, operations: Mapping[str, tuple[type[Any], type[Any]]]) -> None:
        if not is_contract_name(name):
            raise ConfigurationError(
                f"contract name {name!r} must be dotted lower-case words ending in a version, "
                "e.g. 'artifacts.v1'"
            )
        if not operations or len(operations) > MAX_OPERATIONS:
            raise ConfigurationError(f"contract {name} must have 1 to {MAX_OPERATIONS} operations")
        ops: dict[str, Operation] = {}
        for op, (request, reply) in operations.items():
            if not isinstance(op, str) or _OPERATION.fullmatch(op) is None:
                raise ConfigurationError(
                    f"contract {name}: operation {op!r} must be a lower-case identifier"
                )
            for role, cls in (("request", request), ("reply", reply)):
                if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                    raise ConfigurationError(
                        f"contract {name}: the {role} of {op!r} must be a dataclass, not {cls!r}"
                    )
            ops[op] = Operation(op, request, reply)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "operations", ops)

    def __repr__(self) -> str:
        return f"<Contract {self.name} {sorted(self.operations)}>"

    def operation(self, name: str) -> Operation:
        """The operation ``name``.

        Raises:
            RequestError: the contract has no such operation (the message names
                the contract and its operations).
        """
        found = self.operations.get(name)
        if found is None:
            raise RequestError(
                f"contract {self.name} has no operation {name!r:.80} "
                f"(its operations: {', '.join(sorted(self.operations))})"
            )
        return found

    def check_request(self, name: str, request: object) -> Operation:
        """The operation ``name``, once ``request`` is its request type.

        Raises:
            RequestError: an unknown operation, or a request of another type (the
                message names the contract and the type expected).
        """
        op = self.operation(name)
        if type(request) is not op.request:
            raise RequestError(
                f"contract {self.name}: operation {name!r} takes {op.request.__qualname__}, "
                f"not {type(request).__qualname__}"
            )
        return op
