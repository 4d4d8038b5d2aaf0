"""``ServiceRegistry``: a host's resident services, and the calls to services anywhere.

The host's launch file declares services (``[[services]]``). Those whose
``where`` tags this host carries are *advertised* at once, before their
paglet runs: listed by ``GET /v1/services`` and carried, as their contracts,
in this host's gossiped record, so every host of the mesh can find them.

A call names a contract (and optionally the host, ``where``):

- served here: the first call starts a lazy service's paglet (from the
  initial state of its entry), and concurrent first calls share that one
  start; an inactive service is activated by the message itself (the
  durability keeper's single-flight activation); the call is then a message
  of kind ``service.call`` to it, decoded and answered in its own process;
- served elsewhere: the call is forwarded once to an online host that
  advertises the contract; when every such host is offline, or the one
  named is, it fails at once with `ServiceUnavailableError` saying which host
  and for how long (``unavailable (host beta offline for 12 s)``).

A caller may take a lease on a service (`paglets.services.leases`): while it
holds it, calls under no lease or another are refused; requests about leases
go to the service's host as calls do.

A ``scope = "mesh"`` service runs on one host of the mesh: of the online hosts
that advertise it, the first by name. The others forward calls to it; when it
goes offline, the next one takes over with the next call, from the initial
state of its entry, or, for a service declared ``replicate = true``, from the
newest copy of its state (`paglets.services.replicas`). When the first host comes back
it serves again, from its own durable state; the other's paglet goes idle.

Idle deactivation is the durability keeper's: an entry's ``idle_after``
overrides the service class's ``deactivation_policy`` for its paglet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import (
    ConfigurationError,
    HostNotFoundError,
    HostUnavailableError,
    PagletError,
    RequestError,
    ServiceNotFoundError,
    ServiceUnavailableError,
)
from paglets.runtime.delivery import SendMode
from paglets.services.leases import Leases
from paglets.services.replicas import Replicas
from paglets.services.routes import add_routes, answer_service
from paglets.wire.records import API_PREFIX
from paglets.wire.services import SERVICE_CALL, ServiceInfo, decode_request, encode_reply

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp import web

    from paglets.calls import HostCalls
    from paglets.config import HostConfig
    from paglets.core.contract import Contract
    from paglets.launch.model import ServiceEntry
    from paglets.mesh.service import MeshService
    from paglets.runtime.supervisor import Supervisor
    from paglets.services.routes import LeaseRequest
    from paglets.wire.mesh import HostRecord

    BuiltinAnswer = Callable[[str, Any], Awaitable[Any]]
    """How the host answers a built-in contract: ``await answer(op, request)``."""

log = logging.getLogger(__name__)

FORWARD_TIMEOUT: Final = 60.0
"""Seconds a forwarded call without a timeout of its own may take."""


class ServiceRegistry:
    """See the module docstring."""

    def __init__(
        self, config: HostConfig, supervisor: Supervisor, mesh: MeshService, calls: HostCalls
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.mesh = mesh
        self.calls = calls
        self.entries: dict[str, ServiceEntry] = {
            s.contract: s for s in config.services if s.runs_on(config.tags)
        }
        self._starting: dict[str, asyncio.Future[None]] = {}
        self.builtins: dict[str, tuple[Contract, BuiltinAnswer]] = {}
        self.leases = Leases()
        for entry in self.entries.values():
            if entry.idle_after is not None:
                supervisor.idle_after[entry.agent_id] = entry.idle_after
        if self.entries:
            mesh.table.set_me(mesh.table.me.replace(services=sorted(self.entries)))
        calls.register("service.call", self._call_from_paglet)
        self.replicas = Replicas(
            config.name,
            config.home / "services" / "replicas",
            supervisor=supervisor,
            mesh=mesh,
            calls=calls,
            ensure=self._ensure,
        )
        self.replicas.load([c for c, e in self.entries.items() if e.replicate])

    def __repr__(self) -> str:
        return f"<ServiceRegistry {self.config.name} {sorted(self.entries)}>"

    def serve_here(self, contract: Contract, answer: BuiltinAnswer) -> None:
        """Answer ``contract`` in the host itself, on every host: ``await answer(op,
        request)`` takes the decoded request dataclass and returns the reply's.

        A built-in contract (``user-info.v1``, ``artifacts.v1``) has no paglet to
        start and no launch-file entry; it is called like any other, and a call
        naming another host goes to that host's own.
        """
        self.builtins[contract.name] = (contract, answer)

    def install(self, app: web.Application) -> None:
        """Add the ``/v1/services`` routes to the host's application."""
        add_routes(app, self)

    # -- this host's services --------------------------------------------------------

    async def start_eager(self) -> None:
        """At host start: start each ``eager`` service not already here.

        Raises:
            ConfigurationError: one could not start; the message names its entry.
        """
        for entry in self.entries.values():
            if entry.start != "eager" or not self._runs_here(entry):
                continue
            try:
                await self._ensure(entry)
            except PagletError as exc:
                raise ConfigurationError(
                    f"{entry.origin}: service {entry.name} ({entry.class_path}) did not start: "
                    f"{exc}; fix: correct or remove this [[services]] entry"
                ) from exc

    async def close(self) -> None:
        """The host stops: finish sending the copies of replicated services (bounded)."""
        await self.replicas.close()

    async def _ensure(self, entry: ServiceEntry, state: dict[str, Any] | None = None) -> None:
        """Start the service's paglet unless it is listed here; one start at a time.

        It starts from ``state`` if given (a replicated service's newest copy),
        else from the initial state of its entry.

        The supervisor lists a paglet it creates (``starting``) before its first
        await, so a later caller finds it and its message queues behind the
        start; the future keeps the start single-flight regardless.
        """
        if self.supervisor.find(entry.agent_id) is not None:
            return
        pending = self._starting.get(entry.contract)
        if pending is not None:
            await asyncio.shield(pending)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starting[entry.contract] = fut
        try:
            initial = dict(entry.state) if state is None else state
            await self.supervisor.create(entry.class_path, initial, entry.agent_id)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it, nobody else must
            raise
        else:
            fut.set_result(None)
            log.info("started service %s (%s)", entry.name, entry.contract)
        finally:
            del self._starting[entry.contract]

    def local(self) -> list[ServiceInfo]:
        """This host's services, with their paglets' status."""
        rows = []
        for entry in self.entries.values():
            record = self.supervisor.find(entry.agent_id)
            rows.append(
                ServiceInfo(
                    contract=entry.contract,
                    host=self.config.name,
                    name=entry.name,
                    status="advertised" if record is None else record.status.value,
                    start=entry.start,
                    scope=entry.scope,
                )
            )
        return rows

    def listing(self, *, mesh: bool) -> list[ServiceInfo]:
        """This host's services; with ``mesh``, then every other host's, as gossiped."""
        rows = self.local()
        if mesh:
            now = time.time()
            for record in self.mesh.hosts()[1:]:
                rows.extend(
                    ServiceInfo(
                        contract=contract,
                        host=record.name,
                        online=record.online,
                        offline_for=None if record.online else _age(record, now),
                    )
                    for contract in record.services
                )
        return rows

    # -- calls -------------------------------------------------------------------------

    async def call(
        self,
        contract: str,
        op: str,
        request: dict[str, Any],
        *,
        where: str | None = None,
        forwarded: bool = False,
        timeout: float | None = None,
        lease: str | None = None,
    ) -> Any:
        """Call ``op`` of the service of ``contract``: here, on ``where``, or where it is.

        Returns the reply's JSON form.

        Raises:
            ServiceNotFoundError: no host (or not ``where``) serves ``contract``.
            ServiceUnavailableError: the hosts that serve it are offline or unreachable.
            ServiceLeasedError: another caller holds a lease on it, or ``lease`` lapsed.
        """
        builtin = self.builtins.get(contract)
        if builtin is not None and (where is None or forwarded or self.calls.is_here(where)):
            self.leases.check(contract, lease)
            operation, decoded = decode_request(builtin[0], op, request)
            return encode_reply(builtin[0], operation, await builtin[1](op, decoded))
        entry = self._served_here(contract, where, forwarded=forwarded)
        if entry is not None:
            self.leases.check(contract, lease)
            return await self._local(entry, op, request, timeout)
        self.replicas.not_serving(contract)
        body = {"op": op, "request": request, "timeout": timeout, "lease": lease}
        wait = (timeout if timeout is not None else FORWARD_TIMEOUT) + 5.0
        return (await self._forward(contract, where, "calls", body, wait))["reply"]

    async def lease(self, contract: str, req: LeaseRequest) -> dict[str, Any]:
        """Take, renew or release a lease on the service of ``contract`` (where it is).

        Raises:
            ServiceLeasedError: another caller holds one, or the one named lapsed.
            ServiceNotFoundError, ServiceUnavailableError: as for `call`.
        """
        entry = self._served_here(contract, req.where, forwarded=req.forwarded)
        if entry is None:
            body = {"action": req.action, "seconds": req.seconds or None, "lease": req.lease}
            answer: dict[str, Any] = await self._forward(
                contract, req.where, "lease", body, FORWARD_TIMEOUT
            )
            return answer
        host = self.config.name
        if req.action == "release":
            assert req.lease is not None  # noqa: S101 - parse_lease checked it
            return {"released": self.leases.release(contract, req.lease), "host": host}
        held = self.leases.take(contract, req.seconds, req.lease)
        return {"lease": held.lease_id, "host": host, "expires_in": self.leases.remaining(held)}

    def _served_here(
        self, contract: str, where: str | None, *, forwarded: bool
    ) -> ServiceEntry | None:
        """The entry of ``contract`` if this host is to serve the request, else None.

        Raises:
            ServiceNotFoundError: it was forwarded here, or names this host, and
                this host does not serve the contract.
        """
        entry = self.entries.get(contract)
        here = where is None or self.calls.is_here(where)
        if entry is not None and here:
            if where is None and not forwarded and not self._runs_here(entry):
                return None  # a mesh service of another host: forwarded to it
            return entry
        if forwarded or (where is not None and here):
            served = ", ".join(sorted(self.entries)) or "none"
            raise ServiceNotFoundError(
                f"host {self.config.name} serves no {contract} (it serves: {served}); "
                "declare it in that host's launch.toml [[services]]"
            )
        return None

    def _runs_here(self, entry: ServiceEntry) -> bool:
        """Whether this host runs ``entry`` now: a host service always; a mesh service
        when this host comes first by name of the online hosts that advertise it."""
        if entry.scope != "mesh":
            return True
        contract = entry.contract
        names = [h.name for h in self.mesh.hosts() if h.online and contract in h.services]
        return min(names, default=self.config.name) == self.config.name

    async def _forward(
        self, contract: str, where: str | None, route: str, body: dict[str, Any], wait: float
    ) -> Any:
        """Forward a request about ``contract`` once, to the host that serves it."""
        record = self._host_for(contract, where)
        try:
            client = await self.calls.client(record.url)
            return await client.request(
                "POST",
                f"{API_PREFIX}/services/{contract}/{route}",
                {**body, "forwarded": True},
                timeout=wait,
            )
        except HostUnavailableError as exc:
            raise ServiceUnavailableError(
                f"service {contract} is unavailable (host {record.name} unreachable: {exc})"
            ) from None

    async def _local(
        self, entry: ServiceEntry, op: str, request: dict[str, Any], timeout: float | None
    ) -> Any:
        if entry.replicate:
            await self.replicas.before_serving(entry)
        await self._ensure(entry)
        try:
            return await self.supervisor.delivery.send(
                entry.agent_id,
                SERVICE_CALL,
                {"contract": entry.contract, "op": op, "request": request},
                mode=SendMode.SYNC,
                timeout=timeout,
            )
        finally:
            if entry.replicate:
                self.replicas.changed(entry)

    def _host_for(self, contract: str, where: str | None) -> HostRecord:
        """The online host to forward a call of ``contract`` to (``where`` if named)."""
        now = time.time()
        if where is not None:
            try:
                record = self.mesh.lookup(where)
            except HostNotFoundError as exc:
                raise ServiceNotFoundError(f"service {contract}: {exc}") from None
            if contract not in record.services and contract not in self.builtins:
                raise ServiceNotFoundError(
                    f"host {record.name} does not advertise {contract} "
                    f"(it advertises: {', '.join(record.services) or 'none'})"
                )
            candidates = [record]
        else:  # by name: a mesh service runs on the first online one (`_runs_here`)
            candidates = [h for h in self.mesh.hosts()[1:] if contract in h.services]
        if not candidates:
            raise ServiceNotFoundError(
                f"no host of the mesh of {self.config.name} serves {contract}; "
                "declare it in a host's launch.toml [[services]]"
            )
        for record in candidates:
            if record.online:
                return record
        record = max(candidates, key=lambda h: h.last_seen)
        raise ServiceUnavailableError(
            f"service {contract} is unavailable "
            f"(host {record.name} offline for {_age(record, now):.0f} s)"
        )

    async def _call_from_paglet(self, _agent_id: str, args: dict[str, Any]) -> Any:
        """``self.context.service(...)`` in a paglet: a call or a lease, as the routes take."""
        route, body = args.get("route"), args.get("body")
        if isinstance(body, dict) and body.get("forwarded"):
            raise RequestError("a paglet's service call is never a forwarded one")
        return await answer_service(self, str(route), args.get("contract"), body)


def _age(record: HostRecord, now: float) -> float:
    return max(0.0, now - record.last_seen)
