"""Starting child processes fast: a warm zygote, or a plain spawn as fallback.

Both spawners hand back a `ChildProcess`: the host's end of a fresh
socketpair whose other end the child serves, and a future of its exit code
(negative for a signal, as in `subprocess`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from paglets.core.errors import HostError
from paglets.runtime.channel import HostChannel, open_channel

if TYPE_CHECKING:
    from paglets.runtime.privileges import ChildUser

log = logging.getLogger(__name__)

# The largest code by value the zygote is asked to rebuild: its request is one datagram.
_MAX_WARM_CODE = 32 * 1024

SECRET_ENV_NAMES: tuple[str, ...] = ("PAGLETS_API_KEY",)


def child_environment(extra_secrets: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment children start with: the host's, without secrets.

    ``PYTHONPATH`` is set to the host's ``sys.path`` so that children import
    the same modules the host can see.
    """
    drop = set(SECRET_ENV_NAMES) | set(extra_secrets)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


@dataclass(eq=False)
class ChildProcess:
    """The host's view of one child process: its pid, channel and exit code."""

    pid: int
    channel: HostChannel
    exited: asyncio.Future[int] = field(repr=False)

    def close(self) -> None:
        """Close the host's end of the channel (the child then exits)."""
        self.channel.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` unless the child is known to have exited."""
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class Spawner(Protocol):
    """What the supervisor needs to start children."""

    async def start(self) -> None: ...

    async def spawn(self) -> ChildProcess: ...

    def warm(self, module: str) -> None:
        """Hint that children will import ``module`` (an allow-listed paglet module)."""

    def warm_code(self, class_path: str, code: bytes) -> None:
        """Hint that children will rebuild the class shipped by value ``class_path``."""

    async def close(self) -> None: ...


class ZygoteSpawner:
    """Forks children from a pre-warmed zygote process (about 2-3 ms a child)."""

    def __init__(
        self,
        *,
        preload: tuple[str, ...] = (),
        secrets: tuple[str, ...] = (),
        user: ChildUser | None = None,
    ) -> None:
        self._preload = preload
        self._secrets = secrets
        self._user = user
        self._control: socket.socket | None = None
        self._alive: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watched = False  # the loop reads the zygote's socket (start ran)
        self._ready: asyncio.Future[int] | None = None
        self._tokens = itertools.count(1)
        self._spawning: dict[
            int, tuple[asyncio.Future[tuple[int, asyncio.Future[int]]], socket.socket]
        ] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock = asyncio.Lock()
        self._warmed: set[str] = set(preload)

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc else None
        return f"<ZygoteSpawner pid={pid} children={len(self._exits)}>"

    def launch(self) -> None:
        """Start the zygote process now, without waiting for it (no event loop needed).

        It boots (imports the child runtime and the preloads) while its host
        does its own imports and opens its store; `start` then only waits for
        its ``ready``. Call it from the thread that will run the host's event
        loop: Linux ties the zygote's parent-death signal to the thread that
        forked it. Idempotent; a launched zygote is stopped by `close`.
        """
        if self._control is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        # A datagram socket shows no end-of-file when its peer dies: the
        # zygote also holds the only write end of this pipe, whose read end
        # becomes readable (EOF) the moment the zygote is gone.
        alive_r, alive_w = os.pipe()
        argv = [
            sys.executable,
            "-m",
            "paglets.runtime.zygote",
            "--fd",
            str(theirs.fileno()),
            "--alive-fd",
            str(alive_w),
        ]
        for name in self._preload:
            argv += ["--preload", name]
        if self._user is not None:
            argv += ["--user", self._user.to_arg()]
        try:
            self._proc = subprocess.Popen(
                argv,
                pass_fds=[theirs.fileno(), alive_w],
                env=child_environment(self._secrets),
            )
        except BaseException:
            ours.close()
            os.close(alive_r)
            raise
        finally:
            theirs.close()
            os.close(alive_w)
        ours.setblocking(False)  # noqa: FBT003 - the socket API
        self._control = ours
        self._alive = alive_r

    async def start(self) -> None:
        """Launch the zygote unless `launch` did already, and wait until it is ready."""
        async with self._start_lock:
            if self._watched:
                return
            loop = self._loop = asyncio.get_running_loop()
            # Popen runs on the loop thread: see launch.
            self.launch()
            assert self._control is not None  # noqa: S101 - launch opened it
            assert self._alive is not None  # noqa: S101 - launch opened it
            self._ready = loop.create_future()
            # The zygote's "ready" datagram waits in the socket if it came first.
            loop.add_reader(self._control.fileno(), self._on_readable)
            loop.add_reader(self._alive, self._lost)
            self._watched = True
            try:
                await asyncio.wait_for(asyncio.shield(self._ready), timeout=60)
            except BaseException:
                await self.close()
                raise

    def _on_readable(self) -> None:
        assert self._control is not None  # noqa: S101 - reader exists only while open
        try:
            data = self._control.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        record: dict[str, Any] = json.loads(data)
        op = record["op"]
        if op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(record["pid"])
        elif op == "spawned":
            pid = record["pid"]
            # Registered here, not in spawn(): "exited" may be the very next datagram.
            exited = self._exits[pid] = asyncio.get_running_loop().create_future()
            waiter, _ = self._spawning.pop(record["token"], (None, None))
            if waiter is not None and not waiter.done():
                waiter.set_result((pid, exited))
            elif waiter is None:
                log.warning("zygote spawned pid %s for an abandoned request", record["pid"])
        elif op == "exited":
            fut = self._exits.pop(record["pid"], None)
            if fut is not None and not fut.done():
                fut.set_result(record["code"])

    def _lost(self) -> None:
        """The zygote is gone; its children die with it (parent-death signal)."""
        self._close_sockets()
        err = HostError("the zygote process exited; children were lost")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(err)
        for waiter, sock in self._spawning.values():
            sock.close()
            if not waiter.done():
                waiter.set_exception(err)
        self._spawning.clear()
        for fut in self._exits.values():
            if not fut.done():
                fut.set_result(-signal.SIGKILL)
        self._exits.clear()
        if self._proc is not None:
            self._proc.poll()

    def _close_sockets(self) -> None:
        """Stop watching the zygote (if `start` did) and close our ends of its sockets."""
        watched, self._watched = self._watched, False
        loop = self._loop if watched else None
        if self._control is not None:
            if loop is not None:
                loop.remove_reader(self._control.fileno())
            self._control.close()
        if self._alive is not None:
            if loop is not None:
                loop.remove_reader(self._alive)
            os.close(self._alive)
        self._control = None
        self._alive = None

    async def spawn(self) -> ChildProcess:
        if self._control is None and self._proc is not None:
            await self._reap_proc()
            self._proc = None
        if not self._watched:
            await self.start()
        assert self._control is not None  # noqa: S101 - start() opened it
        loop = asyncio.get_running_loop()
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        token = next(self._tokens)
        waiter: asyncio.Future[tuple[int, asyncio.Future[int]]] = loop.create_future()
        self._spawning[token] = (waiter, child_end)
        try:
            socket.send_fds(
                self._control,
                [json.dumps({"op": "spawn", "token": token}).encode()],
                [child_end.fileno()],
            )
        except OSError as exc:
            self._spawning.pop(token, None)
            host_end.close()
            self._lost()
            raise HostError(f"the zygote could not be reached ({exc}); retry") from None
        finally:
            child_end.close()
        try:
            pid, exited = await waiter
        except BaseException:
            host_end.close()
            raise
        return ChildProcess(pid, await open_channel(host_end), exited)

    def warm(self, module: str) -> None:
        """Have the zygote import ``module`` so later children start with it loaded."""
        if module in self._warmed or self._control is None or self._user is not None:
            return
        self._warmed.add(module)
        with contextlib.suppress(OSError):
            self._control.send(json.dumps({"op": "preload", "module": module}).encode())

    def warm_code(self, class_path: str, code: bytes) -> None:
        """Have the zygote rebuild a class shipped by value, so children start with it.

        Only code the host runs (`paglets.byvalue.store`), and small enough for one
        request to the zygote; larger code is rebuilt by each child.
        """
        if (
            class_path in self._warmed
            or self._control is None
            or self._user is not None
            or len(code) > _MAX_WARM_CODE
        ):
            return
        self._warmed.add(class_path)
        request = {"op": "preload_code", "class_path": class_path}
        request["code"] = base64.b64encode(code).decode()
        with contextlib.suppress(OSError):
            self._control.send(json.dumps(request).encode())

    async def _reap_proc(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)

    async def close(self) -> None:
        """Stop the zygote; it kills any children it still has."""
        control = self._control
        if control is not None:
            self._lost()
        await self._reap_proc()
        self._proc = None


class WarmPool:
    """Keeps ``size`` children started ahead of need, in front of another spawner.

    A pooled child has forked, set up logging and its event loop, and waits for
    its ``Init`` record; taking one costs no fork on the create path. The pool
    refills in the background ``refill_delay`` seconds after a take: a new
    child costs a fork and several milliseconds of CPU, which on a small
    machine would slow down the very start the taken child is making. An empty
    pool refills at once.
    """

    def __init__(self, inner: Spawner, size: int = 2, refill_delay: float = 0.03) -> None:
        self.inner = inner
        self.size = size
        self.refill_delay = refill_delay
        self._ready: list[ChildProcess] = []
        self._refill: asyncio.Task[None] | None = None
        self._later: asyncio.TimerHandle | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<WarmPool ready={len(self._ready)}/{self.size} {self.inner!r}>"

    async def start(self) -> None:
        await self.inner.start()
        self._schedule_refill()

    def _schedule_refill(self) -> None:
        self._later = None
        if self._closing or self.size <= 0:
            return
        if self._refill is None or self._refill.done():
            self._refill = asyncio.get_running_loop().create_task(self._fill())

    def _refill_soon(self) -> None:
        if not self._ready:
            self._schedule_refill()
        elif self._later is None:
            self._later = asyncio.get_running_loop().call_later(
                self.refill_delay, self._schedule_refill
            )

    async def _fill(self) -> None:
        while not self._closing and len(self._ready) < self.size:
            try:
                child = await self.inner.spawn()
            except HostError:
                log.exception("could not pre-start a child")
                return
            if self.closing:
                _discard(child)
                return
            child.exited.add_done_callback(partial(self._forget, child))
            self._ready.append(child)

    @property
    def ready(self) -> int:
        """How many started children wait in the pool."""
        return len(self._ready)

    @property
    def closing(self) -> bool:
        return self._closing

    def _forget(self, child: ChildProcess, _exited: object = None) -> None:
        if child in self._ready:
            self._ready.remove(child)
            child.close()

    def warm(self, module: str) -> None:
        self.inner.warm(module)

    def warm_code(self, class_path: str, code: bytes) -> None:
        self.inner.warm_code(class_path, code)

    async def spawn(self) -> ChildProcess:
        while self._ready:
            child = self._ready.pop(0)
            if not child.exited.done():
                self._refill_soon()
                return child
        child = await self.inner.spawn()
        self._schedule_refill()
        return child

    async def close(self) -> None:
        self._closing = True
        if self._later is not None:
            self._later.cancel()
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        for child in self._ready:
            _discard(child)
        self._ready.clear()
        await self.inner.close()


def _discard(child: ChildProcess) -> None:
    child.close()
    child.kill()


class SubprocessSpawner:
    """Starts each child as a fresh interpreter: slow (~100+ ms), works anywhere."""

    def __init__(self, *, secrets: tuple[str, ...] = (), user: ChildUser | None = None) -> None:
        self._secrets = secrets
        self._user = user
        self._procs: set[asyncio.subprocess.Process] = set()

    def __repr__(self) -> str:
        return f"<SubprocessSpawner children={len(self._procs)}>"

    async def start(self) -> None:
        return

    def warm(self, module: str) -> None:
        del module  # each child is a fresh interpreter: nothing to warm

    def warm_code(self, class_path: str, code: bytes) -> None:
        del class_path, code  # as warm

    async def spawn(self) -> ChildProcess:
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        code = (
            "import socket, sys; from paglets.runtime.child import run_child; "
            "run_child(socket.socket(fileno=int(sys.argv[1])))"
        )
        user = self._user
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                code,
                str(child_end.fileno()),
                pass_fds=[child_end.fileno()],
                env=child_environment(self._secrets),
                start_new_session=True,
                user=None if user is None else user.uid,
                group=None if user is None else user.gid,
                extra_groups=None if user is None else list(user.groups),
            )
        finally:
            child_end.close()
        self._procs.add(proc)
        exited = asyncio.ensure_future(self._wait(proc))
        return ChildProcess(proc.pid, await open_channel(host_end), exited)

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        try:
            return await proc.wait()
        finally:
            self._procs.discard(proc)

    async def close(self) -> None:
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in list(self._procs):
            await proc.wait()
