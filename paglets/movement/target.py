"""The receiving side of a move: check, store, commit, start.

An arriving envelope is checked from its header alone (class allowed here,
ticket met, id free, no file registrations) before the rest is read; then it is
streamed to a file in the host's inbox and checked whole in a child process
(`verify`: the class, its state, its files), the transfer is committed in the
journal, and only then is the paglet started from the file (``on_arrival`` or
``on_clone``), in the child that checked it. An envelope that could never start
is refused before the commit, so its source keeps the paglet.

After the commit the move has happened whatever comes next: a failure to start
is logged (``transfer.start_failed``), the envelope stays, and the host tries
again when it restarts.

Flushes, with ``--transfer-fsync``. A move happens when the target's journal
row commits, so every flush the row depends on comes before it, and nothing
after it may be needed to find the paglet again after a power cut:

- the source's ``sending`` row (`paglets.movement.source`) must be on disk
  before the target can commit: without it, a source restarted after a power
  cut would run the paglet again from its spool envelope or its checkpoint
  while it runs here too. It stays; for an envelope sent from its file the
  stream starts while the row is flushed, and only the last byte waits for it;
- this host's commit row must be on disk before the source is answered (which
  drops its envelope), or a power cut here leaves no copy. It stays;
- the envelope's bytes and name must be on disk before that row. An envelope
  of up to 64 KiB rides in the row itself, so the row's one flush covers it
  (the file is rebuilt from the row if it was lost). A larger one is flushed
  (file, then directory) while a child checks it; the commit waits for both;
- once the paglet runs, the keeper (`paglets.durability`) makes the envelope
  its checkpoint by a hard link and flushes it before its row names it. For an
  envelope flushed here before the commit only the link's directory is flushed
  there now, not the file a second time: its bytes have not changed since.
  That is the one flush less; the two journal rows of an empty hop cannot go.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import shutil
from functools import partial
from typing import TYPE_CHECKING, Any

from paglets.byvalue.refs import parse_code_ref
from paglets.core.errors import EnvelopeError, PagletError, RequestError, TransferError
from paglets.core.events import EventKind
from paglets.core.movement import ArrivalMode, TransferTicket
from paglets.movement.faults import crash_point
from paglets.movement.limits import InboundGate, InboundLimits
from paglets.persistence.checkpoints import written_after
from paglets.persistence.files import fsync_dir, fsync_file
from paglets.persistence.paths import under
from paglets.persistence.records import TransferPhase, TransferRecord, TransferRole
from paglets.runtime.verify import discard, verify_arrival
from paglets.wire.envelope import INLINE_MAX, EnvelopeHeader
from paglets.wire.envelope_read import EnvelopeReader
from paglets.wire.envelope_receive import receive_envelope
from paglets.wire.landing import land_small

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path
    from typing import Protocol

    from paglets.persistence.events import EventLog
    from paglets.persistence.store import AsyncStore, Store
    from paglets.runtime.spawner import ChildProcess
    from paglets.runtime.supervisor import Supervisor
    from paglets.wire.mesh import HostRecord
    from paglets.wire.modules import ModulePolicy

    class Commit(Protocol):
        """Check the envelope at ``at`` (or at the landing path), then journal the
        arrival, running ``write`` first in the same trip (see `_commit`).
        ``durable``, flushing the file to disk, runs while it is checked."""

        async def __call__(
            self,
            header: EnvelopeHeader,
            write: Callable[[], None] | None = None,
            body: bytes | None = None,
            at: Path | None = None,
            durable: Awaitable[None] | None = None,
        ) -> None: ...

    # land(path, commit): put the envelope at ``path``, committing it or leaving that to us
    Land = Callable[[Path, Commit], Awaitable[EnvelopeHeader]]

log = logging.getLogger(__name__)

KINDS = ("dispatch", "retract", "clone")
BODY = "body"  # a small arrival's envelope in its journal row (base64), with fsync on


class Receiver:
    """See the module docstring."""

    def __init__(
        self,
        *,
        supervisor: Supervisor,
        store: Callable[[], AsyncStore],
        events: EventLog,
        policy: ModulePolicy,
        me: Callable[[], HostRecord],
        inbox: Path,
        fsync: bool,
        limits: InboundLimits | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.gate = InboundGate(limits or InboundLimits())
        self._store = store
        self.events = events
        self.policy = policy
        self.me = me
        self.inbox = inbox
        self.fsync = fsync
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._starting: set[asyncio.Task[str | None]] = set()
        self._inbox_made = False

    def __repr__(self) -> str:
        return f"<Receiver {self.inbox} inflight={len(self._inflight)}>"

    # -- checks -------------------------------------------------------------------

    def check(self, header: EnvelopeHeader, transfer_id: str) -> None:
        """Refuse, from the header alone, an envelope this host will not take."""
        if header.transfer_id != transfer_id:
            raise RequestError(
                f"the envelope is for transfer {header.transfer_id}, not {transfer_id}"
            )
        if header.kind not in KINDS:
            raise TransferError(f"an envelope of kind {header.kind!r} cannot arrive by transfer")
        if "files" in header.meta:
            # Registrations name host paths: they come back only from this host's own
            # checkpoints. A paglet carries its files in the manifest instead.
            raise EnvelopeError(
                "an arriving envelope may not register host files (header.meta.files); "
                "files travel in the envelope's manifest"
            )
        me = self.me()
        ref = parse_code_ref(header.class_path)
        if ref is None:
            self.policy.check(header.class_path)
            self.policy.check(header.state_class_path)
        else:  # shipped by value: the state class travels in the same code
            self.supervisor.code.check_runnable(ref)
        ticket = TransferTicket.from_dict(header.ticket or None)
        lacks = ticket.unmet(me)
        if lacks:
            raise TransferError(
                f"host {me.name} does not meet the transfer ticket: it lacks {'; '.join(lacks)}"
            )
        if ticket.arrival_mode is ArrivalMode.INACTIVE:
            raise TransferError(
                "arrival_mode 'inactive' needs deactivation, which this host does not "
                "support yet; send with arrival_mode 'active'"
            )
        try:
            self.supervisor.check_new_id(header.agent_id)
        except RequestError as exc:
            raise TransferError(f"host {me.name} refuses the paglet: {exc}") from None
        # before the commit: once committed, an arrival starts here whatever the count
        self.supervisor.admit(f"paglet {header.agent_id}, arriving by {header.kind},")

    async def verify(self, header: EnvelopeHeader, envelope: Path) -> ChildProcess:
        """Refuse, before it is committed, an envelope that could never start here.

        A child process imports the class and decodes the state; this host runs
        no paglet code (`paglets.runtime.verify`).

        Returns:
            The child that checked it, ready to become the paglet.
        """
        me = self.me()
        if self.supervisor.child_user is not None:  # the child must be able to read it
            await asyncio.to_thread(self.supervisor.child_user.give_file, str(envelope))
        ref = parse_code_ref(header.class_path)
        code = None if ref is None else await self.supervisor.code.code_for(ref)
        return await verify_arrival(
            self.supervisor.spawner,
            header,
            envelope,
            allowed_prefixes=list(self.policy.prefixes),
            host_name=me.name,
            host_url=me.url,
            timeout=self.supervisor.limits.start_timeout,
            code=code,
        )

    # -- receiving ----------------------------------------------------------------

    async def receive(
        self,
        transfer_id: str,
        read: Callable[[int], Awaitable[bytes]],
        length: int | None = None,
    ) -> dict[str, Any]:
        """Receive an envelope streamed by ``read``; idempotent per transfer id.

        ``length`` is the envelope's size if the request declares it. The
        envelope must come within the `gate`'s limits: not too large (checked
        from ``length``, then from its header, before its bulk is read), not
        too slowly, and not while too many others arrive.
        """

        async def land(path: Path, commit: Commit) -> EnvelopeHeader:
            async def land_and_commit(header: EnvelopeHeader, chunks: list[bytes]) -> None:
                # A small envelope: written and committed in one trip to the store. With
                # fsync on, the journal row carries one of at most INLINE_MAX bytes, so
                # one flush makes both durable: the file is the copy the paglet starts
                # from, rebuilt from the row if a power cut lost it.
                size = sum(map(len, chunks))
                body = b"".join(chunks) if self.fsync and size <= INLINE_MAX else None
                flush = self.fsync and body is None
                # checked from a file beside `path`, which the commit renames to it
                unchecked = await asyncio.to_thread(_land_unchecked, path, chunks)
                try:
                    promote = partial(_promote, unchecked, path, sync=flush)
                    # flushed to disk while a child checks it: only the commit waits for both
                    durable = asyncio.to_thread(fsync_file, unchecked) if flush else None
                    await commit(header, promote, body, at=unchecked, durable=durable)
                finally:
                    with contextlib.suppress(OSError):
                        unchecked.unlink()  # gone already, if the commit renamed it

            return await receive_envelope(
                self.gate.paced(read),
                path,
                check=lambda h: self.check(h, transfer_id),
                sync=False,  # a large one is flushed while a child checks it (`_land_and_commit`)
                max_total=self.gate.limits.max_size,
                progress=lambda: crash_point("target.mid_stream"),
                land=land_and_commit,
            )

        return await self._admitted(transfer_id, length, land, flush=self.fsync)

    async def receive_file(self, transfer_id: str, source: Path) -> dict[str, Any]:
        """Take an envelope already on this machine's disk (a same-machine move)."""

        async def land(path: Path, _commit: Commit) -> EnvelopeHeader:
            header = await asyncio.to_thread(_read_header, source)
            self.check(header, transfer_id)
            await asyncio.to_thread(_link_or_copy, source, path, fsync=self.fsync)
            return header

        size = (await asyncio.to_thread(source.stat)).st_size
        return await self._admitted(transfer_id, size, land)

    async def _admitted(
        self, transfer_id: str, length: int | None, land: Land, *, flush: bool = False
    ) -> dict[str, Any]:
        """`_receive`, once the gate lets the transfer in (a refusal reads nothing).

        ``flush``: an envelope ``land`` leaves at its place uncommitted (a large
        one, streamed there) is not flushed to disk yet; the commit does it.
        """
        admitted = contextlib.ExitStack()
        try:
            admitted.enter_context(self.gate.admit(length, joining=transfer_id in self._inflight))
        except PagletError:
            seen = await self._seen(transfer_id)  # a repeat of one committed before
            if seen is None:
                raise
            return seen
        with admitted:
            return await self._receive(transfer_id, land, flush=flush)

    async def _receive(self, transfer_id: str, land: Land, *, flush: bool) -> dict[str, Any]:
        """Land and commit, once per transfer id: a repeat gets the first answer.

        The journal is not read first: the commit finds a transfer seen before,
        and so does a refusal (the paglet it brought may run here by now).
        """
        inflight = self._inflight.get(transfer_id)
        if inflight is not None:
            return await asyncio.shield(inflight)
        try:
            return await self._single_flight(transfer_id, land, flush=flush)
        except PagletError:
            seen = await self._seen(transfer_id)
            if seen is None:
                raise
            return seen

    async def _seen(self, transfer_id: str) -> dict[str, Any] | None:
        """The answer to a transfer committed here before; ``None`` if there was none."""
        stored = await self._store().get_transfer(transfer_id, TransferRole.TARGET)
        if stored is None:
            return None
        if stored.phase is TransferPhase.ABORTED:
            raise TransferError(
                f"transfer {transfer_id} was aborted by its source; the paglet stays there"
            )
        return self._answer(stored.agent_id, started=stored.phase is TransferPhase.STARTED)

    async def _single_flight(self, transfer_id: str, land: Land, *, flush: bool) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[transfer_id] = fut
        try:
            answer = await self._land_and_commit(transfer_id, land, flush=flush)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a lone caller must not log "never retrieved"
            raise
        else:
            fut.set_result(answer)
            return answer
        finally:
            self._inflight.pop(transfer_id, None)

    async def _land_and_commit(
        self, transfer_id: str, land: Land, *, flush: bool
    ) -> dict[str, Any]:
        if not self._inbox_made:  # once: a trip to a thread less on every arrival
            await asyncio.to_thread(self.inbox.mkdir, parents=True, exist_ok=True)
            self._inbox_made = True
        path = under(self.inbox, f"{transfer_id}.in")
        outcome: list[TransferRecord | None] = []  # once committed: the earlier row, if any
        wrote: list[bool] = []  # we put a file at `path` (never touch one a refusal finds)
        checked: list[ChildProcess] = []  # the child that checked it, to become the paglet
        inline: list[bool] = []  # its journal row carries it: its file was not flushed

        def writing(write: Callable[[], None]) -> None:
            wrote.append(True)
            write()

        async def commit(
            header: EnvelopeHeader,
            write: Callable[[], None] | None = None,
            body: bytes | None = None,
            at: Path | None = None,
            durable: Awaitable[None] | None = None,
        ) -> None:
            envelope = path if at is None else at
            inline.append(body is not None)
            checked.append(await self._verified(header, envelope, durable))
            then = None if write is None else partial(writing, write)
            outcome.append(await self._commit(transfer_id, path, header, then, body))

        try:
            header = await land(path, commit)
            if not outcome:  # landed by `land` itself (streamed or linked): commit it
                wrote.append(True)
                # flushed to disk (file, then its name) while a child checks it; the
                # journal row, which makes the move happen, waits for both
                durable = asyncio.to_thread(_flush_landed, path) if flush else None
                await commit(header, durable=durable)
        except BaseException:
            for child in checked:
                await discard(child)
            if wrote and not outcome:  # landed but never committed
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        earlier = outcome[0]
        if earlier is not None:  # a repeat: answered as the first time; nothing starts again
            await discard(checked[0])
            started = earlier.phase is TransferPhase.STARTED
            if started:  # a landed copy is not needed: the paglet ran from the first
                with contextlib.suppress(OSError):
                    path.unlink()
            return self._answer(earlier.agent_id, started=started)
        crash_point("target.after_commit")
        self.events.append(
            EventKind.TRANSFER_RECEIVED,
            header.agent_id,
            f"{header.kind} from {header.source} committed",
            {"transfer_id": transfer_id, "kind": header.kind, "source": header.source},
        )
        # The move has happened: answer now and start the paglet meanwhile.
        # Messages that reach it before it is up wait for it (Supervisor.wake).
        task = asyncio.get_running_loop().create_task(
            self.start(
                transfer_id,
                header.agent_id,
                header.class_path,
                header.kind,
                path,
                prepared=checked[0],
                flushed=self.fsync and not inline[0],
            )
        )
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        await asyncio.sleep(0)  # let the start register the paglet before we answer
        return self._answer(header.agent_id, started=False)

    async def _verified(
        self, header: EnvelopeHeader, envelope: Path, durable: Awaitable[None] | None
    ) -> ChildProcess:
        """`verify`, while ``durable`` (if any) flushes the file: the commit waits for both."""
        flushing = None if durable is None else asyncio.ensure_future(durable)
        try:
            child = await self.verify(header, envelope)
        except BaseException:
            if flushing is not None:  # never left running, nor its failure unretrieved
                await asyncio.wait([flushing])
                if not flushing.cancelled():
                    flushing.exception()
            raise
        if flushing is not None:
            try:
                await flushing
            except BaseException:
                await discard(child)
                raise
        return child

    async def _commit(
        self,
        transfer_id: str,
        path: Path,
        header: EnvelopeHeader,
        write: Callable[[], None] | None = None,
        body: bytes | None = None,
    ) -> TransferRecord | None:
        """Journal the arrival, running ``write`` first in the same trip if it is new.

        ``body``, a small envelope's bytes, is kept in the row until the paglet
        has started from its file.

        Returns:
            The row of an earlier commit of this transfer, or ``None`` for a new one.
        """
        fresh: list[bool] = []

        def first_time() -> None:  # the commit runs it only for a transfer not seen before
            if write is not None:
                write()
            fresh.append(True)

        record = TransferRecord(
            transfer_id,
            TransferRole.TARGET,
            header.agent_id,
            header.kind,
            TransferPhase.COMMITTED,
            peer=header.source,
            envelope=str(path),
            detail={"class_path": header.class_path, "origin": header.origin},
        )
        if body is not None:
            record.detail[BODY] = base64.b64encode(body).decode("ascii")
        stored = await self._store().commit_target(record, before=first_time)
        return None if fresh else stored

    async def start(
        self,
        transfer_id: str,
        agent_id: str,
        class_path: str,
        kind: str,
        path: Path,
        *,
        prepared: ChildProcess | None = None,
        flushed: bool = False,
    ) -> str | None:
        """Start a committed paglet from its envelope; the error text if it failed.

        ``prepared``, the child that checked the envelope, becomes the paglet.
        ``flushed``: the envelope's bytes were flushed to disk before the commit.
        """
        try:
            await self.supervisor.create(
                class_path,
                None,
                agent_id,
                arrival=kind,
                envelope=str(path),
                prepared=prepared,
                envelope_flushed=flushed,
            )
        except BaseException as exc:
            if prepared is not None:
                prepared.close()  # if it never became the paglet, it exits now
            if not isinstance(exc, PagletError):
                raise
            log.warning("paglet %s arrived but did not start: %s", agent_id, exc)
            self.events.append(
                EventKind.TRANSFER_START_FAILED,
                agent_id,
                f"arrived but did not start: {exc}; the host retries when it restarts",
                {"transfer_id": transfer_id, "error": type(exc).__name__},
            )
            return f"{type(exc).__name__}: {exc}"

        arrived = path != self.supervisor.checkpoint_path(agent_id)

        def started(store: Store) -> None:
            # the paglet's checkpoint holds it now: the row need not carry it any more
            store.set_phase(transfer_id, TransferRole.TARGET, TransferPhase.STARTED, {BODY: None})
            if arrived:
                with contextlib.suppress(OSError):
                    path.unlink()  # a link to its checkpoint now (or renamed to it already)

        await self._store().run(started)
        return None

    def _answer(self, agent_id: str, *, started: bool, error: str | None = None) -> dict[str, Any]:
        me = self.me()
        return {
            "agent_id": agent_id,
            "host": me.name,
            "url": me.url,
            "started": started,
            "error": error,
        }

    async def abort(self, transfer_id: str, agent_id: str, source: str) -> TransferPhase:
        """The source gives up: ``ABORTED`` now, unless the transfer committed already."""
        inflight = self._inflight.get(transfer_id)
        if inflight is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(inflight)
        return await self._store().abort_target(transfer_id, agent_id, peer=source)

    async def close(self) -> None:
        """Wait for paglets still starting after their arrival (bounded by their start timeout)."""
        await asyncio.gather(*self._starting, return_exceptions=True)

    async def recover(self) -> None:
        """Start paglets committed here but not started (the host stopped in between)."""
        store = self._store()
        for row in await store.transfers(TransferRole.TARGET, (TransferPhase.COMMITTED,)):
            path = under(self.inbox, f"{row.transfer_id}.in")
            checkpoint = self.supervisor.checkpoint_path(row.agent_id)
            kind = row.kind
            if await asyncio.to_thread(written_after, checkpoint, row.created):
                # The paglet started from it and wrote a newer checkpoint before the
                # host stopped (before `started` was journaled): it resumes from that.
                with contextlib.suppress(OSError):
                    path.unlink()
                path, kind = checkpoint, "activation"
            else:
                body = row.detail.get(BODY)
                if isinstance(body, str):  # a power cut may have lost the unflushed file
                    await asyncio.to_thread(_rebuild, path, base64.b64decode(body))
            if not path.exists():
                # The host stopped after the paglet started from it, before `started`
                # was journaled: the envelope became the paglet's checkpoint then.
                path = checkpoint
            if not path.exists():
                log.error("transfer %s: the committed envelope is missing", row.transfer_id)
                continue
            await self.start(
                row.transfer_id, row.agent_id, str(row.detail.get("class_path")), kind, path
            )
        # partial envelopes of transfers that never committed
        for leftover in self.inbox.glob("*.tmp*") if self.inbox.exists() else ():
            with contextlib.suppress(OSError):
                leftover.unlink()


