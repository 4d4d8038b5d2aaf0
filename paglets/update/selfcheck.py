"""``python -m paglets.update.selfcheck``: can this code run a host and a paglet?

The updater runs it with the new code, in a process of its own, before it
restarts the host on that code (`paglets.update.steps.check_new_code`). It
starts an in-process `Host` on a temporary state directory and a free
loopback port, creates a `Probe` paglet, sends it a message and checks the
reply; then it stops everything. It prints ``ok <version>`` and exits 0, or
exits non-zero with the error on stderr.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paglets import AsyncHostClient, Host, Message, Paglet, PagletState
from paglets._version import __version__

PROBE = "paglets.update.selfcheck:Probe"


@dataclass
class ProbeState(PagletState):
    """What the probe counts."""

    pings: int = 0


class Probe(Paglet[ProbeState]):
    """Answers ``ping`` with how many pings it had."""

    State = ProbeState

    def handle_message(self, message: Message) -> Any:
        if message.kind == "ping":
            self.state.pings += 1
            return self.state.pings
        return self.not_handled()


async def check() -> None:
    """Start a host, create a probe, ping it; raise on any failure."""
    with tempfile.TemporaryDirectory(prefix="paglets-selfcheck-") as tmp:
        host = Host(name="selfcheck", port=0, state_dir=Path(tmp), warm_children=0)
        async with host, AsyncHostClient(host.url, api_key="") as client:
            probe = await client.create(PROBE, ProbeState())
            reply = await probe.send("ping", timeout=30)
            if reply != 1:
                raise RuntimeError(f"the probe paglet answered {reply!r}, not 1")
            await probe.dispose()


def main() -> None:
    """Run the check; exit 0 when it passed."""
    asyncio.run(check())
    sys.stdout.write(f"ok {__version__}\n")


if __name__ == "__main__":
    main()
