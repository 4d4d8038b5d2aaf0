"""``RecordTrust``: which host records the peer table may take, and signing our own.

A record is taken only when it is signed (`paglets.mesh.identity.verify`) by
the key pinned for its name (`paglets.mesh.pins.PinStore`). A name nobody
pinned yet is pinned to the key of its first *fresh* record (one whose owner
produced it less than ``--offline-after`` ago): a stale record of an unknown
name is skipped quietly, so a host that was reinstalled, and whose old line
was deleted from the pins file, is pinned again from its new, live self and
not from the last news of its old identity still travelling the mesh.

The peer table asks only about records whose content it would take (a new
name, a newer version, another key), so a round of gossip verifies each host's
record once per change of it, whichever peers relay it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paglets.mesh.identity import verify
from paglets.mesh.peers import RefusalKind, Refused
from paglets.wire.mesh import fingerprint

if TYPE_CHECKING:
    from paglets.mesh.identity import HostIdentity
    from paglets.mesh.pins import PinStore
    from paglets.wire.mesh import HostRecord


class RecordTrust:
    """See the module docstring.

    Args:
        identity: this host's identity, which signs its own record.
        pins: the pinned keys of every host seen.
    """

    def __init__(self, identity: HostIdentity, pins: PinStore) -> None:
        self.identity = identity
        self.pins = pins
        self.verified = 0  # signatures checked, for measurements

    def __repr__(self) -> str:
        return f"<RecordTrust {self.identity.fingerprint} pins={len(self.pins)}>"

    def sign(self, record: HostRecord) -> HostRecord:
        """Our own record, signed (once per change)."""
        return self.identity.sign(record)

    def admit(self, record: HostRecord, *, fresh: bool) -> Refused | None:
        """``None`` if the table may take ``record`` (its name is then pinned), else why not."""
        pinned = self.pins.get(record.name)
        if record.public_key is None or record.signature is None:
            return _refused(record, pinned, RefusalKind.UNSIGNED)
        if pinned is not None and pinned != record.public_key:
            return _refused(record, pinned, RefusalKind.OTHER_IDENTITY)
        if pinned is None and not fresh:
            return _refused(record, pinned, RefusalKind.STALE_UNPINNED)
        self.verified += 1
        if not verify(record):
            return _refused(record, pinned, RefusalKind.BAD_SIGNATURE)
        if pinned is None and not self.pins.pin(record.name, record.public_key):
            return _refused(record, pinned, RefusalKind.PINS_FULL)
        return None


def _refused(record: HostRecord, pinned: str | None, kind: RefusalKind) -> Refused:
    return Refused(
        record.name,
        record.url,
        kind,
        pinned=fingerprint(pinned),
        offered=fingerprint(record.public_key),
    )
