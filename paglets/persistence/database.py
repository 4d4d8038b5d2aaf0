"""The synchronous `Store`: one SQLite connection, used from the thread that opened it.

See `paglets.persistence.store` for what the store holds and how durable it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Self, TypeVar

from paglets.core.errors import StorageError, TransferError
from paglets.core.events import ContextEvent, EventKind
from paglets.persistence import files
from paglets.persistence.records import (
    FINISHED_PHASES,
    SCHEMA,
    SCHEMA_VERSION,
    SOURCE_PHASES,
    TARGET_PHASES,
    PagletRecord,
    QuarantinedRow,
    TransferPhase,
    TransferRecord,
    TransferRole,
    dumps,
    event_from_row,
    paglet_from_row,
    transfer_from_row,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from pathlib import Path
    from types import TracebackType

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_PHASES = {TransferRole.SOURCE: SOURCE_PHASES, TransferRole.TARGET: TARGET_PHASES}


class _Corrupt(Exception):  # noqa: N818 - internal signal, never escapes
    """The database file is not a usable SQLite database."""


_KEYS = {"transfers": ("transfer_id", "role"), "paglets": ("agent_id",), "events": ("cursor",)}


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


class Store:
    """The host's SQLite database: the transfer journal, paglet records, events.

    Synchronous; use it from the thread that created it (`AsyncStore` does this
    for the event loop). What it holds and how durable it is: see
    `paglets.persistence.store`.

    Args:
        db_path: the database file; its directory is created if missing.
        sync: flush every change to disk before a method returns.

    Raises:
        StorageError: the file cannot be opened, or was written by a newer paglets.
    """

    def __init__(self, db_path: Path, *, sync: bool = True) -> None:
        self.path = db_path
        self.sync = sync
        self.recovered_from: Path | None = None
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise files.storage_error(db_path, exc, "create the directory of") from exc
        try:
            self._db = self._connect()
        except _Corrupt as exc:
            self.recovered_from = self._quarantine_file(str(exc))
            self._db = self._connect()

    def __repr__(self) -> str:
        return f"<Store {self.path}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._db.close()

    # -- opening -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        try:
            db.row_factory = sqlite3.Row
            self._check(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.sync else 'NORMAL'}")
            db.execute("PRAGMA foreign_keys=ON")
            self._migrate(db)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                if _is_corrupt(exc):
                    raise _Corrupt(f"SQLite cannot read it: {exc}") from exc
                raise self._error("open", exc) from exc
            raise
        return db

    def _check(self, db: sqlite3.Connection) -> None:
        result = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            raise _Corrupt(f"PRAGMA quick_check failed: {'; '.join(result[:5])}")

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = None
            if db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone():
                found = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if found is None:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            self._check_version(found)
            if found is not None and found < SCHEMA_VERSION:
                _upgrade(db, found)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def _check_version(self, found: int | None) -> None:
        # Version 1 is the first; a later version adds its migration step to _UPGRADES.
        if found is not None and found > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} was written by a newer paglets (schema version {found}, "
                f"this one knows up to {SCHEMA_VERSION}); upgrade paglets on this "
                "machine, or point PAGLETS_HOME at another directory"
            )

    def _quarantine_file(self, reason: str) -> Path:
        moved = files.quarantine(self.path, self.path.parent, reason)
        for suffix in ("-wal", "-shm", "-journal"):
            sidecar = self.path.with_name(self.path.name + suffix)
            if sidecar.exists():
                files.quarantine(sidecar, self.path.parent, reason)
        log.error(
            "%s is not a usable database (%s); moved it to %s and started a fresh one",
            self.path,
            reason,
            moved,
        )
        return moved

    def _error(self, action: str, exc: sqlite3.Error) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            return StorageError(
                f"could not {action} in {self.path}: the disk is full; free some space "
                "there (or point PAGLETS_HOME at a larger disk) and retry"
            )
        return StorageError(f"could not {action} in {self.path}: {exc}")

    @contextlib.contextmanager
    def _write(self, action: str, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested uses join the outer one.

        With ``durable=False`` a store with ``sync=True`` commits it without
        flushing it to disk (``synchronous=NORMAL`` for this one commit): a
        SIGKILL of the host never loses it, a power cut may, until the next
        durable commit flushes the write-ahead log, this one with it (the log
        is written in order). Only for a change the journal protocol can do
        without after a power cut.
        """
        if self._db.in_transaction:
            yield self._db
            return
        relaxed = self.sync and not durable
        try:
            if relaxed:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    _rollback(self._db)
                    raise
                self._db.execute("COMMIT")
            finally:
                if relaxed:
                    self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise self._error(action, exc) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error("read", exc) from exc

    # -- damaged rows --------------------------------------------------------

    def _decode(
        self, table: str, rows: Iterable[sqlite3.Row], decode: Callable[[sqlite3.Row], _T]
    ) -> list[_T]:
        out = []
        for row in rows:
            try:
                out.append(decode(row))
            except (ValueError, TypeError, LookupError, OverflowError) as exc:
                self._quarantine_row(table, row, f"{type(exc).__name__}: {exc}")
        return out

    def _quarantine_row(self, table: str, row: sqlite3.Row, reason: str) -> None:
        keys = _KEYS[table]
        key = "/".join(str(row[k]) for k in keys)
        raw = json.dumps(dict(zip(row.keys(), row, strict=True)), default=repr)
        where = " AND ".join(f"{k} = ?" for k in keys)
        with self._write("quarantine a row") as db:
            db.execute(
                "INSERT INTO quarantined_rows (table_name, key, raw, reason, time) "
                "VALUES (?, ?, ?, ?, ?)",
                (table, key, raw, reason, time.time()),
            )
            db.execute(f"DELETE FROM {table} WHERE {where}", [row[k] for k in keys])  # noqa: S608
        log.warning("%s: moved row %s of %s to quarantined_rows: %s", self.path, key, table, reason)

    def quarantined(self) -> list[QuarantinedRow]:
        """The rows moved aside because they could not be decoded, oldest first."""
        return [
            QuarantinedRow(
                int(r["id"]),
                str(r["table_name"]),
                str(r["key"]),
                str(r["raw"]),
                str(r["reason"]),
                float(r["time"]),
            )
            for r in self._read("SELECT * FROM quarantined_rows ORDER BY id")
        ]

    # -- transfers -----------------------------------------------------------

    def _insert_transfer(self, db: sqlite3.Connection, record: TransferRecord) -> None:
        if record.phase not in _PHASES[record.role]:
            raise ValueError(f"{record.phase} is not a phase of a {record.role} row")
        db.execute(
            "INSERT INTO transfers (transfer_id, role, agent_id, kind, phase, peer, envelope, "
            "detail, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.transfer_id,
                record.role.value,
                record.agent_id,
                record.kind,
                record.phase.value,
                record.peer,
                record.envelope,
                dumps(record.detail),
                record.created,
                record.updated,
            ),
        )

    def _select_transfer(
        self, transfer_id: str, role: TransferRole
    ) -> tuple[bool, TransferRecord | None]:
        """Whether a row was there, and the row (None if it was damaged and quarantined)."""
        rows = self._read(
            "SELECT * FROM transfers WHERE transfer_id = ? AND role = ?",
            (transfer_id, role.value),
        )
        found = self._decode("transfers", rows, transfer_from_row)
        return bool(rows), found[0] if found else None

    def begin_source(self, record: TransferRecord) -> None:
        """Journal a transfer this host starts sending.

        Raises:
            StorageError: a source row with that id exists already, or the write failed.
        """
        if record.role is not TransferRole.SOURCE:
            raise ValueError(f"begin_source needs a source record, not {record.role}")
        try:
            with self._write("journal a transfer") as db:
                self._insert_transfer(db, record)
        except StorageError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise StorageError(
                    f"transfer {record.transfer_id} already has a source row in {self.path}"
                ) from exc
            raise

    def set_phase(
        self,
        transfer_id: str,
        role: TransferRole,
        phase: TransferPhase,
        detail: dict[str, Any] | None = None,
        *,
        durable: bool = True,
    ) -> TransferRecord:
        """Move a transfer to ``phase``; the keys of ``detail`` are merged into its detail.

        ``durable=False``: not flushed to disk on its own (see `_write`), for a
        phase whose loss in a power cut the journal protocol recovers from.

        Returns:
            The row as now stored.

        Raises:
            StorageError: there is no such row, or the write failed.
        """
        if phase not in _PHASES[role]:
            raise ValueError(f"{phase} is not a phase of a {role} row")
        with self._write("record a transfer phase", durable=durable) as db:
            # A damaged row is quarantined (and that kept) even though the call then fails.
            _, current = self._select_transfer(transfer_id, role)
            if current is not None:
                current = dataclasses.replace(
                    current,
                    phase=phase,
                    detail={**current.detail, **(detail or {})},
                    updated=time.time(),
                )
                db.execute(
                    "UPDATE transfers SET phase = ?, detail = ?, updated = ? "
                    "WHERE transfer_id = ? AND role = ?",
                    (phase.value, dumps(current.detail), current.updated, transfer_id, role.value),
                )
        if current is None:
            raise StorageError(f"no {role} row for transfer {transfer_id} in {self.path}")
        return current

    def get_transfer(self, transfer_id: str, role: TransferRole) -> TransferRecord | None:
        """One side's row for a transfer, or None."""
        return self._select_transfer(transfer_id, role)[1]

    def transfers(
        self, role: TransferRole | None = None, phases: Iterable[TransferPhase] | None = None
    ) -> list[TransferRecord]:
        """Journal rows, oldest first, optionally of one role and some phases."""
        sql, params = "SELECT * FROM transfers WHERE 1", []
        if role is not None:
            sql += " AND role = ?"
            params.append(role.value)
        if phases is not None:
            wanted = [TransferPhase(p).value for p in phases]
            sql += f" AND phase IN ({_marks(wanted)})"
            params += wanted
        rows = self._read(sql + " ORDER BY created, rowid", params)
        return self._decode("transfers", rows, transfer_from_row)

    def commit_target(
        self, record: TransferRecord, before: Callable[[], None] | None = None
    ) -> TransferRecord:
        """Durably accept an arriving transfer; a retry with the same id is idempotent.

        ``before`` runs inside the transaction, only for a transfer not seen
        before (e.g. to land its envelope): if it raises, nothing is committed.

        Returns:
            The stored row: ``record`` as committed now, or the row of an earlier
            commit of the same transfer id, unchanged.

        Raises:
            TransferError: the source aborted this transfer already.
            StorageError: the write failed; nothing was committed.
        """
        if record.role is not TransferRole.TARGET:
            raise ValueError(f"commit_target needs a target record, not {record.role}")
        now = time.time()
        with self._write("commit a transfer") as db:
            existed, stored = self._select_transfer(record.transfer_id, TransferRole.TARGET)
            # A damaged row (existed, stored None) is refused: never risk a second copy.
            if not existed:
                if before is not None:
                    before()
                stored = dataclasses.replace(
                    record, phase=TransferPhase.COMMITTED, created=now, updated=now
                )
                self._insert_transfer(db, stored)
        if stored is None:
            raise TransferError(
                f"the journal row of transfer {record.transfer_id} on this host was "
                "damaged and has been quarantined; the transfer is refused"
            )
        if stored.phase is TransferPhase.ABORTED:
            raise TransferError(
                f"transfer {record.transfer_id} of paglet {record.agent_id} was aborted by "
                f"its source {stored.peer or record.peer}; the paglet stays there"
            )
        return stored

    def abort_target(self, transfer_id: str, agent_id: str, *, peer: str = "") -> TransferPhase:
        """Record that the source gave up on a transfer, unless it was committed already.

        Returns:
            ``COMMITTED`` or ``STARTED`` when the target had committed (the source must
            then count the move as done), else ``ABORTED``: a later commit of this
            transfer id is refused.
        """
        now = time.time()
        with self._write("abort a transfer") as db:
            _, current = self._select_transfer(transfer_id, TransferRole.TARGET)
            if current is not None:
                return current.phase
            record = TransferRecord(
                transfer_id,
                TransferRole.TARGET,
                agent_id,
                kind="",
                phase=TransferPhase.ABORTED,
                peer=peer,
                created=now,
                updated=now,
            )
            self._insert_transfer(db, record)
        return TransferPhase.ABORTED

    def forget_transfer(self, transfer_id: str, role: TransferRole) -> None:
        """Delete one side's row for a transfer, if any."""
        with self._write("forget a transfer") as db:
            db.execute(
                "DELETE FROM transfers WHERE transfer_id = ? AND role = ?",
                (transfer_id, role.value),
            )

    def prune_transfers(
        self, older_than: float, phases: Iterable[TransferPhase] = FINISHED_PHASES
    ) -> int:
        """Delete rows in ``phases`` (by default the finished ones) last updated before
        ``older_than`` (seconds since the epoch); returns how many."""
        wanted = [TransferPhase(p).value for p in phases]
        with self._write("prune transfers") as db:
            cur = db.execute(
                f"DELETE FROM transfers WHERE updated < ? AND phase IN ({_marks(wanted)})",  # noqa: S608
                [older_than, *wanted],
            )
        return cur.rowcount

    # -- paglet records ------------------------------------------------------

    def put_paglet(self, record: PagletRecord) -> bool:
        """Insert or replace the record of one paglet, unless the stored one is newer.

        Returns:
            False if the stored record has a newer generation: it is kept as it is.
        """
        with self._write("store a paglet record") as db:
            cur = db.execute(
                "INSERT INTO paglets "
                "(agent_id, class_path, status, envelope, detail, updated, generation) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET "
                "class_path = excluded.class_path, status = excluded.status, "
                "envelope = excluded.envelope, detail = excluded.detail, "
                "updated = excluded.updated, generation = excluded.generation "
                "WHERE excluded.generation >= paglets.generation",
                (
                    record.agent_id,
                    record.class_path,
                    record.status,
                    record.envelope,
                    dumps(record.detail),
                    record.updated,
                    record.generation,
                ),
            )
        return cur.rowcount > 0

    def get_paglet(self, agent_id: str) -> PagletRecord | None:
        """The record of one paglet, or None."""
        rows = self._read("SELECT * FROM paglets WHERE agent_id = ?", (agent_id,))
        found = self._decode("paglets", rows, paglet_from_row)
        return found[0] if found else None

    def delete_paglet(self, agent_id: str) -> None:
        """Delete the record of one paglet, if any."""
        with self._write("delete a paglet record") as db:
            db.execute("DELETE FROM paglets WHERE agent_id = ?", (agent_id,))

    def paglets(self, status: str | None = None) -> list[PagletRecord]:
        """Paglet records, by agent id, optionally of one status."""
        if status is None:
            rows = self._read("SELECT * FROM paglets ORDER BY agent_id")
        else:
            rows = self._read("SELECT * FROM paglets WHERE status = ? ORDER BY agent_id", (status,))
        return self._decode("paglets", rows, paglet_from_row)

    def count_paglets(self, status: str | None = None) -> int:
        """How many paglet records, optionally of one status."""
        if status is None:
            rows = self._read("SELECT COUNT(*) FROM paglets")
        else:
            rows = self._read("SELECT COUNT(*) FROM paglets WHERE status = ?", (status,))
        return int(rows[0][0])

    # -- events --------------------------------------------------------------

    def append_event(
        self,
        time: float,
        kind: EventKind,
        host: str,
        *,
        agent_id: str | None = None,
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> int:
        """Log one event under the next cursor; returns the cursor."""
        with self._write("log an event") as db:
            cur = db.execute(
                "INSERT INTO events (timestamp, kind, host, agent_id, detail, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time, EventKind(kind).value, host, agent_id, detail, _event_data(data)),
            )
        return int(cur.lastrowid or 0)

    def append_events(self, events: Sequence[ContextEvent]) -> None:
        """Log events that already have their cursors, in one transaction.

        Raises:
            StorageError: a cursor is taken already, or the write failed.
        """
        with self._write("log events") as db:
            db.executemany(
                "INSERT INTO events (cursor, timestamp, kind, host, agent_id, detail, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.cursor,
                        e.timestamp,
                        e.kind.value,
                        e.host,
                        e.agent_id,
                        e.detail,
                        _event_data(e.data),
                    )
                    for e in events
                ],
            )

    def events(
        self,
        since: int = 0,
        limit: int = 100,
        *,
        agent_id: str | None = None,
        kinds: Iterable[EventKind] | None = None,
    ) -> list[ContextEvent]:
        """Events with a cursor above ``since``, oldest first, at most ``limit``."""
        where, params = "cursor > ?", []
        if agent_id is not None:
            where += " AND agent_id = ?"
            params.append(agent_id)
        if kinds is not None:
            wanted = [EventKind(k).value for k in kinds]
            where += f" AND kind IN ({_marks(wanted)})"
            params += wanted
        out: list[ContextEvent] = []
        while len(out) < limit:
            rows = self._read(
                f"SELECT * FROM events WHERE {where} ORDER BY cursor LIMIT ?",  # noqa: S608
                [since, *params, limit - len(out)],
            )
            if not rows:
                break
            since = int(rows[-1]["cursor"])
            out += self._decode("events", rows, event_from_row)
        return out

    def last_event_cursor(self) -> int:
        """The highest cursor ever given, 0 when none; trimming never lowers it."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(rows[0][0]) if rows else 0

    def trim_events(self, keep: int) -> int:
        """Delete all but the newest ``keep`` events; returns how many were deleted."""
        with self._write("trim events") as db:
            cur = db.execute(
                "DELETE FROM events WHERE cursor <= "
                "(SELECT cursor FROM events ORDER BY cursor DESC LIMIT 1 OFFSET ?)",
                (max(keep, 0),),
            )
        return cur.rowcount


_UPGRADES = {
    # 1 -> 2: a paglet's record carries the generation of its durable state
    1: ("ALTER TABLE paglets ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",),
}


def _upgrade(db: sqlite3.Connection, found: int) -> None:
    """Bring a database of schema version ``found`` to `SCHEMA_VERSION`, in the open transaction."""
    for version in range(found, SCHEMA_VERSION):
        for statement in _UPGRADES[version]:
            db.execute(statement)
    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


def _event_data(data: dict[str, Any] | None) -> str:
    # Event data is best effort: a value JSON cannot hold is kept as its text.
    return json.dumps(data or {}, separators=(",", ":"), default=str)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