def _rebuild(path: Path, body: bytes) -> None:
    """Write ``body`` to ``path`` unless the file there is that envelope, whole."""
    try:
        if path.read_bytes() == body:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    log.warning("rebuilding the arrived envelope %s from the journal", path)
    land_small(path, [body], sync=True)


def _land_unchecked(path: Path, chunks: list[bytes]) -> Path:
    """Write ``chunks`` to a new temporary file beside ``path`` (not flushed: `fsync_file`)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")  # `recover` sweeps these
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.writelines(chunks)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _flush_landed(path: Path) -> None:
    """Flush the envelope at ``path`` to disk, then its name (its directory)."""
    fsync_file(path)
    fsync_dir(path.parent)


def _promote(tmp: Path, path: Path, *, sync: bool) -> None:
    """Rename the checked envelope ``tmp`` to ``path`` (and flush the directory with ``sync``)."""
    tmp.replace(path)
    if sync:
        fsync_dir(path.parent)


def _read_header(path: Path) -> EnvelopeHeader:
    with EnvelopeReader(path) as reader:
        return reader.header


def _link_or_copy(source: Path, dest: Path, *, fsync: bool) -> None:
    tmp = dest.with_suffix(".tmp-link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    if fsync:
        fsync_file(tmp)
    tmp.replace(dest)
