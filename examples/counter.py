"""A counter: the smallest useful paglet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paglets import LifecycleEvent, Message, Paglet, PagletState


@dataclass
class CounterState(PagletState):
    count: int = 0
    visits: list[str] = field(default_factory=list)


class Counter(Paglet[CounterState]):
    """Counts ``increment`` messages and remembers the hosts it was created on."""

    State = CounterState

    def on_creation(self, event: LifecycleEvent) -> None:
        self.state.visits.append(event.host_name)

    def on_arrival(self, event: LifecycleEvent) -> None:
        self.state.visits.append(event.host_name)

    def handle_message(self, message: Message) -> Any:
        if message.kind == "increment":
            self.state.count += int(message.args.get("by", 1))
            return {"count": self.state.count}
        if message.kind == "get":
            return {"count": self.state.count}
        return self.not_handled()
