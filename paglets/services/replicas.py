"""Replicated mesh services: the newest copy of a service's state, on every host that may serve it.

A ``scope = "mesh"`` service declared with ``replicate = true`` runs on one host
of the mesh at a time (`paglets.services.registry`). With replication:

- **after its calls**, the host that serves it reads the service's state and
  sends a copy, with a version, to every other online host that advertises
  it (``PUT /v1/services/{service}/replica``); calls that come while a copy is
  being sent are covered by one more copy after it, so a burst of calls costs
  one or two copies, not one each;
- **when a host starts serving it** (it takes over from a host that went
  offline, or comes back first by name), it first asks the other online
  hosts that advertise it for their copy (``GET .../replica``; the host that
  served until then answers with its service's state as it is now), and
  starts the service from the newest copy it knows, its own included, if that
  is newer than the state its own paglet has.

Versions order copies across hosts: a version is the time in nanoseconds, but
never below one more than any version this host has seen, so a host that took
over always writes versions above the copies it took over from, whatever its
clock says. Copies are kept in memory and on disk (``<home>/services/replicas``),
so a host that restarts still has them.

What is lost: the calls a host served after the last copy it sent before it
was killed (at most the calls of the last moments before the kill, since a copy
follows every burst of calls). While the mesh has not yet seen a host come or
go (``--offline-after``), two hosts may serve at once; the copy with the newer
version wins when one of them next takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import PagletError, RequestError, ServiceNotFoundError, StorageError
from paglets.persistence.files import write_atomic
from paglets.persistence.paths import under
from paglets.runtime.delivery import SendMode
from paglets.wire import strict_json
from paglets.wire.records import API_PREFIX
from paglets.wire.services import SERVICE_RESTORE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets.calls import HostCalls
    from paglets.launch.model import ServiceEntry
    from paglets.mesh.service import MeshService
    from paglets.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)

PEER_TIMEOUT: Final = 5.0
"""Seconds a copy sent to, or asked of, another host may take."""
MAX_VERSION: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Replica:
    """A copy of a service's state: its ``version`` and the host that made it."""

    version: int
    state: dict[str, Any]
    origin: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "state": self.state, "origin": self.origin}

    @classmethod
    def parse(cls, data: object) -> Replica:
        """A copy from the wire, checked field by field.

        Raises:
            RequestError: not ``{"version", "state", "origin"}``, a version that is
                not a positive integer, a state that is not an object.
        """
        if not isinstance(data, dict) or set(data) != {"version", "state", "origin"}:
            raise RequestError('a replica is {"version", "state", "origin"}')
        version, state, origin = data["version"], data["state"], data["origin"]
        if type(version) is not int or not 0 < version <= MAX_VERSION:
            raise RequestError(f"a replica's version is an integer from 1 to {MAX_VERSION}")
        if not isinstance(state, dict):
            raise RequestError("a replica's state is a JSON object")
        if not isinstance(origin, str) or not 0 < len(origin) <= 255:  # noqa: PLR2004
            raise RequestError("a replica's origin is the name of the host that made it")
        return cls(version, state, origin)


