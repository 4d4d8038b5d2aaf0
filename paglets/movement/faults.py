"""Crash points: where the host can be made to die on purpose, to test recovery.

Set ``PAGLETS_CRASH_AT`` to a point's name (e.g. ``source.after_commit``) in a
host's environment and the host SIGKILLs itself when a transfer reaches it.
Never set in production; the movement tests use it to kill a host at each phase.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "PAGLETS_CRASH_AT"
POINTS = frozenset(
    {
        "source.while_writing",
        "source.before_send",
        "source.mid_stream",
        "source.after_commit",
        "target.mid_stream",
        "target.after_commit",
        "keeper.after_keep",
    }
)


def crash_point(name: str) -> None:
    """Die at once (SIGKILL) if ``PAGLETS_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
