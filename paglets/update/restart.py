"""Serving a host that follows a git branch, and re-executing it on its new code.

`serve` runs the host and its `Updater` side by side. When the process was
started by an update (a ``restarting`` marker), the host must be ready within
the marker's ``ready_timeout``; if it fails to start or is late, the updater
puts the checkout back on the old commit and the process re-executes on it.

`reexec` replaces the process with the same command line (same interpreter,
options, port and state directory): the host has stopped in order before, so
its paglets were written to disk and its next process restores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from paglets.host import Host
    from paglets.update.updater import Updater

log = logging.getLogger(__name__)


async def serve(host: Host, updater: Updater, on_ready: Callable[[Host], None]) -> None:
    """Serve ``host`` until it stops, with ``updater`` running once it is ready."""
    await updater.prepare()
    ready = asyncio.Event()

    def announce(started: Host) -> None:
        on_ready(started)
        ready.set()

    serving = asyncio.create_task(host.serve_forever(on_ready=announce), name="serve")
    waiting = asyncio.create_task(ready.wait(), name="ready")
    timeout = None if updater.marker is None else updater.marker.ready_timeout
    try:
        await asyncio.wait({serving, waiting}, timeout=timeout, return_when="FIRST_COMPLETED")
    finally:
        waiting.cancel()
    if not ready.is_set():
        if serving.done() and serving.exception() is None:
            return  # stopped (a signal) while starting: no verdict on the new code
        if serving.done():
            reason = f"failed to start: {serving.exception()}"
        else:
            reason = f"not ready within {timeout:g} s"
            serving.cancel()  # a start that hangs: its own handler closes what it opened
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await serving
        if updater.marker is None:
            await serving  # no update in flight: the start's own error, as without one
        await updater.roll_back_restart(reason)
        return
    await updater.ready()
    updating = asyncio.create_task(updater.run(), name="auto-update")
    try:
        await serving
    finally:
        updating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await updating


def command_line(configured_port: int, url: str | None) -> list[str]:
    """This process's command line, with ``--port`` fixed to the bound one if it was 0.

    ``url`` is the host's URL, ``None`` if it never bound (a start that hung).
    """
    argv = [sys.executable, *sys.orig_argv[1:]]
    port = urlsplit(url).port if url else None
    if configured_port == 0 and port:
        argv += ["--port", str(port)]
    return argv


def reexec(argv: list[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with ``argv`` (flushing logs and output first)."""
    log.info("re-executing: %s", " ".join(argv))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, dict(env))  # noqa: S606 - our own command line, no shell
