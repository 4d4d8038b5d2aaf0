"""``Service``: the base class of a resident service's paglet.

A service is a paglet that serves one `paglets.core.contract.Contract`: each
operation is a method of the same name taking the request dataclass and
returning the reply dataclass (``def`` or ``async def``)::

    class Echo(Service[EchoState]):
        State = EchoState
        contract = ECHO

        def echo(self, request: EchoRequest) -> EchoReply:
            self.state.calls += 1
            return EchoReply(request.text)

The host delivers each call as a message of kind ``service.call``; the request
is decoded strictly in the paglet's own process, so a malformed request is a
`RequestError` naming the contract, and a method that returns another type
than its reply is a `ProtocolError`. Other message kinds go to
`handle_message` as for any paglet (override it and call ``super()``).

A replicated service (``replicate = true``, `paglets.services.replicas`) is
also sent ``service.restore`` by its host when it takes over with a newer copy
of its state than its own: the state is replaced and checkpointed. Only the
host sends these kinds (`paglets.wire.services.HOST_KINDS`).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from paglets.core.errors import ConfigurationError, RequestError
from paglets.core.paglet import Paglet
from paglets.core.state import PagletState
from paglets.wire.services import SERVICE_CALL, SERVICE_RESTORE, decode_request, encode_reply
from paglets.wire.state_json import state_from_json

if TYPE_CHECKING:
    from paglets.core.contract import Contract
    from paglets.core.message import Message

StateT = TypeVar("StateT", bound=PagletState)


class Service(Paglet[StateT]):
    """A paglet serving one contract; see the module docstring."""

    contract: ClassVar[Contract]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        contract = getattr(cls, "contract", None)
        if contract is None:
            return  # an abstract base of services
        for op in contract.operations:
            if not callable(getattr(cls, op, None)):
                raise ConfigurationError(
                    f"{cls.__qualname__} serves {contract.name} but has no method {op!r}"
                )

    async def handle_message(self, message: Message) -> Any:
        """Serve ``service.call`` messages (and ``service.restore`` from the host);
        other kinds are not handled."""
        if message.kind == SERVICE_RESTORE:
            # the newest copy of a replicated service's state, from another host
            self.state = state_from_json(type(self.state), message.args["state"])
            self.checkpoint()
            return None
        if message.kind != SERVICE_CALL:
            return self.not_handled()
        contract = type(self).contract
        args = message.args
        asked = args.get("contract")
        if asked != contract.name:
            raise RequestError(
                f"{type(self).__qualname__} serves contract {contract.name}, not {asked!r:.80}; "
                "fix the contract of this service in launch.toml"
            )
        operation, request = decode_request(contract, str(args.get("op")), args.get("request"))
        reply = getattr(self, operation.name)(request)
        if inspect.isawaitable(reply):
            reply = await reply
        return encode_reply(contract, operation, reply)
