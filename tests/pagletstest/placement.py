"""A paglet that picks hosts by their resources (``tests/test_builtin_info.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paglets import Message, Paglet, PagletState
from paglets.wire.resources import HostResources
from paglets.wire.targets import Target


@dataclass
class ChooserState(PagletState):
    pass


class Chooser(Paglet[ChooserState]):
    """``choose`` with the constraints of ``self.context.targets`` answers what it got."""

    State = ChooserState

    def handle_message(self, message: Message) -> Any:
        if message.kind != "choose":
            return self.not_handled()
        found = self.context.targets(**message.args)
        assert all(type(t) is Target and type(t.resources) is HostResources for t in found)
        return [{"rank": t.rank, "name": t.name, "cpu_count": t.resources.cpu_count} for t in found]
