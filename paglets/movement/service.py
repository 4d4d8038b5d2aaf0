"""``TransferService``: the host's movement, composed.

It owns the journal (an `AsyncStore` under the host's home), one HTTP
session for envelopes, the `Sender` and the `Receiver`. It answers the
movement calls paglets make from inside (``transfer.send``,
``transfer.written``, ``transfer.retract``, ``paglet.dispose``), serves the
movement routes, and after a restart settles every transfer the journal left
unfinished.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from paglets.core.errors import (
    HostNotRunningError,
    PagletError,
    PagletNotFoundError,
    RequestError,
    TransferError,
)
from paglets.core.ids import IdKind, check_id
from paglets.core.movement import TransferTicket
from paglets.movement.faults import crash_point
from paglets.movement.limits import InboundLimits
from paglets.movement.source import LOCAL_RECEIVERS, Sender, discard_envelope
from paglets.movement.target import Receiver
from paglets.persistence.records import TransferPhase, TransferRole
from paglets.persistence.store import AsyncStore, StoreOpening
from paglets.transport.cacerts import connector
from paglets.transport.filebody import GrowingFile
from paglets.wire.envelope import INLINE_MAX, EnvelopeHeader, envelope_size, peek_header
from paglets.wire.envelope_read import EnvelopeReader, check_small
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiohttp import web

    from paglets.calls import HostCalls
    from paglets.config import HostConfig
    from paglets.mesh.service import MeshService
    from paglets.persistence.events import EventLog
    from paglets.persistence.records import TransferRecord
    from paglets.runtime.supervisor import Supervisor
    from paglets.wire.modules import ModulePolicy

log = logging.getLogger(__name__)

MOVE_KINDS = ("dispatch", "retract", "clone")


class TransferService:
    """See the module docstring."""

    def __init__(
        self,
        *,
        config: HostConfig,
        supervisor: Supervisor,
        mesh: MeshService,
        events: EventLog,
        policy: ModulePolicy,
        calls: HostCalls,
        store: StoreOpening | None = None,
    ) -> None:
        self.config = config
        self._opening = store  # the journal, opened ahead of the start (paglets-host)
        self.supervisor = supervisor
        self.mesh = mesh
        self.calls = calls
        self.events = events
        self._store: AsyncStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._urls: list[str] = []
        self._born = time.time()
        # envelopes being sent while their paglet's process still writes them
        self._growing: dict[str, tuple[str, GrowingFile]] = {}
        self.sender = Sender(
            config=config,
            supervisor=supervisor,
            mesh=mesh,
            store=self.store,
            events=events,
            session=self.session,
        )
        self.receiver = Receiver(
            supervisor=supervisor,
            store=self.store,
            events=events,
            policy=policy,
            me=lambda: mesh.table.me,
            inbox=config.home / "transfers" / "in",
            fsync=config.transfer_fsync,
            limits=InboundLimits(
                max_size=config.max_envelope_size,
                max_concurrent=config.max_transfers,
                min_rate=config.transfer_min_rate,
                grace=config.read_timeout,
            ),
        )
        calls.register("transfer.send", self._call_send)
        calls.register("transfer.written", self._call_written)
        calls.register("transfer.retract", self._call_retract)
        calls.register("paglet.dispose", self._call_dispose)

    def __repr__(self) -> str:
        return f"<TransferService {self.config.name}>"

    def store(self) -> AsyncStore:
        if self._store is None:
            raise HostNotRunningError(f"host {self.config.name} has no journal open")
        return self._store

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise HostNotRunningError(f"host {self.config.name} is not running")
        return self._session

    # -- lifecycle --------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        from paglets.movement.routes import add_routes  # noqa: PLC0415 - avoids a cycle

        add_routes(app, self)
        app.cleanup_ctx.append(self._ctx)

    async def _ctx(self, _app: web.Application) -> AsyncIterator[None]:
        cfg = self.config
        opening, self._opening = self._opening, None
        if opening is None:
            opening = StoreOpening(cfg.store_path, sync=cfg.transfer_fsync)
        self._store = await opening.result()
        if self._store.recovered_from is not None:
            log.error(
                "the journal database was unreadable; it was moved to %s and a new one started",
                self._store.recovered_from,
            )
        await self.events.attach(self._store)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
            connector=connector(self.config.client_ssl()),
        )
        try:
            yield
        finally:
            for url in self._urls:
                if LOCAL_RECEIVERS.get(url) is self.receiver:
                    del LOCAL_RECEIVERS[url]
            await self.sender.close()
            await self.receiver.close()
            await self._session.close()
            self._session = None
            await self.events.close()
            await self._store.close()
            self._store = None

    async def started(self, urls: list[str]) -> None:
        """The host listens on ``urls``: take in-process moves, and recover."""
        self._urls = [u.rstrip("/") for u in urls]
        for url in self._urls:
            LOCAL_RECEIVERS[url] = self.receiver
        await self.receiver.recover()
        await self._recover_sent()

    async def _recover_sent(self) -> None:
        """Settle what this host was sending when it stopped."""
        store = self.store()
        journaled: set[str] = set()
        for row in await store.transfers(TransferRole.SOURCE):
            journaled.add(row.transfer_id)
            if row.phase in (TransferPhase.SENDING, TransferPhase.IN_DOUBT):
                await self._resettle(row)
            elif row.phase is TransferPhase.COMMITTED:
                await self.sender.settled(row, {"host": row.detail.get("host"), "url": row.peer})
        spool = self.supervisor.spool_dir
        if not spool.exists():
            return
        await asyncio.to_thread(_sweep_unfinished, spool, self._born)
        for envelope in sorted(spool.glob("*.out")):
            if envelope.stem in journaled:
                continue
            # written by a paglet whose host died before journaling the move: the
            # move never started, and this is the paglet's latest state
            await self._restore_unsent(envelope)

    async def _resettle(self, row: TransferRecord) -> None:
        answer = await self.sender._settle(  # noqa: SLF001 - one settling path
            row.transfer_id, row.agent_id, row.peer, "recovering after a restart"
        )
        if answer is not None:
            await self.sender.settled(row, answer)
            return
        origin = str(row.detail.get("from_agent", row.agent_id))
        if row.kind != "clone":
            self.supervisor.hold_in_doubt(origin, str(row.detail.get("class_path", "")))
        await store_phase(self.store(), row, TransferPhase.IN_DOUBT)
        self.sender.keep_settling(row)

    async def _restore_unsent(self, envelope: Path) -> None:
        def header_of() -> tuple[str, str]:
            with EnvelopeReader(envelope) as reader:
                return reader.header.kind, str(reader.header.meta.get("from_agent", ""))

        try:
            kind, origin = await asyncio.to_thread(header_of)
        except Exception:  # noqa: BLE001 - a torn envelope: nothing was sent from it
            log.warning("dropping unreadable unsent envelope %s", envelope)
            await asyncio.to_thread(envelope.unlink, missing_ok=True)
            return
        if kind == "clone" or not origin:
            await asyncio.to_thread(envelope.unlink, missing_ok=True)
            return
        await self.sender.restore(origin, envelope)

    # -- operations ---------------------------------------------------------------------

    async def move(
        self, agent_id: str, kind: str, target: str | None, ticket: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Dispatch, retract or clone a paglet of this host (the proxy's call)."""
        if kind not in MOVE_KINDS:
            raise RequestError(f"a move is one of {', '.join(MOVE_KINDS)}, not {kind!r}")
        if kind != "clone" and not target:
            raise RequestError(f"a {kind} needs a target host (a name or URL)")
        TransferTicket.from_dict(ticket)  # a bad ticket is the caller's error, early
        return await self.supervisor.move(agent_id, kind, target, ticket)

    async def retract(
        self, agent_id: str, host: str, ticket: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Pull ``agent_id`` from ``host`` to this host."""
        check_id(agent_id, IdKind.AGENT)
        if self.calls.is_here(host):
            raise RequestError(f"paglet {agent_id} would be retracted from this host to itself")
        url = self.mesh.resolve(host)
        client = await self.calls.client(url)
        me = self.mesh.table.me.url
        body = {"target": me, "ticket": ticket, "kind": "retract"}
        answer: dict[str, Any] = await client.request(
            "POST", f"{API_PREFIX}/paglets/{agent_id}/move", body
        )
        return answer

    # -- calls from paglets -----------------------------------------------------------

    async def _call_send(self, agent_id: str, args: dict[str, Any]) -> dict[str, Any]:
        envelope = Path(str(args.get("envelope")))
        spool = self.supervisor.spool_dir
        if envelope.parent.resolve() != spool.resolve() or envelope.suffix != ".out":
            raise RequestError(f"a paglet may only send envelopes from {spool}")
        if args.get("growing") is not None:
            return await self._send_growing(agent_id, envelope, args)
        try:
            kind, target, ticket, new_id = self._move_args(args)
        except PagletError:
            await asyncio.to_thread(envelope.unlink, missing_ok=True)
            raise
        body, size = await self._check_envelope(
            envelope, agent_id, new_id if kind == "clone" else agent_id, args.get("body")
        )
        if kind != "clone" and self.calls.is_here(target):
            await asyncio.to_thread(envelope.unlink, missing_ok=True)
            return self._here(agent_id)
        # An envelope from the file goes as the growing ones do, whole already: its
        # stream starts while the journal row is flushed, its last byte after that.
        whole = None
        if body is None:
            whole = GrowingFile([envelope], size)
            whole.finished()
            try:
                await whole.open()
            except FileNotFoundError:
                raise RequestError(
                    f"paglet {agent_id} named an envelope that is not there"
                ) from None
        try:
            return await self.sender.send(
                agent_id=agent_id,
                new_id=new_id,
                transfer_id=str(args.get("transfer_id")),
                kind=kind,
                target=target,
                envelope=envelope,
                ticket=ticket,
                body=body,
                growing=whole,
            )
        finally:
            if whole is not None:
                whole.close()

    def _move_args(self, args: dict[str, Any]) -> tuple[str, str, TransferTicket, str]:
        kind = str(args.get("kind"))
        if kind not in MOVE_KINDS:
            raise RequestError(f"a move is one of {', '.join(MOVE_KINDS)}, not {kind!r}")
        target = str(args.get("target") or self.config.name)
        check_id(args.get("transfer_id"), IdKind.TRANSFER)
        new_id = check_id(args.get("agent_id"), IdKind.AGENT)
        return kind, target, TransferTicket.from_dict(args.get("ticket")), new_id

    def _here(self, agent_id: str) -> dict[str, Any]:
        me = self.mesh.table.me
        return {"agent_id": agent_id, "host": me.name, "url": me.url, "here": True}

    async def _send_growing(
        self, agent_id: str, envelope: Path, args: dict[str, Any]
    ) -> dict[str, Any]:
        """Send an envelope the paglet's process is still writing (a large one).

        Its process tells how the writing ended (``transfer.written``), or is
        seen to end first. Until then nothing is answered or dropped: the
        envelope is its, still.
        """
        crash_point("source.while_writing")
        transfer_id = str(args.get("transfer_id"))
        size = args.get("size")
        tmp = Path(str(args.get("growing")))
        named = (
            tmp.parent == envelope.parent
            and tmp.name.startswith(f".{envelope.name}.")
            and tmp.suffix == ".tmp"
        )
        # (a file it did not name as its own is never opened, nor removed)
        paths = [tmp, envelope] if named else [envelope]
        growing = GrowingFile(paths, size if isinstance(size, int) else 0)
        if transfer_id in self._growing:
            raise RequestError(f"transfer {transfer_id} is being sent already")
        self._growing[transfer_id] = (agent_id, growing)
        watch = asyncio.get_running_loop().create_task(self._watch_writer(agent_id, growing))
        try:
            try:
                kind, target, ticket, new_id = self._move_args(args)
                if not named or not _is_size(size):
                    raise RequestError(
                        "a growing envelope is the temporary file of the envelope it names, "
                        "with its whole size in bytes"
                    )
                await self._check_growing(
                    growing, agent_id, new_id if kind == "clone" else agent_id
                )
            except (PagletError, OSError):
                await discard_envelope(envelope, growing)
                raise
            if kind != "clone" and self.calls.is_here(target):
                await discard_envelope(envelope, growing)
                return self._here(agent_id)
            # from here on the sender settles the envelope, whatever happens
            return await self.sender.send(
                agent_id=agent_id,
                new_id=new_id,
                transfer_id=transfer_id,
                kind=kind,
                target=target,
                envelope=envelope,
                ticket=ticket,
                growing=growing,
            )
        finally:
            watch.cancel()
            del self._growing[transfer_id]
            growing.close()

    async def _watch_writer(self, agent_id: str, growing: GrowingFile) -> None:
        """A process that ends before it said how its writing ended will never say."""
        with contextlib.suppress(PagletNotFoundError):
            handle = self.supervisor.get(agent_id).handle
            if handle is not None:
                await handle.wait_ended()
        growing.failed(
            TransferError(f"paglet {agent_id} ended before its envelope was written whole")
        )

    async def _check_growing(self, growing: GrowingFile, agent_id: str, carries: str) -> None:
        """A paglet sends only itself (or its new copy) as the class it is, at the size it says."""
        try:
            await growing.open()
            header, start = await asyncio.to_thread(peek_header, growing.fd)
        except FileNotFoundError:
            raise RequestError(f"paglet {agent_id} named an envelope that is not there") from None
        if (
            header.agent_id != carries
            or header.class_path != self.supervisor.get(agent_id).class_path
        ):
            raise RequestError(
                f"paglet {agent_id} may only send itself (or its own copy), not {header.agent_id}"
            )
        if envelope_size(header, start) != growing.size:
            raise RequestError(
                f"the envelope of paglet {agent_id} is {envelope_size(header, start)} bytes "
                f"by its header, not the {growing.size} it said"
            )

    async def _call_written(self, agent_id: str, args: dict[str, Any]) -> None:
        """How the writing of an envelope being sent ended: whole, or ``error``."""
        mine = self._growing.get(str(args.get("transfer_id")))
        if mine is None or mine[0] != agent_id:
            return  # no send of this paglet's is waiting for it
        error = args.get("error")
        if error is None:
            mine[1].finished()
        else:
            mine[1].failed(
                TransferError(f"paglet {agent_id} could not write its envelope: {error}")
            )

    async def _check_envelope(
        self, envelope: Path, agent_id: str, carries: str, inline: object
    ) -> tuple[bytes | None, int]:
        """A paglet sends only itself (or its new copy) as the class it is.

        ``inline`` is the envelope's content as the paglet's process handed it
        over (base64), if small; the file stays what is kept and settled.

        An envelope not handed over inline is checked from its header and its
        size alone (`EnvelopeReader`), not read: it goes to the target from
        the file, by ``sendfile(2)``, so its bytes never pass through this
        process (read into memory and sent from there, each MiB of a 1-4 MiB
        envelope cost this host about 0.5 ms more CPU, on the move's path).

        Returns:
            The whole envelope when it came inline (sent from memory), else
            ``None`` (sent from the file); and its size.
        """
        try:
            if inline is None:
                body = None
                header, size = await asyncio.to_thread(_header_of, envelope)
            else:
                body = _decode_inline(inline)
                header, size = check_small(body), len(body)
            found_id, class_path = header.agent_id, header.class_path
        except PagletError:
            await asyncio.to_thread(envelope.unlink, missing_ok=True)
            raise
        if found_id != carries or class_path != self.supervisor.get(agent_id).class_path:
            await asyncio.to_thread(envelope.unlink, missing_ok=True)
            raise RequestError(
                f"paglet {agent_id} may only send itself (or its own copy), not {found_id}"
            )
        return body, size

    async def _call_retract(self, _agent_id: str, args: dict[str, Any]) -> dict[str, Any]:
        host = args.get("host")
        if not isinstance(host, str) or not host:
            raise RequestError("retract needs the host the paglet is on (a name or URL)")
        return await self.retract(str(args.get("agent_id")), host, args.get("ticket"))

    async def _call_dispose(self, agent_id: str, _args: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.supervisor.dispose(agent_id))
        self.sender.settling.add(task)
        task.add_done_callback(self.sender.settling.discard)


def _sweep_unfinished(spool: Path, before: float) -> None:
    """Remove envelopes half-written by paglets that died with an earlier run of the host."""
    for tmp in spool.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < before:
                tmp.unlink()


def _header_of(envelope: Path) -> tuple[EnvelopeHeader, int]:
    """The header of the envelope file, checked to be exactly one whole envelope; its size."""
    with EnvelopeReader(envelope) as reader:  # checks the size against the header
        return reader.header, envelope.stat().st_size


def _is_size(v: object) -> bool:
    return type(v) is int and v > 0


def _decode_inline(inline: object) -> bytes:
    if not isinstance(inline, str) or len(inline) > (INLINE_MAX + 2) // 3 * 4:
        raise RequestError(f"an inline envelope is base64 of at most {INLINE_MAX} bytes")
    try:
        return base64.b64decode(inline, validate=True)
    except binascii.Error as exc:
        raise RequestError(f"an inline envelope must be base64: {exc}") from None


async def store_phase(store: AsyncStore, row: TransferRecord, phase: TransferPhase) -> None:
    if row.phase is not phase:
        await store.set_phase(row.transfer_id, row.role, phase)
