"""Crash and delay points: where the host can be made to die or wait on purpose, to test recovery.

Set ``PAGLETS_CRASH_AT`` to a point's name (e.g. ``source.after_commit``) in a
host's environment and the host SIGKILLs itself when a transfer reaches it.
Set ``PAGLETS_DELAY_AT`` to ``<point>=<seconds>`` (e.g. ``keeper.before_keep=2``)
and the host waits that long there, so that what races with that step (a
paglet's first checkpoint after its arrival, say) happens first.
Never set in production; the movement tests use them to kill or hold a host at each phase.
"""

from __future__ import annotations

import asyncio
import os
import signal

CRASH_ENV = "PAGLETS_CRASH_AT"
DELAY_ENV = "PAGLETS_DELAY_AT"
POINTS = frozenset(
    {
        "source.while_writing",
        "source.before_send",
        "source.mid_stream",
        "source.after_commit",
        "target.mid_stream",
        "target.after_commit",
        "keeper.before_keep",
        "keeper.after_keep",
    }
)


def crash_point(name: str) -> None:
    """Die at once (SIGKILL) if ``PAGLETS_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


async def delay_point(name: str) -> None:
    """Wait as long as ``PAGLETS_DELAY_AT`` says if it names this point (``name=seconds``)."""
    point, _, seconds = os.environ.get(DELAY_ENV, "").partition("=")
    if point == name:
        await asyncio.sleep(float(seconds))
