"""The paglet's child process: becomes one paglet and serves its mailbox.

Entry point `run_child` takes the child's end of the host channel. It
reads an ``Init`` record, imports and builds the paglet, runs the creation hook,
answers ``Ready`` and then serves messages one at a time on an asyncio loop.
A thread sends heartbeats; when the host's end goes away the child exits.

This module is preloaded by the zygote, so it imports only the stdlib,
``paglets.core``, ``paglets.wire`` and the runtime's own small modules.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import select
import socket
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from paglets.core.errors import (
    MessageNotHandledError,
    PagletError,
    PagletMovedError,
    PayloadTooLargeError,
    ProtocolError,
)
from paglets.core.events import LifecycleEvent, LifecycleKind
from paglets.core.message import NOT_HANDLED, Message
from paglets.persistence.checkpoints import header_generation, keep
from paglets.runtime import ipc
from paglets.runtime.classes import paglet_class
from paglets.runtime.context import ChildContext
from paglets.runtime.frames import FrameDecoder, encode_body, frame_bodies
from paglets.runtime.link import HostLink
from paglets.runtime.mailbox import Mailbox, MailItem
from paglets.runtime.moving import Location, Mover, run_hook
from paglets.runtime.osutil import die_with_parent, yield_cpu
from paglets.runtime.verify import VERIFY, answer_check, checked_state
from paglets.runtime.warmup import prime_child
from paglets.wire.envelope_read import EnvelopeReader
from paglets.wire.state_json import state_from_json, state_to_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from paglets.core.paglet import Paglet

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
MAX_REPLY_BYTES = 16 * 1024 * 1024
REPLY_HOLD = 0.001
"""Seconds a reply may wait, held, for the next ones before a message starts: one
of a kind handled faster than that last time (`ChildRuntime._quick`)."""
_KINDS_TIMED = 1024  # kinds whose last handling time is kept, at most
_HELD_BYTES = 256 * 1024  # replies held past this are written at once


class _Channel:
    """The child's end of the host channel: blocking writes under a lock.

    Replies to messages are held (`hold`) and written together (`flush`): the
    child's loop flushes when its mailbox is empty, before anything but a
    message of a kind that was quick last time (`ChildRuntime._quick`), and
    when the loop turns (an ``async`` handler waits); any other record written
    (a heartbeat, a host call, from any thread) takes what is held along first.
    A burst of messages is answered in a few writes, not one each.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._held: list[bytes] = []  # record bodies, in order, not written yet
        self._held_size = 0
        self.held_since = 0.0  # when the oldest one was held (0: none is)
        # Reads land in one buffer kept for the process's life: a fresh 256 KiB
        # ``bytes`` per read cost an mmap, an mremap and a munmap per message.
        self._inbox = memoryview(bytearray(_READ_SIZE))

    def recv(self, flags: int = 0) -> memoryview:
        """What the host sent, at most `_READ_SIZE` bytes, valid until the next
        read (an empty view: the host is gone)."""
        return self._inbox[: self.sock.recv_into(self._inbox, _READ_SIZE, flags)]

    def send(self, record: ipc.Record) -> None:
        """Write ``record`` now, after what is held."""
        self.send_body(encode_body(record.to_wire()))

    def send_body(self, body: bytes) -> None:
        """Write one encoded record now, after what is held, whole, whatever other
        thread writes too."""
        with self._lock:
            self._held.append(body)
            self._write()

    def hold(self, body: bytes) -> None:
        """Keep one encoded record to write with the next ones (see the class)."""
        with self._lock:
            if not self._held:
                self.held_since = time.monotonic()
            self._held.append(body)
            self._held_size += len(body)
            if self._held_size >= _HELD_BYTES:
                self._write()

    def flush(self) -> None:
        """Write what is held, if anything."""
        if self._held:
            with self._lock:
                if self._held:
                    self._write()

    def _write(self) -> None:  # under the lock
        held, self._held = self._held, []
        self._held_size = 0
        self.held_since = 0.0
        self.sock.sendall(frame_bodies(held))

    def read_one_blocking(self, decoder: FrameDecoder) -> list[dict[str, Any] | bytes]:
        while True:
            chunk = self.recv()
            if not chunk:
                os._exit(0)
            frames = decoder.feed(chunk)
            if frames:
                return frames


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class ChildRuntime:
    """Serves one paglet inside its child process."""

    def __init__(
        self,
        channel: _Channel,
        init: ipc.Init,
        backlog: list[ipc.Record],
        busy: threading.Event | None = None,
    ) -> None:
        self.channel = channel
        self.init = init
        self.mailbox = Mailbox()
        # Set while the host waits on this process (work in the mailbox or in hand):
        # the heartbeat thread beats only then, so an idle paglet costs no wake-ups.
        self.busy = busy or threading.Event()
        for record in backlog:
            self._accept(record)
        self.paglet: Paglet[Any] | None = None
        self._decoder = FrameDecoder()
        self._stopping = False
        self._run_task: asyncio.Task[None] | None = None
        self.link: HostLink | None = None
        self.mover: Mover
        self._came_from: str | None = None
        self._loop: asyncio.AbstractEventLoop
        self._took: dict[str, float] = {}  # seconds the last message of each kind took

    # -- setup ------------------------------------------------------------------

    def build(self, link: HostLink) -> Paglet[Any]:
        init = self.init
        cls = paglet_class(init)
        loop = asyncio.get_running_loop()
        self.mover = Mover(
            init=init,
            link=link,
            hops=0,
            origin=init.host_name,
            origin_url=init.host_url,
            on_departed=partial(loop.call_soon_threadsafe, self.mailbox.close),
        )
        if init.envelope is None:
            state = state_from_json(cls.State, init.state or {})
        else:
            state = self._unpack(cls, Path(init.envelope))
            if init.checkpoint and Path(init.envelope) != Path(init.checkpoint):
                # Kept as its first checkpoint here, by this process, before any hook
                # or message can write a newer one: the file has one writer at a time.
                keep(Path(init.envelope), Path(init.checkpoint))
        context = ChildContext(
            agent_id=init.agent_id,
            host_name=init.host_name,
            host_url=init.host_url,
            work_dir=Path(init.work_dir),
            file_roots=tuple(Path(root) for root in init.file_roots),
            mailbox=self.mailbox,
            link=link,
            runtime=self,
        )
        paglet: Paglet[Any] = cls(state, context)
        return paglet

    def _unpack(self, cls: type[Paglet[Any]], path: Path) -> Any:
        """The state from a movement envelope, and its files put in place."""
        checked = checked_state(path)  # this process checked it before it was committed
        with EnvelopeReader(path) as reader:
            header = reader.header
            state = reader.state(cls.State) if checked is None else checked
            files_dir = Path(self.init.files_dir)
            if header.files:
                reader.extract_files(files_dir, checked=checked is not None)
        self.mover.hops = header.hops
        self.mover.origin, self.mover.origin_url = header.origin, header.origin_url
        # a checkpoint of this host's: number the next ones after it
        self.mover.generation = max(self.mover.generation, header_generation(header))
        self.mover.arrived_files([f.name for f in header.files], files_dir)
        if header.kind == "checkpoint" and self.init.arrival == "activation":
            # Registrations (host paths) only ever come back from this host's own
            # checkpoint; an envelope that arrived registers only the files it carried.
            self.mover.restore_registrations(header.meta.get("files", []))
        self._came_from = header.source
        return state

    def _event(self, kind: LifecycleKind) -> LifecycleEvent:
        return LifecycleEvent(kind, self.init.agent_id, self.init.host_name)

    async def _arrive(self, paglet: Paglet[Any]) -> None:
        """The hook for how this process came to be: creation, arrival, clone."""
        arrival = self.init.arrival
        if arrival == "creation":
            await _call(paglet.on_creation, self._event(LifecycleKind.CREATION))
            return
        if arrival == "activation":
            try:
                await _call(paglet.on_activation, self._event(LifecycleKind.ACTIVATION))
            except Exception as exc:  # noqa: BLE001 - it is active; the host logs it
                self._note_failed("paglet.hook_failed", "on_activation", exc)
            return
        if arrival not in ("dispatch", "retract", "clone"):
            return  # restored after a failed move: it never left
        kind = LifecycleKind.CLONE if arrival == "clone" else LifecycleKind.ARRIVAL
        event = LifecycleEvent(
            kind,
            self.init.agent_id,
            self.init.host_name,
            origin=self._came_from,
            hops=self.mover.hops,
        )
        hook = paglet.on_clone if arrival == "clone" else paglet.on_arrival
        try:
            await _call(hook, event)
        except Exception as exc:  # noqa: BLE001 - the paglet arrived; the host logs it
            self._note_failed("paglet.hook_failed", f"on_{kind.value}", exc)

    # -- the loop ---------------------------------------------------------------

    async def serve(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self.link = HostLink(self.channel.send, self._pump, loop)
        try:
            self.paglet = self.build(self.link)
            await self._arrive(self.paglet)
        except BaseException as exc:  # noqa: BLE001 - reported to the host by name
            self.channel.send(ipc.InitFailed(ipc.ErrorRecord.from_exception(exc)))
            return
        loop.add_reader(self.channel.sock.fileno(), self._on_readable)
        cls = type(self.paglet)
        idle = cls.deactivation_policy
        self.channel.send(
            ipc.Ready(
                os.getpid(),
                cls.restart_policy.to_dict(),
                None if idle is None else float(idle),
            )
        )
        self._start_run(self.paglet)
        try:
            await self._serve_mailbox(self.paglet)
        finally:
            self.channel.flush()

    async def _serve_mailbox(self, paglet: Paglet[Any]) -> None:
        channel = self.channel
        while self.mover.departed is None:
            if not len(self.mailbox):
                channel.flush()  # nothing else to do now: the replies held go
            item = await self.mailbox.get()
            if item is None:
                break  # the paglet left from run() or a thread
            if channel.held_since and not self._quick(item):
                channel.flush()  # they would wait for what may take long
            if isinstance(item, ipc.Deliver):
                await self._deliver(paglet, item)
            elif isinstance(item, ipc.Stop):
                await self._stop(paglet, item)
                return
            else:
                self._control(paglet, item)
            if not len(self.mailbox):
                self.busy.clear()
        if self.mover.departed is not None:
            await self._leave(self.mover.departed)

    def _control(self, paglet: Paglet[Any], item: ipc.GetState | ipc.Move | ipc.Persist) -> None:
        """Answer a request of the host's taken between two messages."""
        if isinstance(item, ipc.GetState):
            self._reply(item.id, partial(state_to_json, paglet.state))
        elif isinstance(item, ipc.Move):
            self._reply(item.id, partial(self._move, paglet, item))
        else:
            self._reply(item.id, partial(self._persist, paglet, item))

    def _quick(self, item: MailItem) -> bool:
        """Whether replies held may wait for ``item``: a message of a kind handled
        within `REPLY_HOLD` last time, while the oldest of them is younger than that.

        A kind that suddenly takes longer holds them up until the heartbeat
        thread writes them (within a heartbeat interval).
        """
        if not isinstance(item, ipc.Deliver):
            return False
        took = self._took.get(item.kind)
        return (
            took is not None
            and took < REPLY_HOLD
            and time.monotonic() - self.channel.held_since < REPLY_HOLD
        )

    def _persist(self, paglet: Paglet[Any], item: ipc.Persist) -> dict[str, Any]:
        if item.deactivate:
            run_hook(paglet.on_deactivating, self._event(LifecycleKind.DEACTIVATING))
        path = self.mover.checkpoint(paglet, sync=item.sync)
        return {"path": str(path), "generation": self.mover.generation}

    def _move(self, paglet: Paglet[Any], item: ipc.Move) -> dict[str, str]:
        location = self.mover.move(paglet, item.kind, item.target, item.ticket)
        return {"agent_id": location.agent_id, "host": location.host, "url": location.url}

    async def _leave(self, location: Location) -> None:
        """The paglet moved on: what waited for it follows it, then the process ends."""
        if self._run_task is not None:
            self._run_task.cancel()
        moved = PagletMovedError.to(self.init.agent_id, location.host, location.url)
        for item in self.mailbox.drain():
            if isinstance(item, ipc.Deliver) and not item.reply:
                self._forward_oneway(item, location)
            elif isinstance(item, ipc.Stop):
                self._send_reply(item.id, None, None, wanted=True)
            else:
                self._send_reply(item.id, None, ipc.ErrorRecord.from_exception(moved), wanted=True)
        self.channel.flush()
        # Only the exit is left (freeing the memory of a large state takes a
        # while): it runs when no other process wants the CPU.
        yield_cpu(idle=True)

    def _forward_oneway(self, item: ipc.Deliver, location: Location) -> None:
        assert self.link is not None  # noqa: S101 - set before serving
        try:
            self.link.call(
                "paglet.send",
                agent_id=location.agent_id,
                host=location.url,
                kind=item.kind,
                args=item.args,
                mode="oneway",
            )
        except PagletError as exc:
            self._note_failed("message.failed", f"forwarding {item.kind!r}", exc)

    def _on_readable(self) -> None:
        try:
            chunk = self.channel.recv(socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            chunk = memoryview(b"")
        self._route(chunk)

    def _pump(self) -> None:
        """Block until the host sends something, and route it (see `HostLink`)."""
        try:
            chunk = self.channel.recv()
        except OSError:
            chunk = memoryview(b"")
        self._route(chunk)

    def _route(self, chunk: memoryview) -> None:
        if not chunk:
            os._exit(0)  # the host is gone: nobody is left to answer
        for frame in self._decoder.feed(chunk):
            if not isinstance(frame, dict):
                raise ProtocolError("unexpected binary frame")
            self._accept(ipc.decode(frame))

    def _accept(self, record: ipc.Record) -> None:
        if isinstance(record, ipc.Deliver | ipc.GetState | ipc.Move | ipc.Persist | ipc.Stop):
            self.mailbox.put(record)
            if not self.busy.is_set():
                self.busy.set()  # heartbeats until the mailbox is empty again
        elif isinstance(record, ipc.CallResult) and self.link is not None:
            self.link.resolve(record)
        else:
            raise ProtocolError(f"unexpected {type(record).__name__} from the host")

    def _start_run(self, paglet: Paglet[Any]) -> None:
        cls = type(paglet)
        if not cls.has_run():
            return
        if cls.run_is_async():
            self._run_task = asyncio.get_running_loop().create_task(self._run_async(paglet))
        else:
            threading.Thread(
                target=self._run_sync, args=(paglet,), name="paglet-run", daemon=True
            ).start()

    async def _run_async(self, paglet: Paglet[Any]) -> None:
        try:
            await _call(paglet.run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as an event
            self._note_run_failed(exc)

    def _run_sync(self, paglet: Paglet[Any]) -> None:
        try:
            paglet.run()
        except Exception as exc:  # noqa: BLE001 - reported as an event
            self._note_run_failed(exc)

    def _note_run_failed(self, exc: Exception) -> None:
        self._note_failed("paglet.run_failed", "run()", exc)

    def _note_failed(self, kind: str, what: str, exc: BaseException) -> None:
        record = ipc.ErrorRecord.from_exception(exc)
        try:
            self.channel.send(
                ipc.Note(
                    kind,
                    f"{what} raised {type(exc).__name__}: {exc}",
                    {"traceback": record.traceback},
                )
            )
        except OSError:
            os._exit(0)

    async def _deliver(self, paglet: Paglet[Any], item: ipc.Deliver) -> None:
        message = Message(
            item.kind, item.args, item.priority, message_id=item.message_id, sender=item.sender
        )
        started = time.monotonic()
        try:
            value = await _call(paglet.handle_message, message)
        except BaseException as exc:
            if isinstance(exc, SystemExit | KeyboardInterrupt):
                raise
            self._send_reply(item.id, None, ipc.ErrorRecord.from_exception(exc), wanted=item.reply)
            return
        finally:
            self._timed(item.kind, time.monotonic() - started)
        if value is NOT_HANDLED:
            error = ipc.ErrorRecord.from_exception(
                MessageNotHandledError(
                    f"{type(paglet).__qualname__} does not handle messages of kind {item.kind!r}"
                )
            )
            self._send_reply(item.id, None, error, wanted=item.reply)
            return
        self._send_reply(item.id, value, None, wanted=item.reply)

    def _timed(self, kind: str, took: float) -> None:
        if len(self._took) >= _KINDS_TIMED and kind not in self._took:
            self._took.clear()  # many kinds: start over rather than grow
        self._took[kind] = took

    def _reply(self, request_id: int, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
        except Exception as exc:  # noqa: BLE001 - the caller gets it by name
            self._send_reply(request_id, None, ipc.ErrorRecord.from_exception(exc), wanted=True)
            return
        self._send_reply(request_id, value, None, wanted=True)

    def _send_reply(
        self, request_id: int, value: Any, error: ipc.ErrorRecord | None, *, wanted: bool
    ) -> None:
        """Hold the reply to a request for the next write (see `_Channel`)."""
        if not wanted:
            if error is not None:
                note = ipc.Note("message.failed", error.message, {"traceback": error.traceback})
                self._hold(encode_body(note.to_wire()))
            # a bare acknowledgement: the host counts a one-way message until it is handled
            self._hold(encode_body(ipc.Reply(request_id).to_wire()))
            return
        try:
            data = encode_body(ipc.Reply(request_id, value, error).to_wire())
        except (TypeError, ValueError) as exc:
            bad = ipc.ErrorRecord.from_exception(
                TypeError(f"the reply is not JSON-serializable: {exc}")
            )
            data = encode_body(ipc.Reply(request_id, None, bad).to_wire())
        if len(data) > MAX_REPLY_BYTES:
            too_big = ipc.ErrorRecord.from_exception(
                PayloadTooLargeError(f"the reply is {len(data)} bytes; at most {MAX_REPLY_BYTES}")
            )
            data = encode_body(ipc.Reply(request_id, None, too_big).to_wire())
        self._hold(data)

    def _hold(self, body: bytes) -> None:
        if not self.channel.held_since and len(self.mailbox):
            # more to do: if a handler waits (async), the loop writes them meanwhile
            self._loop.call_soon(self.channel.flush)
        self.channel.hold(body)

    async def _stop(self, paglet: Paglet[Any], item: ipc.Stop) -> None:
        error: ipc.ErrorRecord | None = None
        if self._run_task is not None:
            self._run_task.cancel()
        try:
            if item.dispose:
                await _call(paglet.on_disposing, self._event(LifecycleKind.DISPOSING))
        except Exception as exc:  # noqa: BLE001 - reported, disposal goes on
            error = ipc.ErrorRecord.from_exception(exc)
        self._send_reply(item.id, None, error, wanted=True)


class _Heartbeat:
    """A thread, started before the ``Init`` arrives, that beats while ``busy`` is set.

    It beats only while ``busy`` is set (the host waits on this process: work in
    its mailbox or in hand), every ``interval``: the host judges a paglet hung
    only then, and an idle paglet's process does not wake up at all. Nothing
    sets ``busy`` before `start` has given the interval, so the thread sleeps
    through the paglet's start: waking it there would cost the start a thread
    switch and a handover of the GIL.
    """

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.interval = 0.0
        self.busy = threading.Event()
        threading.Thread(target=self._main, name="paglet-heartbeat", daemon=True).start()

    def start(self, interval: float) -> None:
        """Beat every ``interval`` once ``busy`` is set; call before anything sets it."""
        self.interval = interval

    def _main(self) -> None:
        beat = encode_body(ipc.Heartbeat().to_wire())
        busy = self.busy
        while True:
            busy.wait()
            time.sleep(self.interval)
            if not busy.is_set():
                continue
            try:
                self.channel.send_body(beat)  # with any replies held: none waits longer
            except OSError:
                os._exit(0)  # the host is gone


def run_child(sock: socket.socket) -> NoReturn:
    """Become the paglet described by the first record on ``sock``; never returns.

    Everything that does not depend on the paglet (logging, the event loop) is
    set up before the ``Init`` record is read, so a pre-started child waiting
    in the host's warm pool becomes its paglet with as little work as possible.
    """
    die_with_parent()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s paglet[%(process)d] %(levelname)s %(message)s"
    )
    runner = asyncio.Runner()
    runner.run(asyncio.sleep(0))  # the loop's machinery once, before a paglet waits on it
    sock.setblocking(True)  # noqa: FBT003 - the socket API
    channel = _Channel(sock)
    heartbeat = _Heartbeat(channel)
    decoder = FrameDecoder()
    waiting = not select.select([sock], [], [], 0)[0]  # in the pool: time to use
    try:
        prime_child(read=waiting)  # pages an arrival writes to, copied now rather than then
    except Exception:  # only speed is lost
        log.debug("could not prime the child", exc_info=True)
    init, records = _read_init(channel, decoder)
    if init.arrival == VERIFY:  # check an arrived envelope; once it is committed, become it
        if not answer_check(init, channel.send):
            _flush_and_exit(0)
        init, records = _read_init(channel, decoder)  # or the host closes the channel: exit
    heartbeat.start(init.heartbeat_interval)
    runtime = ChildRuntime(channel, init, records, heartbeat.busy)
    runtime._decoder = decoder  # noqa: SLF001 - keep bytes already read past the Init
    try:
        runner.run(runtime.serve())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        _flush_and_exit(code)
    except BaseException:
        log.exception("paglet %s crashed", init.agent_id)
        _flush_and_exit(1)
    _flush_and_exit(0)


def _read_init(channel: _Channel, decoder: FrameDecoder) -> tuple[ipc.Init, list[ipc.Record]]:
    """The next ``Init`` from the host, and any records that came right behind it."""
    records = [ipc.decode(f) for f in channel.read_one_blocking(decoder) if isinstance(f, dict)]
    init = records[0] if records else None
    if not isinstance(init, ipc.Init):
        os._exit(70)
    return init, records[1:]


def _flush_and_exit(code: int) -> NoReturn:
    logging.shutdown()
    os._exit(code)
