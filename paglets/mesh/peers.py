"""``PeerTable``: the pure state machine behind membership; no sockets, no tasks.

Every host keeps one table of every host it has heard of, itself included.
Gossip merges tables; heartbeats say who is alive:

- Each host bumps its own ``heartbeat`` every round; ``(incarnation, heartbeat)``
  orders the versions of one host's record, and a restart gets a larger
  ``incarnation``.
- A record travels with ``last_seen`` in the *sender's* clock, and the gossip
  body carries the sender's ``sent_at``; the receiver takes the age
  ``sent_at - last_seen`` and never compares two machines' clocks.
- A host is online while the freshest news of it is younger than ``offline_after``.
  After ``forget_after`` without news it leaves the table, and news that old is
  ignored, so a forgotten host is not brought back by a peer that still has it.
- Names are unique. Two records of one name are the same host when they share
  a URL or an incarnation (a restart on the same port, a rebind to a new
  address). Otherwise the name is taken: the table keeps the host it had while
  that one is online and reports a `Duplicate`; once it is offline, the
  newcomer replaces it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from paglets.wire.mesh import HostRecord


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A record refused because another live host already has its name."""

    name: str
    kept_url: str
    refused_url: str


@dataclass(frozen=True, slots=True)
class Change:
    """A host that joined the table, or went offline or online again."""

    name: str
    what: str  # "joined", "moved", "replaced", "offline", "online" or "forgotten"
    url: str


@dataclass(slots=True)
class MergeResult:
    """What one merge did."""

    changes: list[Change] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)


@dataclass(slots=True)
class _Entry:
    record: HostRecord  # as its owner published it; online/last_seen are recomputed
    seen: float  # local monotonic time of the freshest news of it
    online: bool = True  # as last reported by sweep()
    left: bool = False  # its owner said goodbye (a newer record with online=False)


class PeerTable:
    """See the module docstring.

    Args:
        me: this host's own record; always online.
        offline_after: seconds without fresher news before a host is offline.
        forget_after: seconds without news before a host leaves the table.
        clock: a monotonic clock (injectable for tests).
        wall_clock: the wall clock used for ``last_seen`` and ``sent_at``.
    """

    def __init__(
        self,
        me: HostRecord,
        offline_after: float,
        *,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.offline_after = offline_after
        self.forget_after = max(forget_after, offline_after)
        self._clock = clock
        self._wall = wall_clock
        self._me = me.name
        self._entries: dict[str, _Entry] = {me.name: _Entry(me, clock())}
        self._leaving = False

    def __repr__(self) -> str:
        now = self._clock()
        online = sum(1 for e in self._entries.values() if self._is_online(e, now))
        return f"<PeerTable {self._me} hosts={len(self._entries)} online={online}>"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @property
    def me(self) -> HostRecord:
        """This host's own record, as published."""
        return self._entries[self._me].record

    def set_me(self, record: HostRecord) -> None:
        """Replace this host's own record (new URL, paglet count, next heartbeat)."""
        if record.name != self._me:
            raise ValueError("a host cannot change its name")
        self._entries[self._me] = _Entry(record, self._clock())

    def leave(self) -> HostRecord:
        """Publish that this host is leaving: its next gossip says it is offline."""
        self._leaving = True
        return self.beat()

    def beat(self, **changes: object) -> HostRecord:
        """Increment this host's heartbeat, applying ``changes``; returns the new record."""
        me = self.me
        record = me.replace(heartbeat=me.heartbeat + 1, **changes)
        self.set_me(record)
        return record

    # -- reading ---------------------------------------------------------------

    def _is_online(self, entry: _Entry, now: float) -> bool:
        if entry.record.name == self._me:
            return not self._leaving
        return not entry.left and now - entry.seen < self.offline_after

    def _view(self, entry: _Entry, now: float, wall: float) -> HostRecord:
        if entry.record.name == self._me:
            return entry.record.replace(online=not self._leaving, last_seen=wall)
        return entry.record.replace(
            online=self._is_online(entry, now), last_seen=wall - (now - entry.seen)
        )

    def hosts(self) -> list[HostRecord]:
        """Every host, this one first, then by name; ``online`` and ``last_seen`` as of now."""
        now, wall = self._clock(), self._wall()
        entries = sorted(
            self._entries.values(), key=lambda e: (e.record.name != self._me, e.record.name)
        )
        return [self._view(e, now, wall) for e in entries]

    def get(self, name: str) -> HostRecord | None:
        """The host of that name, or ``None``."""
        entry = self._entries.get(name)
        return None if entry is None else self._view(entry, self._clock(), self._wall())

    def find_url(self, url: str) -> HostRecord | None:
        """The host that answers on ``url``, or ``None``."""
        now, wall = self._clock(), self._wall()
        for entry in self._entries.values():
            if entry.record.answers_on(url):
                return self._view(entry, now, wall)
        return None

    def gossip(self) -> tuple[float, list[HostRecord]]:
        """``(sent_at, records)`` to send to a peer: every host, ``last_seen`` in our clock."""
        wall = self._wall()
        return wall, self.hosts()

    # -- writing ---------------------------------------------------------------

    def merge(self, records: Iterable[HostRecord], sent_at: float) -> MergeResult:
        """Merge records a peer sent at ``sent_at`` (its wall clock)."""
        result = MergeResult()
        now = self._clock()
        for record in records:
            age = max(0.0, sent_at - record.last_seen)
            if age >= self.forget_after:
                continue
            self._merge_one(record, now - age, now, result)
        return result

    def _merge_one(self, record: HostRecord, seen: float, now: float, result: MergeResult) -> None:
        entry = self._entries.get(record.name)
        fresh = now - seen < self.offline_after
        if entry is None:
            self._entries[record.name] = _Entry(record, seen, online=fresh, left=not record.online)
            result.changes.append(Change(record.name, "joined", record.url))
            return
        known = entry.record
        same_host = known.url == record.url or known.incarnation == record.incarnation
        if record.name == self._me:
            if not same_host and fresh:
                result.duplicates.append(Duplicate(record.name, known.url, record.url))
            return
        if same_host:
            self._update(entry, record, seen, result)
            return
        if self._is_online(entry, now):
            if fresh:
                result.duplicates.append(Duplicate(record.name, known.url, record.url))
            return
        if seen > entry.seen:
            self._entries[record.name] = _Entry(record, seen, online=entry.online)
            result.changes.append(Change(record.name, "replaced", record.url))

    @staticmethod
    def _update(entry: _Entry, record: HostRecord, seen: float, result: MergeResult) -> None:
        """Newer news of a host we know: take the newer record and the fresher time."""
        known = entry.record
        version = (record.incarnation, record.heartbeat)
        known_version = (known.incarnation, known.heartbeat)
        if version > known_version:
            entry.record = record
            # only a newer record can say goodbye, and a newer one can take it back
            entry.left = not record.online
            if record.url != known.url:
                result.changes.append(Change(record.name, "moved", record.url))
        if version >= known_version:
            entry.seen = max(entry.seen, seen)

    def sweep(self) -> list[Change]:
        """Hosts that went offline, came back online or were forgotten since the last sweep."""
        now = self._clock()
        changes = []
        for entry in list(self._entries.values()):
            if entry.record.name != self._me and now - entry.seen >= self.forget_after:
                del self._entries[entry.record.name]
                changes.append(Change(entry.record.name, "forgotten", entry.record.url))
                continue
            online = self._is_online(entry, now)
            if online != entry.online:
                entry.online = online
                what = "online" if online else "offline"
                changes.append(Change(entry.record.name, what, entry.record.url))
        return changes
