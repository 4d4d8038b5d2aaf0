"""The sending side of a move: journal, hand over, settle.

The paglet's process has written its envelope into the spool and asks for it
to be sent. The sender journals the transfer (``sending``), then hands the
envelope to the target: streamed over HTTP (by ``sendfile``), or, when the
target host runs in this same process, as a file link with no copy. A large
envelope is asked to be sent while the process still writes it: the stream
starts at once, the journal row is written once the envelope is whole, and
only then does its last byte go (so every ``sending`` row has an envelope to
restore). Any envelope sent from its file (over 64 KiB) goes the same way,
whole already: with ``--transfer-fsync`` its row is flushed while its bytes
are on their way, where before the stream waited for the flush. Then it
settles the outcome:

- the target answered with a commit: the move happened; callers are sent to
  the new host at once, then the local copy is dropped (``done``). The target's
  journal holds the commit, so ours is not written on the way;
- the target refused before committing: nothing moved (``failed``); the paglet
  goes on here and the caller gets a ``TransferError``;
- the outcome is unknown (the connection broke after the envelope may have
  arrived): the sender asks the target to abort the transfer, which answers
  ``committed`` or ``aborted`` for sure. If the target cannot be asked, the
  transfer is ``in_doubt``: the local paglet stops (it must not run twice) and
  its envelope stays, until the target can be asked again; then the paglet
  either runs here again or is known to run there. Never both, never neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from paglets.byvalue.refs import parse_code_ref
from paglets.byvalue.shipping import ship_code
from paglets.core.errors import (
    HostNotFoundError,
    PagletError,
    StorageError,
    TransferError,
    error_from_wire,
)
from paglets.core.events import EventKind
from paglets.movement.faults import crash_point
from paglets.persistence.records import TransferPhase, TransferRecord, TransferRole
from paglets.transport.filebody import CHUNK, FileBody, GrowingFile
from paglets.wire.envelope import MEDIA_TYPE
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from paglets.config import HostConfig
    from paglets.core.movement import TransferTicket
    from paglets.mesh.service import MeshService
    from paglets.movement.target import Receiver
    from paglets.persistence.events import EventLog
    from paglets.persistence.store import AsyncStore, Store
    from paglets.runtime.supervisor import Supervisor
    from paglets.wire.mesh import HostRecord

log = logging.getLogger(__name__)

TRANSFER_HEADER = "X-Paglets-Transfer"
MESH_HEADER = "X-Paglets-Mesh-Version"
# In-process hosts by URL: a move between two of them is a file link, not HTTP.
LOCAL_RECEIVERS: dict[str, Receiver] = {}


class _Unsure(Exception):  # noqa: N818 - internal signal
    """The envelope may have reached the target; only asking it can tell."""


class Sender:
    """See the module docstring."""

    def __init__(
        self,
        *,
        config: HostConfig,
        supervisor: Supervisor,
        mesh: MeshService,
        store: Callable[[], AsyncStore],
        events: EventLog,
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.mesh = mesh
        self._store = store
        self.events = events
        self._session = session
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.settling: set[asyncio.Task[None]] = set()
        self._tidying: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Sender {self.config.name} settling={len(self.settling)}>"

    # -- the move -------------------------------------------------------------------

    async def send(
        self,
        *,
        agent_id: str,
        new_id: str,
        transfer_id: str,
        kind: str,
        target: str,
        envelope: Path,
        ticket: TransferTicket,
        body: bytes | None = None,
        growing: GrowingFile | None = None,
    ) -> dict[str, Any]:
        """Hand the envelope to ``target``; returns where the paglet (or copy) runs.

        ``body`` is the envelope's content when the caller has it in memory
        already (a small one); the file is still what is kept and settled.
        ``growing`` is the envelope while the paglet's process still writes it
        (a large one): it is sent as it grows, and ``envelope`` is where it
        will be once whole. Whatever happens, nothing is dropped, settled or
        answered before the writing ended.

        Raises:
            TransferError: the move did not happen, or its outcome is not known yet.
        """
        try:
            record = self._target(target, ticket)
            await self._proven(record)
            await self._ship_code(record, agent_id)
        except TransferError:
            await discard_envelope(envelope, growing)
            raise
        row = TransferRecord(
            transfer_id,
            TransferRole.SOURCE,
            new_id,
            kind,
            TransferPhase.SENDING,
            peer=record.url,
            envelope=str(envelope),
            detail={
                "from_agent": agent_id,
                "host": record.name,
                "class_path": self.supervisor.get(agent_id).class_path,
            },
        )
        if growing is None:
            try:
                await self._journal(row)
            except TransferError:
                # Not journaled, so never sent: the envelope must go too, or the next
                # start would take it for the paglet's latest state.
                _drop(envelope)
                raise
            crash_point("source.before_send")
            handing = self._hand_over(record.url, transfer_id, envelope, ticket, body=body)
        else:
            handing = self._hand_over_growing(row, record.url, envelope, ticket, growing)
        try:
            answer = await asyncio.wait_for(handing, ticket.timeout)
        except TransferError as exc:
            await self._failed(transfer_id, agent_id, envelope, str(exc), growing)
            raise
        except Exception as exc:  # noqa: BLE001 - anything else: it may have arrived
            # (a broken connection, a timeout, an answer that is not ours, a bug),
            # unless its last byte never went
            if growing is not None and not growing.released:
                why = await growing.settled() or exc
                await self._failed(transfer_id, agent_id, envelope, str(why), growing)
                raise TransferError(
                    f"the {kind} of paglet {agent_id} to {record.name} failed: {why}; it stays here"
                ) from None
            settled = await self._settle(transfer_id, new_id, record.url, str(exc) or "timed out")
            if settled is None:
                await self._in_doubt(transfer_id, agent_id, kind, record.url, envelope)
                raise TransferError(
                    f"the {kind} of paglet {agent_id} to {record.name} may or may not have "
                    "happened (the target stopped answering); the paglet is held until "
                    "the target can tell, then it runs there or here"
                ) from None
            if settled.get("aborted"):
                await self._failed(transfer_id, agent_id, envelope, "the target never got it")
                raise TransferError(
                    f"the {kind} of paglet {agent_id} to {record.name} failed: {exc}; it stays here"
                ) from None
            answer = settled
        await self._committed(transfer_id, agent_id, kind, answer, envelope)
        return answer

    def _target(self, target: str, ticket: TransferTicket) -> HostRecord:
        """The host to move to, by name or URL, if it meets the ticket.

        Raises:
            TransferError: it is not known, cannot take paglets, or lacks what the ticket asks.
        """
        try:
            record = self.mesh.movement_target(target)
        except HostNotFoundError as exc:
            raise TransferError(f"{exc}; the paglet stays here") from None
        lacks = ticket.unmet(record)
        if lacks:
            raise TransferError(
                f"host {record.name} does not meet the transfer ticket: it lacks {'; '.join(lacks)}"
            )
        return record

    async def _proven(self, record: HostRecord) -> None:
        """With a key, send a paglet (and the key) only to a URL that proved it holds it.

        Raises:
            TransferError: the target did not prove it (`MeshService.prove`).
        """
        if self.config.api_key and not await self.mesh.prove(record.url):
            raise TransferError(
                f"host {record.name} at {record.url} did not prove that it holds the mesh key, "
                "so nothing is sent there; the paglet stays here"
            )

    async def _ship_code(self, record: HostRecord, agent_id: str) -> None:
        """Send the target the code of a paglet shipped by value, before its envelope.

        Sent every time (a few KiB; the target keeps one copy): a target that lost
        its copy, or stopped trusting code by value, is then told at once.

        Raises:
            TransferError: the target does not take it (it does not trust code by
                value) or cannot be reached; nothing was sent.
        """
        ref = parse_code_ref(self.supervisor.get(agent_id).class_path)
        if ref is None:
            return
        code = await self.supervisor.code.code_for(ref)
        local = LOCAL_RECEIVERS.get(record.url)
        try:
            if local is not None:
                await local.supervisor.code.put(ref.sha256, code)
            else:
                await ship_code(self._session(), record.url, ref, code, self._headers)
        except PagletError as exc:
            raise TransferError(
                f"host {record.name} did not take the code of {ref.class_path}: {exc}; "
                "the paglet stays here"
            ) from None

    async def _journal(self, row: TransferRecord) -> None:
        """Write the ``sending`` row: from now on the target may commit.

        Raises:
            TransferError: the journal cannot be written.
        """
        try:
            await self._store().begin_source(row)
        except StorageError as exc:
            raise TransferError(
                f"cannot journal the {row.kind}: {exc}; the paglet stays here"
            ) from None

    async def _hand_over_growing(
        self,
        row: TransferRecord,
        url: str,
        envelope: Path,
        ticket: TransferTicket,
        growing: GrowingFile,
    ) -> dict[str, Any]:
        """Send an envelope while it is written; journal it once whole, then let it go.

        The journal row is written only for a whole envelope, so a host that
        restarts finds every ``sending`` row with an envelope it can restore.
        """
        handing = asyncio.ensure_future(
            self._hand_over(url, row.transfer_id, envelope, ticket, growing=growing)
        )
        try:
            if await growing.settled() is None and not handing.done():
                try:
                    await self._journal(row)
                except TransferError as exc:
                    growing.failed(exc)
                    raise
                # The target holds some of the envelope, never its last byte yet.
                crash_point("source.before_send")
                crash_point("source.mid_stream")
                growing.release()
            return await handing
        finally:
            if not handing.done():
                handing.cancel()
                await asyncio.wait([handing])
            if not handing.cancelled():
                handing.exception()  # retrieved; what it raised is raised above

    async def _hand_over(
        self,
        url: str,
        transfer_id: str,
        envelope: Path,
        ticket: TransferTicket,
        *,
        body: bytes | None = None,
        growing: GrowingFile | None = None,
    ) -> dict[str, Any]:
        local = LOCAL_RECEIVERS.get(url)
        if local is not None:
            return await self._hand_over_here(local, url, transfer_id, envelope, growing)
        reached = False
        last: Exception | None = None
        for attempt in range(ticket.retries + 1):
            if attempt:
                await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
            try:
                return await self._post(url, transfer_id, envelope, body, growing)
            except aiohttp.ClientConnectorError as exc:
                last = exc  # never connected: this attempt cannot have arrived
            except (aiohttp.ClientError, OSError) as exc:
                if growing is not None and growing.held is not None:
                    # its last byte never went: the target cannot have it
                    raise TransferError(f"{growing.held}; the paglet stays here") from None
                reached, last = True, exc
        if reached:
            raise _Unsure(f"the connection to {url} broke: {last}")
        raise TransferError(f"cannot reach {url}: {last}; the paglet stays here")

    @staticmethod
    async def _hand_over_here(
        local: Receiver, url: str, transfer_id: str, envelope: Path, growing: GrowingFile | None
    ) -> dict[str, Any]:
        """To a host in this process: the envelope file is linked into its inbox, once whole."""
        if growing is not None:
            try:
                await growing.wait_released()
            except Exception as exc:  # noqa: BLE001 - what stopped it, as the reason
                raise TransferError(f"{exc}; the paglet stays here") from None
        try:
            return await local.receive_file(transfer_id, envelope)
        except TransferError:
            raise
        except PagletError as exc:
            raise TransferError(f"host at {url} refused the paglet: {exc}") from None

    async def _post(
        self,
        url: str,
        transfer_id: str,
        envelope: Path,
        body: bytes | None,
        growing: GrowingFile | None,
    ) -> dict[str, Any]:
        headers = {
            **self._headers,
            "Content-Type": MEDIA_TYPE,
            TRANSFER_HEADER: transfer_id,
            MESH_HEADER: self.config.mesh_version,
        }
        data: aiohttp.payload.Payload
        if body is not None:  # handed over inline by the paglet's process: at most 64 KiB
            data = aiohttp.payload.BytesPayload(body, content_type=MEDIA_TYPE)
        elif growing is not None:  # its crash points are in _hand_over_growing
            data = FileBody(growing, growing.size, content_type=MEDIA_TYPE)
        else:
            size = (await asyncio.to_thread(envelope.stat)).st_size
            data = FileBody(envelope, size, content_type=MEDIA_TYPE, progress=_sent)
        async with self._session().post(
            f"{url}{API_PREFIX}/transfers",
            data=data,
            headers=headers,
        ) as resp:
            try:
                payload = await resp.json(content_type=None)
            except ValueError:
                payload = None
        if resp.status >= 400:  # noqa: PLR2004
            error = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(error, dict) and isinstance(error.get("type"), str):
                # a paglets host's refusal: given before it commits anything
                exc = error_from_wire(error["type"], str(error.get("message", "")))
                raise TransferError(f"host at {url} refused the paglet: {exc}")
            # someone else's error page (a proxy between us?): nothing is certain
            raise _Unsure(f"host at {url} answered HTTP {resp.status} with a body that is not ours")
        if not isinstance(payload, dict) or "agent_id" not in payload:
            raise _Unsure(f"host at {url} answered the transfer with {payload!r:.200}")
        return payload

    # -- outcomes -------------------------------------------------------------------

    async def _failed(
        self,
        transfer_id: str,
        agent_id: str,
        envelope: Path,
        why: str,
        growing: GrowingFile | None = None,
    ) -> None:
        """The move did not happen: the paglet goes on here, and its envelope goes."""
        # First the envelope: a row left `sending` (below) is settled at the next
        # start as aborted, and must then find no stale copy to restore.
        await discard_envelope(envelope, growing)
        if growing is None or growing.released:  # else never journaled (_hand_over_growing)
            await self._record_failed(transfer_id, why)
        self.events.append(EventKind.TRANSFER_FAILED, agent_id, why, {"transfer_id": transfer_id})

    async def _record_failed(self, transfer_id: str, why: str) -> None:
        try:
            await self._store().set_phase(
                transfer_id, TransferRole.SOURCE, TransferPhase.FAILED, {"error": why}
            )
        except StorageError:
            log.exception("transfer %s failed (%s), and could not be recorded so", transfer_id, why)

    async def _committed(
        self,
        transfer_id: str,
        agent_id: str,
        kind: str,
        answer: dict[str, Any],
        envelope: Path,
    ) -> None:
        if kind != "clone":
            self.supervisor.mark_moved(agent_id, str(answer["host"]), str(answer["url"]))
        # The target's journal holds the commit; ours need not delay the answer.
        # A host that stops before the rows below are written finds the transfer
        # `sending` when it starts again, asks the target, which says `committed`,
        # and tidies up then.
        crash_point("source.after_commit")
        task = asyncio.get_running_loop().create_task(self._done(transfer_id, envelope))
        self._tidying.add(task)
        task.add_done_callback(self._tidying.discard)

    async def _done(self, transfer_id: str, envelope: Path) -> None:
        # Not flushed to disk on its own: a power cut that loses it leaves the row
        # `sending` with no envelope, as a SIGKILL between the two steps does; the
        # next start asks the target, which says `committed`, and writes it then.
        # One flush less per move, on the disk the next move's journal waits for.
        def done(store: Store) -> None:
            _drop(envelope)
            store.set_phase(transfer_id, TransferRole.SOURCE, TransferPhase.DONE, durable=False)

        await self._store().run(done)

    async def _settle(
        self, transfer_id: str, agent_id: str, url: str, why: str
    ) -> dict[str, Any] | None:
        """Ask the target whether it committed; ``None`` when it cannot be asked."""
        log.warning("transfer %s: outcome unknown (%s); asking %s", transfer_id, why, url)
        local = LOCAL_RECEIVERS.get(url)
        try:
            if local is not None:
                phase = await local.abort(transfer_id, agent_id, self.config.name)
                return self._settled(phase.value, agent_id, url)
            async with self._session().post(
                f"{url}{API_PREFIX}/transfers/{transfer_id}/abort",
                json={"agent_id": agent_id, "source": self.config.name},
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=10.0),
            ) as resp:
                payload = await resp.json(content_type=None)
            if resp.status >= 400 or not isinstance(payload, dict):  # noqa: PLR2004
                return None
            return self._settled(str(payload.get("phase")), agent_id, url, payload)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("transfer %s: cannot ask %s: %s", transfer_id, url, exc)
            return None

    @staticmethod
    def _settled(
        phase: str, agent_id: str, url: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if phase == TransferPhase.ABORTED:
            return {"aborted": True}
        payload = payload or {}
        return {"agent_id": agent_id, "host": payload.get("host", url), "url": url}

    async def _in_doubt(
        self, transfer_id: str, agent_id: str, kind: str, url: str, envelope: Path
    ) -> None:
        await self._store().set_phase(transfer_id, TransferRole.SOURCE, TransferPhase.IN_DOUBT)
        if kind != "clone":
            self.supervisor.set_in_doubt(agent_id)
        self.events.append(
            EventKind.TRANSFER_IN_DOUBT,
            agent_id,
            f"{kind} to {url}: outcome unknown; held until the target can tell",
            {"transfer_id": transfer_id, "url": url},
        )
        record = TransferRecord(
            transfer_id,
            TransferRole.SOURCE,
            agent_id,
            kind,
            TransferPhase.IN_DOUBT,
            peer=url,
            envelope=str(envelope),
            detail={"from_agent": agent_id},
        )
        self.keep_settling(record)

    def keep_settling(self, record: TransferRecord) -> None:
        """Ask the target again and again, in the background, until it can tell."""
        task = asyncio.get_running_loop().create_task(self._settle_loop(record))
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    async def _settle_loop(self, record: TransferRecord) -> None:
        delay = 0.5
        while True:
            answer = await self._settle(record.transfer_id, record.agent_id, record.peer, "retry")
            if answer is not None:
                await self.settled(record, answer)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def settled(self, record: TransferRecord, answer: dict[str, Any]) -> None:
        """Act on a settled in-doubt (or interrupted) transfer."""
        origin_id = str(record.detail.get("from_agent", record.agent_id))
        envelope = Path(record.envelope) if record.envelope else None
        store = self._store()
        if answer.get("aborted"):
            await store.set_phase(record.transfer_id, TransferRole.SOURCE, TransferPhase.FAILED)
            if record.kind != "clone" and envelope is not None and envelope.exists():
                await self.restore(origin_id, envelope)
            elif envelope is not None:
                _drop(envelope)
            detail = "the target never committed it; it runs here"
        else:
            await store.set_phase(record.transfer_id, TransferRole.SOURCE, TransferPhase.COMMITTED)
            if record.kind != "clone":
                self.supervisor.forget(origin_id)
                self.supervisor.mark_moved(origin_id, str(answer["host"]), str(answer["url"]))
            if envelope is not None:
                _drop(envelope)
            await store.set_phase(record.transfer_id, TransferRole.SOURCE, TransferPhase.DONE)
            detail = f"the target committed it; it runs at {answer['url']}"
        self.events.append(
            EventKind.TRANSFER_RESOLVED,
            origin_id,
            f"{record.kind} {record.transfer_id}: {detail}",
            {"transfer_id": record.transfer_id},
        )

    async def restore(self, agent_id: str, envelope: Path) -> None:
        """Run a paglet here again from the envelope of a move that did not happen."""
        from paglets.wire.envelope_read import EnvelopeReader  # noqa: PLC0415 - rare path

        def class_path() -> str:
            with EnvelopeReader(envelope) as reader:
                return reader.header.class_path

        self.supervisor.forget(agent_id)
        try:
            await self.supervisor.create(
                await asyncio.to_thread(class_path),
                None,
                agent_id,
                arrival="restore",
                envelope=str(envelope),
            )
        except PagletError:
            log.exception("paglet %s could not be restored from %s", agent_id, envelope)
            return
        _drop(envelope)

    async def close(self) -> None:
        """Finish tidying up settled moves; stop asking targets about unsettled ones."""
        await asyncio.gather(*self._tidying, return_exceptions=True)
        for task in self.settling:
            task.cancel()
        await asyncio.gather(*self.settling, return_exceptions=True)


def _sent(at: int) -> None:
    if at >= CHUNK:
        crash_point("source.mid_stream")


async def discard_envelope(envelope: Path, growing: GrowingFile | None) -> None:
    """Drop an envelope that will not be sent, once its writer is done with it."""
    if growing is not None:
        await growing.settled()
        _drop(growing.paths[0])  # still there if the writer died
    _drop(envelope)


def _drop(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
