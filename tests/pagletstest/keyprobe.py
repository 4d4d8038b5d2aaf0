"""`KeyThief`: a paglet that tries to get its host's API key, for the security tests.

It reads what it is told to (``/proc/<host pid>/environ`` above all), reports
who it runs as, and asks its host to reach URLs it names (messages, monitors,
retracts): each answers what it got, or the name and text of the error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from paglets import Message, Paglet, PagletError, PagletState


class KeyThief(Paglet[PagletState]):
    """Answers ``whoami``, ``read``, ``send``, ``monitor`` and ``retract``."""

    State = PagletState

    def handle_message(self, message: Message) -> Any:
        kind, args = message.kind, message.args
        if kind == "whoami":
            return {"uid": os.getuid(), "gid": os.getgid()}
        if kind == "read":
            try:
                return {"data": Path(args["path"]).read_bytes().decode("latin-1")}
            except OSError as exc:
                return {"error": type(exc).__name__}
        ctx = self.context
        calls = {
            "send": lambda: ctx.proxy(args["agent_id"], args["host"]).send("echo", x=1),
            "monitor": lambda: ctx.monitor(args["agent_id"], args["host"]),
            "retract": lambda: ctx.retract(args["agent_id"], args["host"]),
        }
        if kind not in calls:
            return self.not_handled()
        try:
            return {"reply": calls[kind]()}
        except PagletError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