class Replicas:
    """The copies this host holds, and the copies it sends; see the module docstring.

    ``ensure(entry, state)`` starts the service's paglet here if it is not,
    from ``state``; the registry passes its own single-flight start.
    """

    def __init__(
        self,
        config_name: str,
        directory: Path | None,
        *,
        supervisor: Supervisor,
        mesh: MeshService,
        calls: HostCalls,
        ensure: Callable[[ServiceEntry, dict[str, Any] | None], Awaitable[None]],
    ) -> None:
        self.name = config_name
        self.directory = directory
        self.supervisor = supervisor
        self.mesh = mesh
        self.calls = calls
        self._ensure = ensure
        self.held: dict[str, Replica] = {}
        """The newest copy received (or made) of each contract's state."""
        self.mine: dict[str, int] = {}
        """The version of the state this host's paglet of each contract has."""
        self._seen = 0
        self._serving: set[str] = set()
        self._dirty: set[str] = set()
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<Replicas {self.name} {sorted(self.held)}>"

    # -- versions and disk -------------------------------------------------------------

    def _next_version(self) -> int:
        self._seen = max(time.time_ns(), self._seen + 1)
        return self._seen

    def _path(self, contract: str) -> Path | None:
        if self.directory is None:
            return None
        return under(self.directory, f"{contract}.json")

    def load(self, contracts: list[str]) -> None:
        """Read the copies kept on disk for ``contracts`` (at host start)."""
        for contract in contracts:
            path = self._path(contract)
            if path is None or not path.is_file():
                continue
            try:
                replica, mine = _read(path)
            except (OSError, RequestError) as exc:
                log.warning("ignoring the replica file %s: %s", path, exc)
                continue
            if replica is not None:
                self.held[contract] = replica
                self._seen = max(self._seen, replica.version)
            if type(mine) is int and 0 < mine <= MAX_VERSION:
                self.mine[contract] = mine
                self._seen = max(self._seen, mine)

    def _save(self, contract: str) -> None:
        path = self._path(contract)
        if path is None:
            return
        held = self.held.get(contract)
        data = {"held": None if held is None else held.to_dict(), "mine": self.mine.get(contract)}
        try:
            write_atomic(path, json.dumps(data).encode(), sync=False)
        except StorageError as exc:
            log.warning("could not keep the replica of %s: %s", contract, exc)

    # -- serving ---------------------------------------------------------------------------

    async def before_serving(self, entry: ServiceEntry) -> None:
        """Before this host serves a call of ``entry``: if it was not serving it
        already, start (or restore) it from the newest copy in the mesh."""
        contract = entry.contract
        if contract in self._serving:
            return
        lock = self._locks.setdefault(contract, asyncio.Lock())
        async with lock:
            if contract in self._serving:
                return
            newest = self.held.get(contract)
            for replica in await self._ask_peers(contract):
                if newest is None or replica.version > newest.version:
                    newest = replica
            if newest is not None:
                self._seen = max(self._seen, newest.version)
            if newest is None or newest.version <= self.mine.get(contract, 0):
                await self._ensure(entry, None)
            elif self.supervisor.find(entry.agent_id) is None:
                await self._ensure(entry, newest.state)
            else:
                await self.supervisor.delivery.send(
                    entry.agent_id, SERVICE_RESTORE, {"state": newest.state}, mode=SendMode.SYNC
                )
            if newest is not None:
                self.mine[contract] = max(self.mine.get(contract, 0), newest.version)
                log.info(
                    "serving %s from the copy of %s (version %d)",
                    contract,
                    newest.origin,
                    newest.version,
                )
                self._save(contract)
            self._serving.add(contract)

    def not_serving(self, contract: str) -> None:
        """Another host serves ``contract`` now (this host forwarded a call to it)."""
        self._serving.discard(contract)

    def changed(self, entry: ServiceEntry) -> None:
        """A call of ``entry`` was served here: send a copy of its state to the others soon."""
        contract = entry.contract
        self._dirty.add(contract)
        if contract not in self._sending:
            task = asyncio.get_running_loop().create_task(self._send_copies(entry))
            self._sending[contract] = task

    async def _send_copies(self, entry: ServiceEntry) -> None:
        contract = entry.contract
        try:
            while contract in self._dirty:
                self._dirty.discard(contract)
                try:
                    state = await self.supervisor.state(entry.agent_id)
                except PagletError as exc:
                    log.warning("no copy of %s sent: its state is unavailable: %s", contract, exc)
                    return
                replica = Replica(self._next_version(), state, self.name)
                self.mine[contract] = replica.version
                self._save(contract)
                await self._put_peers(contract, replica)
        finally:
            del self._sending[contract]

    async def close(self) -> None:
        """Wait (bounded) for the copies being sent, then stop sending."""
        tasks = list(self._sending.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=PEER_TIMEOUT)
            for task in pending:
                task.cancel()

    # -- other hosts -----------------------------------------------------------------------

    def _peers(self, contract: str) -> list[str]:
        return [
            h.url
            for h in self.mesh.hosts()[1:]
            if h.online and contract in h.services and h.name != self.name
        ]

    async def _put_peers(self, contract: str, replica: Replica) -> None:
        path = f"{API_PREFIX}/services/{contract}/replica"

        async def one(url: str) -> None:
            try:
                client = await self.calls.client(url)
                await client.request("PUT", path, replica.to_dict(), timeout=PEER_TIMEOUT)
            except PagletError as exc:
                log.info("copy of %s not taken by %s: %s", contract, url, exc)

        await asyncio.gather(*(one(url) for url in self._peers(contract)))

    async def _ask_peers(self, contract: str) -> list[Replica]:
        path = f"{API_PREFIX}/services/{contract}/replica"

        async def one(url: str) -> Replica | None:
            with contextlib.suppress(PagletError):
                client = await self.calls.client(url)
                answer = await client.request("GET", path, timeout=PEER_TIMEOUT)
                if isinstance(answer, dict) and answer.get("replica") is not None:
                    return Replica.parse(answer["replica"])
            return None

        found = await asyncio.gather(*(one(url) for url in self._peers(contract)))
        return [r for r in found if r is not None]

    # -- the routes' side ------------------------------------------------------------------

    def receive(self, entry: ServiceEntry | None, contract: str, replica: Replica) -> bool:
        """Keep ``replica`` if it is newer than the one held; whether it was kept.

        Raises:
            ServiceNotFoundError: this host does not serve ``contract`` replicated.
        """
        if entry is None or not entry.replicate:
            raise ServiceNotFoundError(f"host {self.name} serves no replicated {contract}")
        self._seen = max(self._seen, replica.version)
        self._serving.discard(contract)  # another host serves it now
        held = self.held.get(contract)
        if held is not None and held.version >= replica.version:
            return False
        self.held[contract] = replica
        self._save(contract)
        return True

    async def answer(self, entry: ServiceEntry | None, contract: str) -> Replica | None:
        """The newest copy this host has of ``contract``'s state, for a host taking over.

        A host serving it answers with the service's state as it is now (and
        stops taking itself for the one serving it: the asker takes over).

        Raises:
            ServiceNotFoundError: this host does not serve ``contract`` replicated.
        """
        if entry is None or not entry.replicate:
            raise ServiceNotFoundError(f"host {self.name} serves no replicated {contract}")
        if contract in self._serving and self.supervisor.find(entry.agent_id) is not None:
            self._serving.discard(contract)
            state = await self.supervisor.state(entry.agent_id)
            replica = Replica(self._next_version(), state, self.name)
            self.mine[contract] = replica.version
            self._save(contract)
            return replica
        return self.held.get(contract)


def _read(path: Path) -> tuple[Replica | None, object]:
    """The copy held and the version of this host's own state, from a replica file.

    Raises:
        OSError: it cannot be read.
        RequestError: it is not what `Replicas._save` writes.
    """
    data = strict_json.loads(path.read_bytes(), f"replica file {path}")
    if not isinstance(data, dict) or set(data) != {"held", "mine"}:
        raise RequestError('a replica file is {"held", "mine"}')
    held = data["held"]
    return (None if held is None else Replica.parse(held)), data["mine"]
