"""A paglet for the tests of bounds and bad input (``tests/test_security_input.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paglets import Message, Paglet, PagletState

HOLD_LIMIT = 120.0  # a held handler gives up after this, so a failed test cannot hang a child


@dataclass
class HolderState(PagletState):
    handled: int = 0


class Holder(Paglet[HolderState]):
    """Holds its mailbox on a gate, replies what strict JSON cannot carry, counts messages.

    Its handler is a plain ``def``: while it holds, the child reads nothing from
    its host, as with any handler busy computing.
    """

    State = HolderState

    def handle_message(self, message: Message) -> Any:
        kind, args = message.kind, message.args
        if kind == "hold":  # until the file named by "gate" exists
            gate = Path(args["gate"])
            deadline = time.monotonic() + HOLD_LIMIT
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            return "released"
        if kind == "count":
            self.state.handled += 1
            return self.state.handled
        if kind == "nan":
            return {"value": float("nan")}
        if kind == "fail":
            raise ValueError(args.get("text", "failed on purpose"))
        return self.not_handled()
