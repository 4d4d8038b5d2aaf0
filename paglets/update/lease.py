"""The mesh-wide update lease: one host of the mesh restarts at a time.

There is no lock server: each host decides from the peer table alone, where
every host publishes its `UpdateStatus`. A host that wants to update:

1. publishes ``pending`` (with the commit) and waits ``settle`` seconds, a few
   gossip rounds, so every other wanting host hears of it, and it of them;
2. then, round after round, looks for a `blocker`: a peer that is ``updating``
   (online or not: a restarting host is offline for a moment, and still holds
   the lease), or an *online* peer that is ``pending`` and whose name sorts
   before its own (the tie-break: all hosts sort names the same way);
3. with no blocker, publishes ``updating`` and goes on; its record says
   ``updating`` until its new process is ready and publishes an idle record.

Every claim is bounded: a peer counts as ``pending`` or ``updating`` for at
most ``lease_time`` seconds from when this host first saw that claim (in this
host's own clock, so clocks of two machines are never compared). A host that
dies while updating therefore blocks the others for ``lease_time`` at most.

What it does not promise: two hosts that cannot hear each other within
``settle`` (a partition, a mesh far larger than a few gossip rounds can cover)
may both update at once. That costs availability, never paglets: each host
keeps its paglets on disk across its restart.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from paglets.wire.mesh import UpdateState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from paglets.wire.mesh import HostRecord

_Claim = tuple[str, int, UpdateState, str | None]  # name, incarnation, state, commit


class Lease:
    """One host's view of who holds, or waits for, the mesh's update lease.

    Args:
        me: this host's name.
        lease_time: how long a claim of another host counts, from when it was first seen.
        clock: a monotonic clock (seconds).
    """

    def __init__(
        self, me: str, lease_time: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.me = me
        self.lease_time = lease_time
        self._clock = clock
        self._first_seen: dict[_Claim, float] = {}

    def __repr__(self) -> str:
        return f"<Lease {self.me} claims={len(self._first_seen)}>"

    def observe(self, hosts: Iterable[HostRecord]) -> None:
        """Note the claims in ``hosts`` (call it every round); forget claims withdrawn."""
        now = self._clock()
        seen: dict[_Claim, float] = {}
        for record in hosts:
            claim = _claim(record)
            if claim is not None and record.name != self.me:
                seen[claim] = self._first_seen.get(claim, now)
        self._first_seen = seen

    def blocker(self, hosts: Iterable[HostRecord]) -> HostRecord | None:
        """The peer this host must wait for before it updates, or ``None`` (see the module)."""
        self.observe(hosts := list(hosts))
        now = self._clock()
        for record in sorted(hosts, key=lambda r: r.name):
            claim = _claim(record)
            if claim is None or record.name == self.me:
                continue
            if now - self._first_seen[claim] >= self.lease_time:
                continue  # a claim past its bound: the host died or hung holding it
            if claim[2] is UpdateState.UPDATING:
                return record
            if record.online and record.name < self.me:
                return record
        return None


def _claim(record: HostRecord) -> _Claim | None:
    update = record.update
    if update is None or update.state is UpdateState.FAILED:
        return None
    return (record.name, record.incarnation, update.state, update.commit)
