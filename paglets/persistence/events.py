"""The host's context-event log: ordered by a cursor, queryable, followable.

Events are kept in memory up to ``capacity`` (oldest dropped first); each has a
cursor one higher than the last. Readers ask for events after a cursor and can
wait for new ones.

With a store attached (`EventLog.open`, or `EventLog.attach`) the log is also
durable: cursors continue after the last one the store ever gave, across
restarts and trims, and `EventLog.query_async` serves cursors older than the
memory window from the store. `EventLog.append` stays synchronous and cheap: it
queues the event, and one background task writes the queue to the store in
order, in batches (one transaction each, on the store's worker thread).

Loss window: an event is durable once the batch holding it is written, which is
usually within milliseconds. Events appended but not yet written when the host
process is killed (SIGKILL, power cut) are lost; so are events of a batch that
the store refuses (for instance when the disk is full), which is logged as an
error. ``await log.flush()`` waits until everything appended so far is written;
``await log.close()`` flushes and detaches the store (the caller owns the store
and closes it after the log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from paglets.core.events import ContextEvent, EventKind

if TYPE_CHECKING:
    from collections.abc import Iterable

    from paglets.persistence.store import AsyncStore

log = logging.getLogger(__name__)


class EventLog:
    """See the module docstring.

    Args:
        host: the name of the host that logs the events.
        capacity: how many of the newest events are kept in memory.

    Attributes:
        dropped: how many events the store refused (each refusal is logged).
    """

    def __init__(self, host: str, capacity: int = 10_000) -> None:
        self.host = host
        self._events: deque[ContextEvent] = deque(maxlen=capacity)
        self._cursor = itertools.count(1)
        self._changed = asyncio.Event()
        self._last = 0
        self._store: AsyncStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[ContextEvent] = []
        self._flusher: asyncio.Task[None] | None = None
        self._keep = 0
        self._written_since_trim = 0
        self.dropped = 0

    @classmethod
    async def open(
        cls, host: str, capacity: int = 10_000, *, store: AsyncStore, keep: int = 1_000_000
    ) -> EventLog:
        """A log whose events also go to ``store``; see `attach`."""
        events = cls(host, capacity)
        await events.attach(store, keep=keep)
        return events

    def __repr__(self) -> str:
        return f"<EventLog {self.host} last={self._last} kept={len(self._events)}>"

    @property
    def last_cursor(self) -> int:
        """The cursor of the newest event, 0 when there is none."""
        return self._last

    async def attach(self, store: AsyncStore, *, keep: int = 1_000_000) -> None:
        """Write events to ``store`` from now on, continuing its cursors.

        Call it once, from the event loop, before readers see the log: events
        appended before it are renumbered to follow the store's last cursor, and
        written to it.

        Args:
            store: the open store; it must outlive the log (close the log first).
            keep: how many of the newest events the store keeps; older ones are
                trimmed as new ones are written.
        """
        if self._store is not None:
            raise RuntimeError(f"{self!r} already writes to {self._store!r}")
        start = await store.last_event_cursor()
        self._store, self._loop, self._keep = store, asyncio.get_running_loop(), keep
        if start:
            renumbered = [
                dataclasses.replace(e, cursor=start + i)
                for i, e in enumerate(self._events, start=1)
            ]
            self._events.clear()
            self._events.extend(renumbered)
            self._cursor = itertools.count(start + len(renumbered) + 1)
            self._last = start + len(renumbered)
        self._pending = list(self._events)
        self._kick()

    def append(
        self,
        kind: EventKind,
        agent_id: str | None = None,
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> ContextEvent:
        """Log an event; wakes waiting readers. With a store, the write follows soon."""
        event = ContextEvent(
            next(self._cursor), time.time(), kind, self.host, agent_id, detail, data or {}
        )
        self._events.append(event)
        self._last = event.cursor
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._store is not None:
            self._pending.append(event)
            self._kick()
        return event

    def query(
        self,
        since: int = 0,
        limit: int = 100,
        *,
        agent_id: str | None = None,
        kinds: Iterable[EventKind] | None = None,
    ) -> list[ContextEvent]:
        """Events in memory with a cursor above ``since``, oldest first, at most ``limit``."""
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

    async def query_async(
        self,
        since: int = 0,
        limit: int = 100,
        *,
        agent_id: str | None = None,
        kinds: Iterable[EventKind] | None = None,
    ) -> list[ContextEvent]:
        """Like `query`, and reads the store for cursors older than the memory window."""
        wanted = None if kinds is None else list(kinds)
        oldest = self._events[0].cursor if self._events else self._last + 1
        if self._store is None or since + 1 >= oldest:
            return self.query(since, limit, agent_id=agent_id, kinds=wanted)
        await self.flush()
        return await self._store.events(since, limit, agent_id=agent_id, kinds=wanted)

    async def wait_after(self, since: int, timeout: float) -> bool:
        """Wait until an event with a cursor above ``since`` exists; false on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._last <= since:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races with the event, and the waiter never ends
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return False
        return True

    async def flush(self) -> None:
        """Wait until every event appended so far is written to the store (if any)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        """Flush, then stop writing to the store; the store itself stays open."""
        await self.flush()
        self._store = None

    def _kick(self) -> None:
        if self._pending and self._loop and (self._flusher is None or self._flusher.done()):
            self._flusher = self._loop.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        store = self._store
        while self._pending and store is not None:
            batch, self._pending = self._pending, []
            if await self._write(store, batch):
                self._written_since_trim += len(batch)
                if self._written_since_trim >= max(self._keep // 10, 1):
                    self._written_since_trim = 0
                    await self._trim(store)

    async def _write(self, store: AsyncStore, batch: list[ContextEvent]) -> bool:
        try:
            await store.append_events(batch)
        except Exception:
            self.dropped += len(batch)
            log.exception(
                "could not write events %d..%d of %s to %s; they stay in memory only",
                batch[0].cursor,
                batch[-1].cursor,
                self.host,
                store.path,
            )
            return False
        return True

    async def _trim(self, store: AsyncStore) -> None:
        try:
            await store.trim_events(self._keep)
        except Exception:
            log.exception("could not trim the events in %s", store.path)
