"""The serial mailbox of one paglet: control first, then by priority, FIFO within one."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from paglets.runtime.ipc import Deliver, GetState, Move, Persist, Stop

MailItem = Deliver | GetState | Move | Persist | Stop


class Mailbox:
    """A priority queue consumed by one task.

    ``GetState``, ``Move``, a checkpoint ``Persist`` and ``Stop`` go ahead of
    every message, so a state snapshot or a disposal happens right after the
    message in hand; a deactivating ``Persist`` waits until every queued
    message is handled. Messages are ordered by
    descending priority and arrival order within a priority.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, MailItem]] = []
        self._seq = itertools.count()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, item: MailItem) -> None:
        if isinstance(item, Deliver):
            key = (1, -item.priority)
        elif isinstance(item, Persist) and item.deactivate:
            key = (2, 0)  # after every message already queued: they change the state
        else:
            key = (0, 0)
        heapq.heappush(self._heap, (*key, next(self._seq), item))
        self._ready.set()

    def drain(self) -> list[MailItem]:
        """Everything waiting, in order, leaving the mailbox empty."""
        items = [heapq.heappop(self._heap)[3] for _ in range(len(self._heap))]
        self._ready.clear()
        return items

    def close(self) -> None:
        """Make a waiting (and every later) `get` on an empty mailbox return ``None``."""
        self._closed = True
        self._ready.set()

    async def get(self) -> MailItem | None:
        while not self._heap:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return heapq.heappop(self._heap)[3]
