"""The host's context-event log: ordered by a cursor, queryable, followable.

Events are kept in memory up to ``capacity`` (oldest dropped first); each has a
cursor one higher than the last. Readers ask for events after a cursor and can
wait for new ones.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from paglets.core.events import ContextEvent, EventKind

if TYPE_CHECKING:
    from collections.abc import Iterable


class EventLog:
    """See the module docstring."""

    def __init__(self, host: str, capacity: int = 10_000) -> None:
        self.host = host
        self._events: deque[ContextEvent] = deque(maxlen=capacity)
        self._cursor = itertools.count(1)
        self._changed = asyncio.Event()
        self._last = 0

    def __repr__(self) -> str:
        return f"<EventLog {self.host} last={self._last} kept={len(self._events)}>"

    @property
    def last_cursor(self) -> int:
        """The cursor of the newest event, 0 when there is none."""
        return self._last

    def append(
        self,
        kind: EventKind,
        agent_id: str | None = None,
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> ContextEvent:
        """Log an event; wakes waiting readers."""
        event = ContextEvent(
            next(self._cursor), time.time(), kind, self.host, agent_id, detail, data or {}
        )
        self._events.append(event)
        self._last = event.cursor
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return event

    def query(
        self,
        since: int = 0,
        limit: int = 100,
        *,
        agent_id: str | None = None,
        kinds: Iterable[EventKind] | None = None,
    ) -> list[ContextEvent]:
        """Events with a cursor above ``since``, oldest first, at most ``limit``."""
        wanted = set(kinds) if kinds is not None else None
        out: list[ContextEvent] = []
        for event in self._events:
            if event.cursor <= since:
                continue
            if agent_id is not None and event.agent_id != agent_id:
                continue
            if wanted is not None and event.kind not in wanted:
                continue
            out.append(event)
            if len(out) >= limit:
                break
        return out

    async def wait_after(self, since: int, timeout: float) -> bool:
        """Wait until an event with a cursor above ``since`` exists; false on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._last <= since:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True
