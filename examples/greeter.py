"""A greeter: the smallest resident service (docs/services.md)."""

from __future__ import annotations

from dataclasses import dataclass

from paglets import PagletState
from paglets.services import Contract, Service


@dataclass
class GreetRequest(PagletState):
    name: str


@dataclass
class GreetReply(PagletState):
    text: str
    greeted: int


GREETER = Contract("greeter.v1", {"greet": (GreetRequest, GreetReply)})


@dataclass
class GreeterState(PagletState):
    greeting: str = "hello"
    greeted: int = 0


class Greeter(Service[GreeterState]):
    """Serves ``greeter.v1``: greets by name and counts whom it greeted."""

    State = GreeterState
    contract = GREETER

    def greet(self, request: GreetRequest) -> GreetReply:
        self.state.greeted += 1
        return GreetReply(f"{self.state.greeting}, {request.name}", self.state.greeted)
