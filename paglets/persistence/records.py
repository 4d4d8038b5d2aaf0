"""The rows of the host's store: their types, their tables, and how a row is decoded.

A decoder raises ``ValueError``, ``TypeError`` or ``LookupError`` for a row it
cannot turn into its record; the store then quarantines that row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from paglets.core.events import ContextEvent, EventKind


class Row(Protocol):
    """A database row whose columns are read by name (as `sqlite3.Row`)."""

    def __getitem__(self, key: str, /) -> Any: ...


class TransferRole(StrEnum):
    """Which side of a transfer a journal row records."""

    SOURCE = "source"
    TARGET = "target"


class TransferPhase(StrEnum):
    """Where a transfer stands, as journaled by one side.

    Source: ``SENDING`` → ``DONE`` (the target said it committed, and the local
    copy is gone), through ``COMMITTED`` when a transfer is settled after the
    fact; ``IN_DOUBT`` when the target's answer was lost; ``FAILED`` when the
    target refused and the paglet stays. Target: ``COMMITTED`` (the envelope is on
    disk) → ``STARTED``; or ``ABORTED`` when the source gave up first.
    """

    SENDING = "sending"
    COMMITTED = "committed"
    IN_DOUBT = "in_doubt"
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"
    STARTED = "started"


SOURCE_PHASES = frozenset(
    {
        TransferPhase.SENDING,
        TransferPhase.COMMITTED,
        TransferPhase.IN_DOUBT,
        TransferPhase.DONE,
        TransferPhase.FAILED,
    }
)
TARGET_PHASES = frozenset({TransferPhase.COMMITTED, TransferPhase.ABORTED, TransferPhase.STARTED})
FINISHED_PHASES = (TransferPhase.DONE, TransferPhase.ABORTED, TransferPhase.FAILED)


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """One side's journal row for one transfer.

    Attributes:
        transfer_id: the id both sides share.
        role: which side this row is.
        agent_id: the paglet moved.
        kind: what the move is (``dispatch``, ``retract``, ...).
        phase: where it stands; see `TransferPhase`.
        peer: the other side (a host name or URL).
        envelope: the path of the envelope file, if one is kept.
        detail: small JSON-compatible facts.
        created: when the row was made (seconds since the epoch).
        updated: when its phase last changed.
    """

    transfer_id: str
    role: TransferRole
    agent_id: str
    kind: str
    phase: TransferPhase
    peer: str
    envelope: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class PagletRecord:
    """A paglet the host keeps on disk (deactivated, or to recover on restart).

    Attributes:
        agent_id: the paglet's id.
        class_path: ``module:Class`` of the paglet.
        status: what the host knows of it (e.g. ``inactive``).
        envelope: the path of its envelope file, if any.
        detail: small JSON-compatible facts.
        updated: when the record last changed.
        generation: the generation of the durable state it describes
            (`paglets.persistence.checkpoints`); a record is never replaced by
            one of an older generation.
    """

    agent_id: str
    class_path: str
    status: str
    envelope: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    updated: float = field(default_factory=time.time)
    generation: int = 0


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """A row that could not be decoded, kept as it was found.

    Attributes:
        id: its number in ``quarantined_rows``.
        table: the table it came from.
        key: its primary key there, as text.
        raw: its columns as JSON text.
        reason: why it could not be decoded.
        time: when it was moved.
    """

    id: int
    table: str
    key: str
    raw: str
    reason: str
    time: float


SCHEMA_VERSION = 2
# One statement per ";"; applied in one transaction to a new database.
SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    transfer_id TEXT NOT NULL,
    role TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase TEXT NOT NULL,
    peer TEXT NOT NULL,
    envelope TEXT,
    detail TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (transfer_id, role)
);
CREATE INDEX IF NOT EXISTS transfers_by_phase ON transfers (role, phase);
CREATE TABLE IF NOT EXISTS paglets (
    agent_id TEXT PRIMARY KEY,
    class_path TEXT NOT NULL,
    status TEXT NOT NULL,
    envelope TEXT,
    detail TEXT NOT NULL,
    updated REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS paglets_by_status ON paglets (status);
CREATE TABLE IF NOT EXISTS events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp REAL NOT NULL,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    agent_id TEXT,
    detail TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_agent ON events (agent_id, cursor);
CREATE TABLE IF NOT EXISTS quarantined_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    raw TEXT NOT NULL,
    reason TEXT NOT NULL,
    time REAL NOT NULL
);
"""


def json_object(text: object) -> dict[str, Any]:
    """Decode a column that holds a JSON object."""
    if not isinstance(text, str):
        raise TypeError(f"expected JSON text, found {type(text).__name__}")
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, found {type(value).__name__}")
    return value


def dumps(value: dict[str, Any]) -> str:
    """Encode a JSON-object column; values JSON cannot hold raise ``TypeError``."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def transfer_from_row(row: Row) -> TransferRecord:
    """A transfer journal row."""
    return TransferRecord(
        transfer_id=str(row["transfer_id"]),
        role=TransferRole(row["role"]),
        agent_id=str(row["agent_id"]),
        kind=str(row["kind"]),
        phase=TransferPhase(row["phase"]),
        peer=str(row["peer"]),
        envelope=_opt_str(row["envelope"]),
        detail=json_object(row["detail"]),
        created=float(row["created"]),
        updated=float(row["updated"]),
    )


def paglet_from_row(row: Row) -> PagletRecord:
    """A paglet record row."""
    return PagletRecord(
        agent_id=str(row["agent_id"]),
        class_path=str(row["class_path"]),
        status=str(row["status"]),
        envelope=_opt_str(row["envelope"]),
        detail=json_object(row["detail"]),
        updated=float(row["updated"]),
        generation=int(row["generation"]),
    )


def event_from_row(row: Row) -> ContextEvent:
    """An event row."""
    return ContextEvent(
        cursor=int(row["cursor"]),
        timestamp=float(row["timestamp"]),
        kind=EventKind(row["kind"]),
        host=str(row["host"]),
        agent_id=_opt_str(row["agent_id"]),
        detail=str(row["detail"]),
        data=json_object(row["data"]),
    )
