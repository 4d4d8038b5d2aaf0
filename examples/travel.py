"""A traveler: moves between hosts, follows an itinerary, carries files and a payload.

It records every lifecycle hook it sees in its state, so tests and the docs can
show exactly what ran where. Messages:

- ``go {"to"}``: dispatch itself from inside a handler;
- ``tour {"hosts": [...]}``: follow an itinerary from ``run()``, noting each host;
- ``clone {"to"}``: clone itself, returns the copy's id;
- ``write {"name", "text"}``: write ``text`` to the file ``name`` in its work directory;
- ``carry {"name", "mode"}``: register the file ``name`` of its work directory to
  travel with it (``mode`` ``copy`` or ``move``);
- ``files``: the registered files and their contents;
- ``payload {"size"}`` / ``digest``: hold a large ``bytes`` field / its sha256;
- ``nap {"seconds"}`` / ``save``: deactivate itself (waking after ``seconds``, if
  given) / write a checkpoint;
- ``log``, ``where``: what it saw, and where it is.

It touches no file but its own: ``write`` and ``carry`` take a name relative to
``self.context.work_dir`` and refuse an absolute path, a ``..`` and a symlink
that leads out of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paglets import Itinerary, ItineraryStop, LifecycleEvent, Message, Paglet, PagletState
from paglets.persistence.paths import under

if TYPE_CHECKING:
    from pathlib import Path


@dataclass
class TravelerState(PagletState):
    log: list[str] = field(default_factory=list)
    itinerary: Itinerary = field(default_factory=Itinerary)
    seen: list[str] = field(default_factory=list)
    payload: bytes = b""
    count: int = 0


class Traveler(Paglet[TravelerState]):
    """See the module docstring."""

    State = TravelerState

    def own_file(self, name: str) -> Path:
        """The file ``name`` of this paglet's work directory, proven to stay inside it.

        Raises:
            RequestError: ``name`` is absolute, holds ``..`` or leads out through a symlink.
        """
        return under(self.context.work_dir, name)

    def _note(self, what: str, event: LifecycleEvent) -> None:
        self.state.log.append(f"{what}@{event.host_name}")

    def on_creation(self, event: LifecycleEvent) -> None:
        self._note("creation", event)

    def on_dispatching(self, event: LifecycleEvent) -> None:
        self._note(f"dispatching->{event.target}", event)

    def on_retracting(self, event: LifecycleEvent) -> None:
        self._note(f"retracting->{event.target}", event)

    def on_arrival(self, event: LifecycleEvent) -> None:
        self._note(f"arrival<-{event.origin}#{event.hops}", event)
        stop = self.state.itinerary.current
        if stop is not None and stop.host == self.context.host_name:
            self.state.seen.append(f"{stop.task}:{self.context.host_name}")
            self.state.itinerary.advance()

    def on_cloning(self, event: LifecycleEvent) -> None:
        self._note("cloning", event)

    def on_clone(self, event: LifecycleEvent) -> None:
        self._note(f"clone<-{event.origin}", event)

    def on_cloned(self, event: LifecycleEvent) -> None:
        self._note(f"cloned:{event.clone_id}", event)

    def on_deactivating(self, event: LifecycleEvent) -> None:
        self._note("deactivating", event)

    def on_activation(self, event: LifecycleEvent) -> None:
        self._note("activation", event)

    async def run(self) -> None:
        stop = self.state.itinerary.current
        if stop is not None and stop.host != self.context.host_name:
            self.dispatch(stop.host)

    def handle_message(self, message: Message) -> Any:  # noqa: C901, PLR0911, PLR0912 - one branch per kind
        kind, args = message.kind, message.args
        if kind == "go":
            self.dispatch(str(args["to"]))
            return "leaving"
        if kind == "tour":
            stops = [ItineraryStop(host, task="visit") for host in args["hosts"]]
            self.state.itinerary = Itinerary(stops)
            self.dispatch(stops[0].host)
            return "touring"
        if kind == "clone":
            return self.clone(args.get("to")).agent_id
        if kind == "carry":
            path = self.own_file(str(args["name"]))
            return self.context.register_file(path, mode=str(args.get("mode", "copy")))
        if kind == "files":
            return {name: path.read_text() for name, path in self.context.files.items()}
        if kind == "payload":
            self.state.payload = bytes(range(256)) * (int(args["size"]) // 256)
            return len(self.state.payload)
        if kind == "digest":
            return hashlib.sha256(self.state.payload).hexdigest()
        if kind == "nap":
            self.deactivate(args.get("seconds"))
            return "napping"
        if kind == "save":
            self.checkpoint()
            return "saved"
        if kind == "increment":
            self.state.count += 1
            return self.state.count
        if kind == "log":
            return self.state.log
        if kind == "tour_log":
            return {"seen": self.state.seen, "done": self.state.itinerary.done}
        if kind == "where":
            return self.context.host_name
        if kind == "write":
            path = self.own_file(str(args["name"]))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(args["text"]))
            return path.name
        return self.not_handled()
