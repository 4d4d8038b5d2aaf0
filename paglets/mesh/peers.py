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
- Names are unique. With a `Trust` (every host has one), a name belongs to the
  identity pinned for it: a record is taken only when signed by that key, and a
  record of the name signed by any other key is `Refused` (see
  `paglets.mesh.trust`). Without one (the pure-logic tests), two records of one
  name are the same host when they share a URL or an incarnation (a restart on
  the same port, a rebind to a new address); otherwise the name is taken: the
  table keeps the host it had while that one is online and reports a
  `Duplicate`; once it is offline, the newcomer replaces it.
- The table holds at most ``max_hosts`` hosts; news of more names is dropped
  and counted in `MergeResult.overflow`.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from paglets.wire.mesh import HostRecord


MAX_HOSTS: Final = 1000
"""How many hosts a table holds, and how many records one gossip message may carry."""


class RefusalKind(enum.Enum):
    """Why a record was not taken, with the words that say it."""

    UNSIGNED = "is not signed"
    OTHER_IDENTITY = "is signed by another identity than the one pinned for its name"
    BAD_SIGNATURE = "has a signature that does not match"
    STALE_UNPINNED = "is stale and its name is not pinned"
    PINS_FULL = "would need a new pin, but the pins file is full"


@dataclass(frozen=True, slots=True)
class Refused:
    """A record the table's `Trust` did not take.

    Attributes:
        name: the host name it claims.
        url: the URL it claims.
        kind: why it was refused.
        pinned: the fingerprint of the key pinned for the name (``-`` for none).
        offered: the fingerprint of the key the record carries (``-`` for none).
        kept_url: the URL the table keeps for that name, if it has one.
    """

    name: str
    url: str
    kind: RefusalKind
    pinned: str = "-"
    offered: str = "-"
    kept_url: str | None = None

    @property
    def quiet(self) -> bool:
        """Whether it is routine (not worth an event)."""
        return self.kind is RefusalKind.STALE_UNPINNED


class Trust(Protocol):
    """What the table asks of its host's identity and pins (`paglets.mesh.trust`)."""

    def sign(self, record: HostRecord) -> HostRecord:
        """Our own record, signed."""
        ...

    def admit(self, record: HostRecord, *, fresh: bool) -> Refused | None:
        """``None`` if the table may take ``record`` (pinning its name), else why not."""
        ...


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
    refused: list[Refused] = field(default_factory=list)
    overflow: int = 0  # news of new names dropped because the table was full


@dataclass(slots=True)
class _Entry:
    record: HostRecord  # as its owner published it; online/last_seen are recomputed
    seen: float  # local monotonic time of the freshest news of it
    online: bool = True  # as last reported by sweep()
    left: bool = False  # its owner said goodbye (a newer record with online=False)
    checked: float = 0.0  # local monotonic time its record was last admitted by the trust


