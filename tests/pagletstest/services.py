"""Test services (``tests/test_services.py``): an echo service, and a paglet that calls it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from paglets import Message, Paglet, PagletState
from paglets.services import Contract, Service


@dataclass
class EchoRequest(PagletState):
    text: str


@dataclass
class EchoReply(PagletState):
    text: str
    calls: int
    pid: int
    greeting: str


@dataclass
class CountRequest(PagletState):
    pass


@dataclass
class CountReply(PagletState):
    calls: int


ECHO = Contract("echo.v1", {"echo": (EchoRequest, EchoReply), "count": (CountRequest, CountReply)})


@dataclass
class EchoState(PagletState):
    greeting: str = "hello"
    calls: int = 0
    bad_reply: bool = False


class Echo(Service[EchoState]):
    """Echoes text; counts its calls in its state (kept across deactivation)."""

    State = EchoState
    contract = ECHO

    def echo(self, request: EchoRequest) -> EchoReply:
        self.state.calls += 1
        if request.text == "wrong reply":
            return CountReply(self.state.calls)  # type: ignore[return-value] - on purpose
        return EchoReply(request.text, self.state.calls, os.getpid(), self.state.greeting)

    async def count(self, request: CountRequest) -> CountReply:
        del request
        return CountReply(self.state.calls)


@dataclass
class CallerState(PagletState):
    pass


class Caller(Paglet[CallerState]):
    """Calls the echo service from inside a paglet: ``ask`` with ``text`` and ``where``."""

    State = CallerState

    def handle_message(self, message: Message) -> Any:
        if message.kind != "ask":
            return self.not_handled()
        service = self.context.service(ECHO, where=message.args.get("where"))
        reply = service.echo(EchoRequest(message.args["text"]))
        return {"text": reply.text, "calls": reply.calls, "type": type(reply).__name__}
