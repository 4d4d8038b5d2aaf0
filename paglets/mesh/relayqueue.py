"""The hub's durable queue of relayed requests, one SQLite file in the host's directory.

A request for a relayed host is written here (committed, fsynced) before the
hub hands it to the host, and deleted only when the host's answer arrives. So
an accepted request survives a SIGKILL and a restart of the hub: the host gets
it on its next session, and its ``seq`` keeps growing across restarts. Calls
run in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from paglets.core.errors import StorageError
from paglets.wire import strict_json
from paglets.wire.relay import Request

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["QueueDepth", "RelayQueue"]

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS relay_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    id TEXT NOT NULL,
    item TEXT NOT NULL,
    size INTEGER NOT NULL,
    queued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS relay_items_host ON relay_items (host, seq);
"""


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """What one host's queue holds: items, their bytes, and when the oldest came."""

    items: int
    bytes: int
    oldest: float | None


class RelayQueue:
    """The durable queue; see the module docstring.

    Args:
        path: the SQLite file.
        sync: fsync each accepted item (``--transfer-fsync``); else a crash of the
            process, not of the machine, loses nothing.
    """

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self._path = path
        self._sync = sync
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"<RelayQueue {self._path}>"

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._sync else 'NORMAL'}")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def _run(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return work(self._open())
            except sqlite3.Error as exc:
                raise StorageError(f"relay queue {self._path}: cannot {what}: {exc}") from None

    async def _call(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the database: in a thread when each commit waits for the
        disk (``sync``); else right here, a commit to the WAL costing less than the
        hop to a thread and back (it still survives a SIGKILL of the hub)."""
        if self._sync:
            return await asyncio.to_thread(self._run, what, work)
        return self._run(what, work)

    async def put(self, host: str, item: Request) -> Request:
        """Accept ``item`` for ``host`` durably; returns it with its ``seq``."""

        def work(db: sqlite3.Connection) -> Request:
            text = item.with_seq(1).encode()
            cursor = db.execute(
                "INSERT INTO relay_items (host, id, item, size, queued_at) VALUES (?, ?, ?, ?, ?)",
                (host, item.id, text, len(item.body), time.time()),
            )
            seq = cursor.lastrowid
            assert seq is not None  # noqa: S101 - an INSERT sets it
            return item.with_seq(seq)

        return await self._call("accept an item", work)

    async def pending(self, host: str, limit: int) -> list[Request]:
        """The oldest ``limit`` items of ``host`` not yet answered, by ``seq``."""

        def work(db: sqlite3.Connection) -> list[Request]:
            rows = db.execute(
                "SELECT seq, item FROM relay_items WHERE host = ? ORDER BY seq LIMIT ?",
                (host, limit),
            ).fetchall()
            return [
                Request.parse(strict_json.loads(text, "relay item")).with_seq(seq)
                for seq, text in rows
            ]

        return await self._call("read items", work)

    async def drop(self, host: str, seq: int) -> bool:
        """Forget the item ``seq`` of ``host`` (it was answered); whether it was there."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM relay_items WHERE host = ? AND seq = ?", (host, seq))
            return cursor.rowcount > 0

        return await self._call("drop an item", work)

    async def depth(self, host: str) -> QueueDepth:
        """How much ``host``'s queue holds."""

        def work(db: sqlite3.Connection) -> QueueDepth:
            count, size, oldest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(queued_at) FROM relay_items "
                "WHERE host = ?",
                (host,),
            ).fetchone()
            return QueueDepth(int(count), int(size), oldest)

        return await asyncio.to_thread(self._run, "count items", work)

    async def hosts(self) -> list[str]:
        """The hosts that have items queued."""

        def work(db: sqlite3.Connection) -> list[str]:
            return [row[0] for row in db.execute("SELECT DISTINCT host FROM relay_items")]

        return await asyncio.to_thread(self._run, "list hosts", work)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
