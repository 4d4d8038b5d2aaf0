"""A paglet that fails on request, inside its own process only.

For demos of crash isolation and timeouts: the host and every other paglet go on
whatever it does. It touches no file and no process but its own. Messages:

- ``echo``: its arguments, back;
- ``sleep {"seconds"}``: answers after ``seconds`` (at most 60), so a caller can time out;
- ``fail {"text"}``: raises ``ValueError(text)`` (the caller gets a ``HandlerError``);
- ``crash {"code"}``: ends its own process at once with exit code ``code`` (1 to 125),
  as a crash would; the caller gets a ``PagletCrashedError``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from paglets import Message, Paglet, PagletState

MAX_SLEEP = 60.0
"""The longest ``sleep`` it accepts, in seconds."""


class Fragile(Paglet[PagletState]):
    """See the module docstring."""

    State = PagletState

    async def handle_message(self, message: Message) -> Any:
        kind, args = message.kind, message.args
        if kind == "echo":
            return args
        if kind == "sleep":
            seconds = float(args["seconds"])
            if not 0 <= seconds <= MAX_SLEEP:  # also refuses NaN
                raise ValueError(f"sleep takes 0 to {MAX_SLEEP:g} seconds, not {seconds}")
            await asyncio.sleep(seconds)
            return "slept"
        if kind == "fail":
            raise ValueError(str(args.get("text", "failed as asked")))
        if kind == "crash":
            code = int(args.get("code", 1))
            if not 1 <= code <= 125:
                raise ValueError(f"crash takes an exit code from 1 to 125, not {code}")
            os._exit(code)
        return self.not_handled()
