"""Wake-up times of inactive paglets: one timer each on the host's event loop.

A paglet deactivated ``until`` a time (or for a ``duration``) is activated
then. A wake-up refused for lack of room (`HostFullError`: ``--max-paglets``,
``--max-child-memory``) is tried again, backing off from `WAKE_RETRY_FIRST`
to `WAKE_RETRY_MAX` seconds, until the paglet wakes or is activated or
disposed (which cancels its timer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from paglets.core.bounds import bounded
from paglets.core.errors import HostFullError, PagletError, RequestError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from paglets.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)

MAX_SLEEP = 10 * 366 * 86_400.0
"""The furthest a wake-up time may lie ahead: ten years."""
WAKE_RETRY_FIRST: Final = 1.0
"""Seconds before a wake-up refused for lack of room (``--max-paglets``) is tried again."""
WAKE_RETRY_MAX: Final = 60.0
"""The longest wait between such tries (each waits twice the one before)."""
_FAR_FUTURE = 1e11  # epoch seconds, beyond any wake-up time (year 5138)


def wake_time(until: object, now: float) -> float:
    """``until`` (epoch seconds) checked as a wake-up time: finite, not past `MAX_SLEEP`.

    Raises:
        RequestError: not a number, not finite, negative or too far ahead.
    """
    value = bounded(until, "'until' (epoch seconds)", 0.0, _FAR_FUTURE)
    if value > now + MAX_SLEEP:
        raise RequestError(
            f"'until' ({value:.0f}) is more than ten years ahead; give a nearer time"
        )
    return value


class WakeTimers:
    """Each inactive paglet's wake-up timer; ``spawn`` runs the wake-ups as tasks."""

    def __init__(
        self, supervisor: Supervisor, spawn: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        self._supervisor = supervisor
        self._spawn = spawn
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._timers)

    def schedule(self, agent_id: str, wake_at: float | None) -> None:
        """Wake ``agent_id`` at ``wake_at`` (epoch seconds); None: no wake-up time."""
        self.cancel(agent_id)
        if wake_at is None:
            return
        delay = max(0.0, wake_at - time.time())
        self._timers[agent_id] = asyncio.get_running_loop().call_later(delay, self._wake, agent_id)

    def _wake(self, agent_id: str, retry: float = WAKE_RETRY_FIRST) -> None:
        self._timers.pop(agent_id, None)
        self._spawn(self._wake_logged(agent_id, retry))

    async def _wake_logged(self, agent_id: str, retry: float) -> None:
        """Wake ``agent_id``; a host without room (`HostFullError`) tries again later.

        The retries back off from `WAKE_RETRY_FIRST` to `WAKE_RETRY_MAX` seconds and
        end when the paglet wakes, is activated or disposed (its timer is cancelled).
        """
        try:
            await self._supervisor.wake(agent_id)
        except HostFullError as exc:
            if self._closed or agent_id in self._timers:
                return  # the host stops, or the paglet got a new wake-up time meanwhile
            log.warning(
                "paglet %s cannot wake up yet: %s; trying again in %g s", agent_id, exc, retry
            )
            self._timers[agent_id] = asyncio.get_running_loop().call_later(
                retry, self._wake, agent_id, min(retry * 2, WAKE_RETRY_MAX)
            )
        except PagletError as exc:
            log.warning("paglet %s did not wake up: %s", agent_id, exc)

    def cancel(self, agent_id: str) -> None:
        """Drop ``agent_id``'s wake-up time, if it has one."""
        timer = self._timers.pop(agent_id, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        """Drop every wake-up time (the host is stopping): none is set or retried again."""
        self._closed = True
        for agent_id in list(self._timers):
            self.cancel(agent_id)
