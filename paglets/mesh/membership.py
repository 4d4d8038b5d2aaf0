"""``Membership``: who is in this host's mesh — its identity, its pins, its hellos.

One per `MeshService`. It loads (or makes) the host's identity and its pins
before the host listens, gives the peer table its `RecordTrust`, answers the
hellos of hosts that want this one to prove it holds the mesh key, reports the
records the table refused (each once) and keeps the pins file in step with
memory: new pins are appended soon after they are made, and an edit of the
file on disk (an operator deleting a line to re-pin a host) is read back.

Files, all under ``<home>/mesh/`` (0700): ``identity.key`` (0600) and
``known_hosts`` (0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import ConfigurationError, ProtocolError, RequestError
from paglets.core.events import EventKind
from paglets.mesh.hello import answer, dialed_me, hello_key
from paglets.mesh.identity import HostIdentity
from paglets.mesh.peers import RefusalKind
from paglets.mesh.pins import PINS_FILE, PinStore
from paglets.mesh.trust import RecordTrust
from paglets.wire.mesh import HostRecord

if TYPE_CHECKING:
    from paglets.config import HostConfig
    from paglets.mesh.hello import Hello, HelloReply
    from paglets.mesh.peers import MergeResult, PeerTable, Refused
    from paglets.persistence.events import EventLog

log = logging.getLogger(__name__)

PINS_POLL: Final = 2.0  # seconds between looks at the pins file for an operator's edit
_OVERFLOW_LOG_EVERY: Final = 60.0


class Membership:
    """See the module docstring.

    Args:
        config: the host's options.
        events: the host's event log.
        table: the host's peer table; `load` gives it its trust.
    """

    def __init__(self, config: HostConfig, events: EventLog, table: PeerTable) -> None:
        self.config = config
        self.events = events
        self.table = table
        self.directory = config.home / "mesh"
        self.pins = PinStore(self.directory / PINS_FILE)
        self.identity: HostIdentity | None = None
        self._hello_key = hello_key(config.api_key) if config.api_key else None
        self._wake = asyncio.Event()
        self._reported: set[tuple[str, str, str]] = set()
        self._overflow_logged = -_OVERFLOW_LOG_EVERY

    def __repr__(self) -> str:
        who = self.identity.fingerprint if self.identity else "no identity yet"
        return f"<Membership {self.config.name} {who} pins={len(self.pins)}>"

    async def load(self) -> None:
        """Load or make the identity, read the pins and arm the table (before listening)."""
        self.identity = await asyncio.to_thread(HostIdentity.load_or_create, self.directory)
        await asyncio.to_thread(self.pins.load)
        self.table.trust = RecordTrust(self.identity, self.pins)
        self.table.set_me(self.table.me)
        log.debug("host %s has identity %s", self.config.name, self.identity.fingerprint)

    def check_own_record(self) -> None:
        """Refuse to start with a record every peer would refuse (too many tags, ...).

        Raises:
            ConfigurationError: the record breaks a limit of `HostRecord`.
        """
        try:
            HostRecord.from_dict(self.table.me.to_dict())
        except ProtocolError as exc:
            raise ConfigurationError(f"this host's own mesh record is invalid: {exc}") from None

    # -- hellos ---------------------------------------------------------------------

    def answer_hello(self, hello: Hello, sockname: Any) -> HelloReply:
        """Prove to the host saying ``hello`` that this one holds the mesh key.

        Raises:
            RequestError: this host has no key, or the URL dialed is not its own.
        """
        if self._hello_key is None:
            raise RequestError(
                f"host {self.config.name} has no API key: it is in no keyed mesh and has "
                "nothing to prove"
            )
        me = self.table.me
        if not dialed_me(hello.url, [me.url, *me.urls], sockname):
            raise RequestError(
                f"host {self.config.name} does not answer on {hello.url} as far as it knows "
                "(a hello must name one of its own URLs); a host reached through a proxy or "
                "NAT publishes that URL with --public-url"
            )
        return answer(self._hello_key, hello, self.config.name)

    # -- what a merge refused --------------------------------------------------------

    def report(self, result: MergeResult) -> None:
        """Log and record each refused record once, and a full table now and then."""
        for refused in result.refused:
            key = (refused.name, refused.offered, refused.kind.name)
            if refused.quiet or key in self._reported:
                continue
            self._reported.add(key)
            if refused.kind is RefusalKind.OTHER_IDENTITY:
                self._duplicate(refused)
                continue
            log.warning(
                "refused a record of host %r (%s): it %s",
                refused.name,
                refused.url,
                refused.kind.value,
            )
            self.events.append(
                EventKind.MESH_RECORD_REFUSED,
                detail=f"record of host {refused.name!r} ({refused.url}) refused: "
                f"it {refused.kind.value}",
                data={
                    "name": refused.name,
                    "url": refused.url,
                    "reason": refused.kind.name.lower(),
                    "offered": refused.offered,
                },
            )
        if result.overflow:
            now = time.monotonic()
            if now - self._overflow_logged >= _OVERFLOW_LOG_EVERY:
                self._overflow_logged = now
                log.warning(
                    "the mesh table holds its limit of %d hosts; dropped news of %d more",
                    self.table.max_hosts,
                    result.overflow,
                )
        if self.pins.dirty:
            self._wake.set()

    def _duplicate(self, refused: Refused) -> None:
        name, refused_url, kept_url = refused.name, refused.url, refused.kept_url
        kept = kept_url or "(not in the table now)"
        log.warning(
            "host name %r is claimed by %s with identity %s, but is pinned to %s (%s); "
            "refused. If that host was reinstalled, delete its line from %s on this host",
            name,
            refused_url,
            refused.offered,
            refused.pinned,
            kept,
            self.pins.path,
        )
        self.events.append(
            EventKind.MESH_DUPLICATE_NAME,
            detail=f"host name {name!r} claimed by {refused_url} (identity {refused.offered}) "
            f"is pinned to identity {refused.pinned} ({kept}); refused",
            data={
                "name": name,
                "kept_url": kept_url,
                "refused_url": refused_url,
                "pinned": refused.pinned,
                "offered": refused.offered,
            },
        )

    # -- the pins file ---------------------------------------------------------------

    async def watch(self) -> None:
        """Append new pins soon after they are made; read the file again when edited."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PINS_POLL):
                    await self._wake.wait()
            self._wake.clear()
            await self.pins.flush()
            if await self.pins.refresh():
                self._reported.clear()  # a re-pinned name may be refused anew

    async def close(self) -> None:
        """Write the pins made since the last flush."""
        await self.pins.flush()
