"""Small POSIX helpers for child processes."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
# Resolved once, at import (in the zygote): the symbols of the running
# program include libc's, so no library search (which may run ldconfig) is needed.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits.

    If ``expected_parent`` is given and the parent is already another process
    (it died before the request), exit at once. A no-op outside Linux; there
    the child notices the closed host channel instead.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)
