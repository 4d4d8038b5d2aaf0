"""`ModuleProbe`: a paglet that says which modules its process has loaded, for the spawner tests."""

from __future__ import annotations

import sys
from typing import Any

from paglets import Message, Paglet, PagletState


class ModuleProbe(Paglet[PagletState]):
    """Answers ``loaded`` with ``{"modules": [...]}``: which of ``args["names"]`` are loaded."""

    State = PagletState

    def handle_message(self, message: Message) -> Any:
        if message.kind != "loaded":
            return self.not_handled()
        return {"modules": [name for name in message.args["names"] if name in sys.modules]}
