"""A paglet that goes where there is room: ``self.context.targets`` (docs/builtin-services.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paglets import Message, Paglet, PagletState


@dataclass
class PlacerState(PagletState):
    needs_tag: str = ""
    min_free_memory: int = 0


class Placer(Paglet[PlacerState]):
    """Answers ``pick`` with the best host for its needs, from the mesh's snapshot."""

    State = PlacerState

    def handle_message(self, message: Message) -> Any:
        if message.kind != "pick":
            return self.not_handled()
        tags = [self.state.needs_tag] if self.state.needs_tag else []
        found = self.context.targets(
            max_load_per_cpu=100.0,  # any load; a busy test machine still qualifies
            min_free_memory=self.state.min_free_memory,
            tags=tags,
            limit=1,
        )
        return found[0].name if found else None
