"""A paglet to copy from: a state dataclass, hooks, run() and a message handler.

The quickstart creates it as ``my_paglet:Guestbook``; the host must allow the
``my_paglet`` module prefix (``allow_modules=("my_paglet",)`` or
``paglets-host --allow-module my_paglet``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from paglets import LifecycleEvent, Message, Paglet, PagletState


class Mood(Enum):
    CALM = "calm"
    BUSY = "busy"


@dataclass
class Visit:
    """A nested dataclass: any dataclass can be a field of the state."""

    who: str
    at: dt.datetime


@dataclass
class GuestbookState(PagletState):
    title: str = "guestbook"
    mood: Mood = Mood.CALM
    visits: list[Visit] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)
    created_on: str | None = None
    ticks: int = 0


class Guestbook(Paglet[GuestbookState]):
    """Lets visitors sign, counts them, and ticks in the background."""

    State = GuestbookState

    def on_creation(self, event: LifecycleEvent) -> None:
        # Runs once, in the paglet's own process, before create() returns.
        self.state.created_on = event.host_name

    def on_disposing(self, event: LifecycleEvent) -> None:
        self.context.log.info(
            "guestbook %s closes with %d visits", event.agent_id, len(self.state.visits)
        )

    async def run(self) -> None:
        # Background work on the paglet's event loop, between messages.
        while True:
            await asyncio.sleep(0.1)
            self.state.ticks += 1

    async def handle_message(self, message: Message) -> Any:
        if message.kind == "sign":
            who = str(message.args["who"])
            self.state.visits.append(Visit(who, dt.datetime.now(dt.UTC)))
            self.state.tally[who] = self.state.tally.get(who, 0) + 1
            return {"visits": len(self.state.visits)}
        if message.kind == "hold":
            # Keep the mailbox busy until `count` messages wait behind this one
            # (at most 10 s). Other messages wait; run() keeps ticking.
            self.state.mood = Mood.BUSY
            for _ in range(1000):
                if self.context.pending_messages >= int(message.args["count"]):
                    break
                await asyncio.sleep(0.01)
            self.state.mood = Mood.CALM
            return "released"
        if message.kind == "tally":
            return self.state.tally
        return self.not_handled()
