"""Checking an arrived envelope in a child process, before the move is committed.

Whether an envelope can ever start needs its paglet's class: that the class
is an importable `Paglet` subclass, that its ``State`` is the state class the
header names, and that the state decodes as that class. Importing the class
runs its module's code, which the host never does (ARCHITECTURE.md, "Process
model"), so a child does it: `verify_arrival` starts one from the host's
spawner (the warm pool, when there is one) with an ``Init`` whose arrival is
`VERIFY`. The child runs `check_arrival`, which does all of the above and
checks every file of the manifest against its SHA-256, having built no paglet
and run none of its hooks, and answers ``InitFailed`` (with the reason, then
exits) or ``Ready``. A child that answered ``Ready`` waits for a second
``Init``: once the target has committed the move, that child becomes the
paglet, its class already imported, so the check costs no process of its own.
The target commits only an envelope that passed, so an envelope that could
never start is refused and stays with its source.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from paglets.core.errors import EnvelopeError, RequestError, TransferError
from paglets.runtime import ipc
from paglets.runtime.classes import paglet_class
from paglets.wire.envelope_read import EnvelopeReader

if TYPE_CHECKING:
    from collections.abc import Callable

    from paglets.core.state import PagletState
    from paglets.runtime.spawner import ChildProcess, Spawner
    from paglets.wire.envelope import EnvelopeHeader

__all__ = ["VERIFY", "answer_check", "check_arrival", "checked_state", "discard", "verify_arrival"]

# The ``Init.arrival`` of a child that only checks an envelope.
VERIFY = "verify"

# In a child: the state it checked, and the identity of the envelope file it came from.
_checked: tuple[tuple[int, int, int, int], PagletState] | None = None


def _identity(fd: int) -> tuple[int, int, int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_arrival(init: ipc.Init) -> None:
    """In the child: check that the envelope ``init.envelope`` can start as ``init.class_path``.

    Raises:
        ClassNotAllowedError: the class's module is not allowed here.
        ClassNotFoundError: the class cannot be imported here.
        RequestError: the class is not a `Paglet` subclass, or its ``State``
            is not a state class.
        EnvelopeError: the envelope names another class or state class, its
            state is not JSON, or a file fails its SHA-256.
        InvalidStateError: the state does not fit the class's ``State``.
    """
    cls = paglet_class(init)
    state_class = getattr(cls, "State", None)
    if not isinstance(state_class, type):
        raise RequestError(f"{init.class_path} has no State class")
    if init.envelope is None:
        raise RequestError("nothing to verify: the Init names no envelope")
    global _checked  # noqa: PLW0603 - one per child process
    with Path(init.envelope).open("rb") as f, EnvelopeReader(Path(init.envelope)) as reader:
        if reader.header.class_path != init.class_path:
            raise RequestError(
                f"the envelope is of class {reader.header.class_path}, not {init.class_path}"
            )
        state: PagletState = reader.state(
            state_class
        )  # the class's State is the one named, and it decodes
        reader.check_files()
        _checked = (_identity(f.fileno()), state)


def checked_state(path: Path) -> PagletState | None:
    """In the child that checked ``path``: the state it decoded then, if the file is unchanged.

    The checked file is renamed into place, never rewritten, so the same file
    (device, inode, size and time) holds the same bytes: its state need not be
    decoded again, nor its files checked again. ``None`` for any other file.
    """
    global _checked
    checked, _checked = _checked, None
    if checked is None:
        return None
    with path.open("rb") as f:
        return checked[1] if _identity(f.fileno()) == checked[0] else None


def answer_check(init: ipc.Init, send: Callable[[ipc.Record], None]) -> bool:
    """In the child: `check_arrival`, answered ``Ready`` or ``InitFailed`` (with the reason)."""
    try:
        check_arrival(init)
    except BaseException as exc:  # noqa: BLE001 - reported to the host by name
        send(ipc.InitFailed(ipc.ErrorRecord.from_exception(exc)))
        return False
    send(ipc.Ready(os.getpid()))
    return True


class _Answer:
    """What a checking child answers: ``Ready``, or why it cannot start the envelope."""

    def __init__(self, child: ChildProcess, host_name: str) -> None:
        self.host_name = host_name
        self.future: asyncio.Future[ipc.Record] = asyncio.get_running_loop().create_future()
        child.channel.attach(self.record, self.fail)
        child.exited.add_done_callback(self.exited)

    def record(self, record: ipc.Record) -> None:
        if isinstance(record, ipc.Ready | ipc.InitFailed) and not self.future.done():
            self.future.set_result(record)

    def fail(self, why: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(
                TransferError(f"host {self.host_name} could not check the arriving paglet: {why}")
            )

    def exited(self, _: asyncio.Future[int]) -> None:
        self.fail(ChildProcessError("the process checking it exited"))

    async def wait(self, timeout: float) -> None:
        """Return once the child said ``Ready``; raise what stops the envelope otherwise."""
        try:
            async with asyncio.timeout(timeout):
                record = await asyncio.shield(self.future)
        except TimeoutError:
            self.future.cancel()
            raise TransferError(
                f"host {self.host_name} could not check the arriving paglet within {timeout:g} s"
            ) from None
        if isinstance(record, ipc.InitFailed):
            exc = record.error.to_exception()  # by name, without the child's traceback
            if isinstance(exc, RequestError | EnvelopeError):
                raise type(exc)(f"host {self.host_name} cannot start the paglet: {exc.message}")
            # Any other failure of the check (the state's own code raised, the envelope
            # could not be read): the paglet could not start here either.
            raise TransferError(
                f"host {self.host_name} cannot start the paglet: "
                f"{type(exc).__name__}: {exc.message}"
            ) from None


async def verify_arrival(
    spawner: Spawner,
    header: EnvelopeHeader,
    envelope: Path,
    *,
    allowed_prefixes: list[str],
    host_name: str,
    host_url: str,
    timeout: float,
    code: bytes | None = None,
) -> ChildProcess:
    """Check in a child process that ``envelope`` (with ``header``) can start here.

    ``code`` is the pickled class of a paglet shipped by value (`paglets.byvalue`),
    which the caller made sure this host may run.

    Returns:
        The child that checked it, waiting for the ``Init`` that makes it the
        paglet (pass it to `Supervisor.create`); close it if the paglet will not
        start here after all.

    Raises:
        RequestError: (or a subclass) the class is not allowed, not importable,
            not a paglet class, or the state does not fit it; the message says why.
        EnvelopeError: the envelope names another state class than the class's
            ``State``, its state is not JSON, or a file fails its SHA-256.
        TransferError: the check failed otherwise (the state's own code raised)
            or did not finish (the child died or took longer than ``timeout``):
            the envelope is refused all the same.
    """
    child = await spawner.spawn()
    answer = _Answer(child, host_name)
    init = ipc.Init(
        agent_id=header.agent_id,
        class_path=header.class_path,
        state=None,
        host_name=host_name,
        host_url=host_url,
        work_dir="",
        allowed_prefixes=allowed_prefixes,
        heartbeat_interval=timeout,
        arrival=VERIFY,
        envelope=str(envelope),
        code=base64.b64encode(code).decode() if code is not None else "",
    )
    passed = False
    try:
        if not child.channel.send(init):
            answer.fail(ChildProcessError("the process checking it is gone"))
        await answer.wait(timeout)
        passed = True
        return child
    finally:
        child.exited.remove_done_callback(answer.exited)
        if not passed:
            await discard(child)


async def discard(child: ChildProcess) -> None:
    """Stop a child that will not become a paglet, and wait for it to end."""
    child.close()  # a waiting child exits when the host's end closes
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), 5)
    except TimeoutError:
        child.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await child.exited