class PeerTable:
    """See the module docstring.

    Args:
        me: this host's own record; always online.
        offline_after: seconds without fresher news before a host is offline.
        forget_after: seconds without news before a host leaves the table.
        clock: a monotonic clock (injectable for tests).
        wall_clock: the wall clock used for ``last_seen`` and ``sent_at``.
        trust: signs our record and admits others'; ``None`` takes records unsigned.
        max_hosts: how many hosts the table holds.
    """

    def __init__(
        self,
        me: HostRecord,
        offline_after: float,
        *,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        trust: Trust | None = None,
        max_hosts: int = MAX_HOSTS,
    ) -> None:
        self.offline_after = offline_after
        self.max_hosts = max_hosts
        self.trust = trust
        self.forget_after = max(forget_after, offline_after)
        self._clock = clock
        self._wall = wall_clock
        self._me = me.name
        self._entries: dict[str, _Entry] = {}
        self._leaving = False
        self.set_me(me)

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
        if self.trust is not None:
            record = self.trust.sign(record)
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
        if record.name == self._me:
            self._merge_me(record, fresh, result)
            return
        if self.trust is not None:
            self._merge_trusted(entry, record, seen, fresh, result)
            return
        if entry is None:
            self._join(record, seen, fresh, result)
            return
        known = entry.record
        if known.url == record.url or known.incarnation == record.incarnation:
            self._update(entry, record, seen, result)
            return
        if self._is_online(entry, now):
            if fresh:
                result.duplicates.append(Duplicate(record.name, known.url, record.url))
            return
        if seen > entry.seen:
            self._entries[record.name] = _Entry(record, seen, online=entry.online)
            result.changes.append(Change(record.name, "replaced", record.url))

    def _merge_me(self, record: HostRecord, fresh: bool, result: MergeResult) -> None:
        """News of our own name: never taken; someone else's live claim is a duplicate.

        A claim is live when its news is fresh and the peer does not report it offline
        (a host that said goodbye holds its name against nobody).
        """
        me = self.me
        if self.trust is not None:
            same_host = record.public_key == me.public_key
        else:
            same_host = me.url == record.url or me.incarnation == record.incarnation
        if not same_host and fresh and record.online:
            result.duplicates.append(Duplicate(record.name, me.url, record.url))

    def _join(self, record: HostRecord, seen: float, fresh: bool, result: MergeResult) -> bool:
        if len(self._entries) >= self.max_hosts:
            result.overflow += 1
            return False
        self._entries[record.name] = _Entry(record, seen, online=fresh, left=not record.online)
        result.changes.append(Change(record.name, "joined", record.url))
        return True

    def _merge_trusted(
        self,
        entry: _Entry | None,
        record: HostRecord,
        seen: float,
        fresh: bool,
        result: MergeResult,
    ) -> None:
        """Take a record only when the trust admits it; old news of a known host needs no check."""
        assert self.trust is not None  # noqa: S101 - the caller checked
        if entry is not None:
            known = entry.record
            old_news = (record.incarnation, record.heartbeat) <= (
                known.incarnation,
                known.heartbeat,
            )
            if old_news and record.public_key == known.public_key:
                self._update(entry, record, seen, result)  # only its freshness is taken
                return
            if self._just_a_beat(entry, record):
                entry.seen = max(entry.seen, seen)
                return
        elif len(self._entries) >= self.max_hosts:
            result.overflow += 1
            return
        refused = self.trust.admit(record, fresh=fresh)
        if refused is not None:
            kept = None if entry is None else entry.record.url
            result.refused.append(dataclasses.replace(refused, kept_url=kept))
            return
        if entry is None:
            self._join(record, seen, fresh, result)
        elif record.public_key != entry.record.public_key:  # its pin was changed on disk
            self._entries[record.name] = _Entry(record, seen, online=fresh, left=not record.online)
            result.changes.append(Change(record.name, "replaced", record.url))
        else:
            self._update(entry, record, seen, result)
        if record.name in self._entries:
            self._entries[record.name].checked = self._clock()

    def _just_a_beat(self, entry: _Entry, record: HostRecord) -> bool:
        """A newer heartbeat, all else the same, soon after the last checked record of it.

        Its signature is then not checked and the record not taken: only the freshness
        of the news is. The stored (checked) record still advances at least every
        ``offline_after / 2`` seconds, and at once when anything else in it changes, a
        goodbye included. A forged heartbeat therefore never becomes the stored
        version, and a host's signature is checked about twice per ``offline_after``
        instead of once per round.

        ``resources`` (`paglets.wire.resources.HostResources`) is left out of the
        comparison on purpose: it changes nearly every beat, and a snapshot up to
        ``offline_after / 2`` seconds old is fresh enough to place work by.
        """
        known = entry.record
        if not record.online or self._clock() - entry.checked >= self.offline_after / 2:
            return False
        return (
            record.incarnation == known.incarnation
            and record.paglets == known.paglets
            and record.url == known.url
            and record.public_key == known.public_key
            and record.urls == known.urls
            and record.tags == known.tags
            and record.properties == known.properties
            and record.mesh_version == known.mesh_version
            and record.protocol_version == known.protocol_version
            and record.version == known.version
            and record.commit == known.commit
            and record.update == known.update
            and record.services == known.services
        )

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
