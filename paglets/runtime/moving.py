"""Movement as the paglet's own process does it: hooks, the envelope, the handoff.

`Mover` runs a dispatch, retract or clone from inside the child. It calls
the leaving hook, writes the paglet's state and registered files as one movement
envelope into the host's spool directory, and asks the host (``transfer.send``)
to hand it to the target. The host owns the envelope from then on and answers
once the target has durably committed it, or with a ``TransferError``.

A large envelope (`SEND_WHILE_WRITING`) is announced as soon as its header is
in the file, so the host streams it while the rest is written; the process
then says how the writing ended (``transfer.written``), and the host sends the
last byte only after that.

Everything here blocks the calling thread, so ``self.dispatch()`` works in
``def`` and ``async def`` handlers alike; an ``async def`` hook is run to
completion on a private event loop in a helper thread meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from paglets.core.errors import RequestError, StorageError, TransferError
from paglets.core.events import LifecycleEvent, LifecycleKind
from paglets.persistence.checkpoints import GENERATION, next_generation
from paglets.persistence.paths import under
from paglets.runtime.osutil import yield_cpu
from paglets.wire.envelope import INLINE_MAX, SMALL_MAX, EnvelopeSpec, SourceFile
from paglets.wire.envelope_write import write_envelope

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from paglets.core.paglet import Paglet
    from paglets.core.state import PagletState
    from paglets.runtime import ipc
    from paglets.runtime.link import HostLink

# An envelope at least this large (too large to be taken whole) is sent while it is
# written: its host starts streaming it once the header is in the file, and sends
# the last byte only once this process says it is whole (``transfer.written``).
SEND_WHILE_WRITING = SMALL_MAX

_LEAVING = {
    "dispatch": LifecycleKind.DISPATCHING,
    "retract": LifecycleKind.RETRACTING,
    "clone": LifecycleKind.CLONING,
}


@dataclass(frozen=True, slots=True)
class RegisteredFile:
    """A file that travels with the paglet."""

    name: str
    path: Path
    mode: str


@dataclass(frozen=True, slots=True)
class Location:
    """Where a moved or cloned paglet now is."""

    agent_id: str
    host: str
    url: str
    here: bool = False  # a dispatch to the host it is on: nothing moved

    @classmethod
    def from_wire(cls, data: Any) -> Location:
        return cls(
            str(data["agent_id"]), str(data["host"]), str(data["url"]), bool(data.get("here"))
        )


def run_hook(hook: Callable[[LifecycleEvent], Any], event: LifecycleEvent) -> None:
    """Call a hook to completion from blocking code; ``async def`` hooks included."""
    result = hook(event)
    if not inspect.isawaitable(result):
        return
    failure: list[BaseException] = []

    async def await_it() -> None:
        await result

    def main() -> None:
        try:
            asyncio.run(await_it())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=main, name=f"paglet-hook-{event.kind}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


class Mover:
    """See the module docstring."""

    def __init__(
        self,
        *,
        init: ipc.Init,
        link: HostLink,
        hops: int,
        origin: str,
        origin_url: str,
        on_departed: Callable[[], object],
    ) -> None:
        self.init = init
        self.link = link
        self.hops = hops
        self.origin = origin
        self.origin_url = origin_url
        self.files: dict[str, RegisteredFile] = {}
        self.departed: Location | None = None
        self._on_departed = on_departed
        self.generation = init.generation  # of the latest durable state it made

    def __repr__(self) -> str:
        where = f"departed to {self.departed.host}" if self.departed else "here"
        return f"<Mover {self.init.agent_id} {where} files={len(self.files)}>"

    # -- registered files -------------------------------------------------------

    def register(self, path: str | Path, name: str | None, mode: str) -> str:
        if mode not in ("copy", "move"):
            raise RequestError(f"file mode must be 'copy' or 'move', not {mode!r}")
        source = Path(path).absolute()
        if not source.is_file():
            raise RequestError(f"cannot register {source}: it is not a regular file")
        name = name or source.name
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or not name.strip() or "\0" in name:
            raise RequestError(
                f"a registered file name must be a relative path inside the paglet, not {name!r}"
            )
        self.files[name] = RegisteredFile(name, source, mode)
        return name

    def arrived_files(self, names: list[str], files_dir: Path) -> None:
        """Files that came with the paglet, in its files directory; they move on with it."""
        for name in names:
            self.files[name] = RegisteredFile(name, under(files_dir, name), "move")

    def restore_registrations(self, entries: Any) -> None:
        """Registrations kept in a checkpoint: the files stay where they were."""
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and {"name", "path", "mode"} <= entry.keys():
                name = str(entry["name"])
                self.files[name] = RegisteredFile(name, Path(entry["path"]), str(entry["mode"]))

    # -- checkpoints --------------------------------------------------------------

    def checkpoint(self, paglet: Paglet[Any], *, sync: bool) -> Path:
        """Write the paglet's state to its checkpoint file, all or nothing.

        Registered files are not copied: the checkpoint names where they are.
        Its header carries its generation, the next after the paglet's latest
        (then in `generation`).

        Raises:
            StorageError: the disk is full or cannot be written, or the paglet
                has left this host; the old checkpoint, if any, is left as it was.
        """
        path = Path(self.init.checkpoint)
        if self.departed is not None:  # this host's copy may be a newer arrival by now
            raise StorageError(
                f"paglet {self.init.agent_id} has left for {self.departed.host}; "
                "it writes its checkpoints there now"
            )
        generation = next_generation(self.generation)
        spec = EnvelopeSpec(
            agent_id=self.init.agent_id,
            class_path=self.init.class_path,
            state_class_path=_class_path(type(paglet.state)),
            transfer_id=uuid.uuid4().hex,
            kind="checkpoint",
            hops=self.hops,
            origin=self.origin,
            origin_url=self.origin_url,
            source=self.init.host_name,
            created=time.time(),
            meta={
                "files": [
                    {"name": f.name, "path": str(f.path), "mode": f.mode}
                    for f in self.files.values()
                ],
                GENERATION: generation,
            },
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_envelope(path, spec, paglet.state, (), sync=sync)
        except OSError as exc:
            raise StorageError(
                f"cannot write the checkpoint of paglet {self.init.agent_id} to {path}: "
                f"{exc.strerror or exc}; free some disk space there (or move the host's "
                "--state-dir) and try again"
            ) from None
        self.generation = generation
        return path

    # -- moving -----------------------------------------------------------------

    def move(
        self,
        paglet: Paglet[Any],
        kind: str,
        target: str | None,
        ticket: dict[str, Any] | None,
    ) -> Location:
        """Dispatch, retract or clone ``paglet``; returns where it (or its copy) is.

        Raises:
            TransferError: the move did not happen; the paglet stays here.
        """
        if self.departed is not None:
            raise TransferError(
                f"paglet {self.init.agent_id} has already left for {self.departed.host}"
            )
        agent_id = self.init.agent_id
        run_hook(
            getattr(paglet, f"on_{_LEAVING[kind].value}"),
            LifecycleEvent(_LEAVING[kind], agent_id, self.init.host_name, target=target),
        )
        transfer_id = uuid.uuid4().hex
        new_id = uuid.uuid4().hex if kind == "clone" else agent_id
        envelope = under(Path(self.init.spool_dir), f"{transfer_id}.out")
        spec = EnvelopeSpec(
            agent_id=new_id,
            class_path=self.init.class_path,
            state_class_path=_class_path(type(paglet.state)),
            transfer_id=transfer_id,
            kind=kind,
            hops=self.hops + (0 if kind == "clone" else 1),
            origin=self.origin,
            origin_url=self.origin_url,
            source=self.init.host_name,
            created=time.time(),
            ticket=ticket or {},
            meta={"from_agent": agent_id},
        )
        send = {
            "transfer_id": transfer_id,
            "kind": kind,
            "target": target,
            "envelope": str(envelope),
            "agent_id": new_id,
            "ticket": ticket,
        }
        answer = self._write_and_send(envelope, spec, paglet.state, send)
        location = Location.from_wire(answer)
        if kind == "clone":
            run_hook(
                paglet.on_cloned,
                LifecycleEvent(
                    LifecycleKind.CLONED, agent_id, self.init.host_name, clone_id=location.agent_id
                ),
            )
            return location
        if location.here:
            return location
        self.departed = location
        # What is left here is tidying up: let the paglet's new process, starting
        # now on this machine or another, have the CPU first.
        yield_cpu()
        self._on_departed()
        for registered in self.files.values():
            if registered.mode == "move":
                with contextlib.suppress(OSError):
                    registered.path.unlink()
        return location

    def _write_and_send(
        self, envelope: Path, spec: EnvelopeSpec, state: PagletState, send: dict[str, Any]
    ) -> Any:
        """Write the envelope and have the host send it; returns the host's answer."""
        files = [SourceFile(f.name, f.path, f.mode) for f in self.files.values()]
        sending: list[concurrent.futures.Future[Any]] = []

        def started(tmp: Path, size: int) -> None:
            if size >= SEND_WHILE_WRITING:  # the host follows the file as it grows
                sending.append(
                    self.link.begin("transfer.send", **send, growing=str(tmp), size=size)
                )

        try:
            _write_spooled(envelope, spec, state, files, started)
            inline = None if sending else _inline(envelope)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                envelope.unlink()
            if sending:
                self._abandon(send["transfer_id"], sending[0], exc)
            raise
        if not sending:
            return self.link.call("transfer.send", **send, body=inline)
        self.link.call("transfer.written", transfer_id=send["transfer_id"])
        return self.link.wait(sending[0], "transfer.send")

    def _abandon(
        self, transfer_id: str, sending: concurrent.futures.Future[Any], why: BaseException
    ) -> None:
        """The envelope the host is sending will never be whole: it stops, and drops it."""
        reason = str(why) or type(why).__name__
        with contextlib.suppress(Exception):
            self.link.call("transfer.written", transfer_id=transfer_id, error=reason)
        with contextlib.suppress(Exception):  # the move failed: `why` says it best
            self.link.wait(sending, "transfer.send")


def _write_spooled(
    envelope: Path,
    spec: EnvelopeSpec,
    state: PagletState,
    files: list[SourceFile],
    started: Callable[[Path, int], None],
) -> None:
    """Write the envelope; the spool directory is made by the first move on its host."""
    for first in (True, False):
        try:
            write_envelope(envelope, spec, state, files, sync=False, started=started)
        except FileNotFoundError as exc:
            if first and not envelope.parent.is_dir():
                envelope.parent.mkdir(parents=True, exist_ok=True)
                continue
            raise TransferError(  # a registered file is gone
                f"the registered file {exc.filename} is gone; put it back or stop "
                "carrying it (the paglet stays here)"
            ) from None
        return


def _inline(envelope: Path) -> str | None:
    """A small envelope's bytes (base64) for the call, so the host need not read the file."""
    with envelope.open("rb", buffering=0) as f:
        data = f.read(INLINE_MAX + 1)
    return base64.b64encode(data).decode("ascii") if len(data) <= INLINE_MAX else None


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
