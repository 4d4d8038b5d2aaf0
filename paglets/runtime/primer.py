"""A paglet module of the commonest shape, imported by a pooled child to prime its imports.

Never imported by the zygote, nor by any other module: a child waiting in the
host's warm pool imports it (`paglets.runtime.warmup.prime_child`) while the
zygote has no paglet module loaded yet, so that the pages the import of a
first paglet's module writes to (the import system's caches, the compile of a
state dataclass's methods, the typing caches a ``Paglet[State]`` fills) are
copied from the zygote's before that paglet arrives. In a forked child the
first import of ``examples.counter`` took about 3 ms that way and 1 ms after
this one. Nothing here runs a paglet: the class is made, never instantiated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paglets import LifecycleEvent, Message, Paglet, PagletState


@dataclass
class PrimerState(PagletState):
    """A state with the fields states commonly have."""

    count: int = 0
    seen: list[str] = field(default_factory=list)


class Primer(Paglet[PrimerState]):
    """A paglet class as a module defines one; never created."""

    State = PrimerState

    def on_creation(self, event: LifecycleEvent) -> None:
        self.state.seen.append(event.host_name)

    def handle_message(self, message: Message) -> Any:
        return message.args
