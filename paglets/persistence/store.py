"""The host's durable store: one SQLite database under the state directory.

It holds the transfer journal (what makes "exactly one live copy" survive a
SIGKILL), the records of inactive paglets, and the context-event log.

`Store` is synchronous and owns one connection, used from the thread that
opened it. `AsyncStore` runs a `Store` on one dedicated worker thread and offers
the same methods as coroutines, so that the host's event loop never waits on
the disk.

Durability: the database runs in WAL mode. With ``sync=True`` (the default) a
method that returns has its change flushed to disk (``synchronous=FULL``): it
survives a SIGKILL of the host and a power cut. With ``sync=False``
(``synchronous=NORMAL``) it survives a SIGKILL of the host, but the last changes
may be lost on a power cut.

Damage never takes the host down. A database file that SQLite cannot read is
moved into ``quarantine/`` and a fresh one is started (`Store.recovered_from`
says where it went). A row that cannot be decoded (broken JSON, an unknown enum
value) is moved into the ``quarantined_rows`` table with a logged warning, and
the call goes on without it.

Everything is importable from here; the sync `Store` lives in
`paglets.persistence.database`, the row types in `paglets.persistence.records`.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar

from paglets.core.errors import StorageError
from paglets.persistence.database import Store
from paglets.persistence.records import (
    FINISHED_PHASES,
    SCHEMA_VERSION,
    SOURCE_PHASES,
    TARGET_PHASES,
    PagletRecord,
    QuarantinedRow,
    TransferPhase,
    TransferRecord,
    TransferRole,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path
    from types import TracebackType

    from paglets.core.events import ContextEvent, EventKind

__all__ = [
    "FINISHED_PHASES",
    "SCHEMA_VERSION",
    "SOURCE_PHASES",
    "TARGET_PHASES",
    "AsyncStore",
    "PagletRecord",
    "QuarantinedRow",
    "Store",
    "StoreOpening",
    "TransferPhase",
    "TransferRecord",
    "TransferRole",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreOpening:
    """A store being opened (or created) on its worker thread, from now on.

    ``paglets-host`` starts opening its journal before it imports the host's
    modules: making a new database waits on the disk (its schema, its first
    flushes) for about 10 ms, which then passes beside those imports instead of
    between them and ready. Needs no event loop; `result` is awaited on one.
    """

    def __init__(self, db_path: Path, *, sync: bool = True) -> None:
        self.path = db_path
        self.sync = sync
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paglets-store")
        self._opened = self._executor.submit(Store, db_path, sync=sync)

    def __repr__(self) -> str:
        return f"<StoreOpening {self.path}>"

    async def result(self) -> AsyncStore:
        """The store, once open (the `Store` errors if it could not be)."""
        try:
            store = await asyncio.wrap_future(self._opened)
        except BaseException:
            await asyncio.to_thread(self._executor.shutdown)
            raise
        return AsyncStore(store, self._executor)


class AsyncStore:
    """A `Store` whose every call runs on one dedicated worker thread.

    Open with ``await AsyncStore.open(path)``; the methods are those of `Store`,
    as coroutines, run one at a time in the order they were called.
    """

    def __init__(self, store: Store, executor: ThreadPoolExecutor) -> None:
        # Use `open`: the store must have been created on ``executor``'s thread.
        self._store = store
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(cls, db_path: Path, *, sync: bool = True) -> AsyncStore:
        """Open (or create) the database on a new worker thread."""
        return await StoreOpening(db_path, sync=sync).result()

    def __repr__(self) -> str:
        return f"<AsyncStore {self.path}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._store.path

    @property
    def recovered_from(self) -> Path | None:
        """Where a damaged database file was moved on opening, if it was."""
        return self._store.recovered_from

    async def close(self) -> None:
        """Close the database and stop the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._store.close)
        finally:
            await asyncio.to_thread(self._executor.shutdown)

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise StorageError(f"the store {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def run(self, fn: Callable[[Store], _T]) -> _T:
        """``fn(store)`` on the store's thread: several steps (and file work) in one trip."""
        return await self._call(fn, self._store)

    async def quarantined(self) -> list[QuarantinedRow]:
        """See `Store.quarantined`."""
        return await self._call(self._store.quarantined)

    async def begin_source(self, record: TransferRecord) -> None:
        """See `Store.begin_source`."""
        await self._call(self._store.begin_source, record)

    async def set_phase(
        self,
        transfer_id: str,
        role: TransferRole,
        phase: TransferPhase,
        detail: dict[str, Any] | None = None,
        *,
        durable: bool = True,
    ) -> TransferRecord:
        """See `Store.set_phase`."""
        return await self._call(
            self._store.set_phase, transfer_id, role, phase, detail, durable=durable
        )

    async def get_transfer(self, transfer_id: str, role: TransferRole) -> TransferRecord | None:
        """See `Store.get_transfer`."""
        return await self._call(self._store.get_transfer, transfer_id, role)

    async def transfers(
        self, role: TransferRole | None = None, phases: Iterable[TransferPhase] | None = None
    ) -> list[TransferRecord]:
        """See `Store.transfers`."""
        return await self._call(
            self._store.transfers, role, None if phases is None else list(phases)
        )

    async def commit_target(
        self, record: TransferRecord, before: Callable[[], None] | None = None
    ) -> TransferRecord:
        """See `Store.commit_target`; ``before`` runs on the store's thread."""
        return await self._call(self._store.commit_target, record, before)

    async def abort_target(
        self, transfer_id: str, agent_id: str, *, peer: str = ""
    ) -> TransferPhase:
        """See `Store.abort_target`."""
        return await self._call(self._store.abort_target, transfer_id, agent_id, peer=peer)

    async def forget_transfer(self, transfer_id: str, role: TransferRole) -> None:
        """See `Store.forget_transfer`."""
        await self._call(self._store.forget_transfer, transfer_id, role)

    async def prune_transfers(
        self, older_than: float, phases: Iterable[TransferPhase] = FINISHED_PHASES
    ) -> int:
        """See `Store.prune_transfers`."""
        return await self._call(self._store.prune_transfers, older_than, list(phases))

    async def put_paglet(self, record: PagletRecord) -> bool:
        """See `Store.put_paglet`."""
        return await self._call(self._store.put_paglet, record)

    async def get_paglet(self, agent_id: str) -> PagletRecord | None:
        """See `Store.get_paglet`."""
        return await self._call(self._store.get_paglet, agent_id)

    async def delete_paglet(self, agent_id: str) -> None:
        """See `Store.delete_paglet`."""
        await self._call(self._store.delete_paglet, agent_id)

    async def paglets(self, status: str | None = None) -> list[PagletRecord]:
        """See `Store.paglets`."""
        return await self._call(self._store.paglets, status)

    async def count_paglets(self, status: str | None = None) -> int:
        """See `Store.count_paglets`."""
        return await self._call(self._store.count_paglets, status)

    async def append_event(
        self,
        time: float,
        kind: EventKind,
        host: str,
        *,
        agent_id: str | None = None,
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> int:
        """See `Store.append_event`."""
        return await self._call(
            self._store.append_event, time, kind, host, agent_id=agent_id, detail=detail, data=data
        )

    async def append_events(self, events: Sequence[ContextEvent]) -> None:
        """See `Store.append_events`."""
        await self._call(self._store.append_events, list(events))

    async def events(
        self,
        since: int = 0,
        limit: int = 100,
        agent_id: str | None = None,
        kinds: Iterable[EventKind] | None = None,
    ) -> list[ContextEvent]:
        """See `Store.events`."""
        wanted = None if kinds is None else list(kinds)
        return await self._call(self._store.events, since, limit, agent_id=agent_id, kinds=wanted)

    async def last_event_cursor(self) -> int:
        """See `Store.last_event_cursor`."""
        return await self._call(self._store.last_event_cursor)

    async def trim_events(self, keep: int) -> int:
        """See `Store.trim_events`."""
        return await self._call(self._store.trim_events, keep)
