"""The zygote: a warm process that forks paglet children on request.

The host starts it once (``python -m paglets.runtime.zygote --fd N``) with a
scrubbed environment. It imports the child runtime and the configured preload
modules, then waits on a datagram socket for ``spawn`` requests, each carrying
the child's end of a fresh host channel as a passed file descriptor. A forked
child becomes its paglet at once (`paglets.runtime.child.run_child`), after
dropping to the host's ``--child-user`` if it has one (`ChildUser.become`).

The zygote reaps its children and reports each exit code to the host. When
the host's socket closes, or on SIGTERM, it kills the children it still has
and exits. It lives in its own process group, so a Ctrl-C typed at the host's
terminal reaches only the host, which then stops children in order.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

from paglets.runtime import dataclasscode
from paglets.runtime.osutil import die_with_parent
from paglets.runtime.privileges import ChildUser

log = logging.getLogger(__name__)

MAX_DATAGRAM = 64 * 1024


def _send(control: socket.socket, record: dict[str, Any]) -> None:
    control.send(json.dumps(record).encode())


class Zygote:
    """The fork loop; see the module docstring."""

    def __init__(
        self, control: socket.socket, alive_fd: int, user: ChildUser | None = None
    ) -> None:
        self.control = control
        self.alive_fd = alive_fd  # held open only; the host sees EOF when we die
        self.user = user  # children become this user; paglet modules are not preloaded
        self.children: set[int] = set()
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def serve(self) -> NoReturn:
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._shutdown(0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.selector.register(self.control, selectors.EVENT_READ)
        self.selector.register(self._wake_r, selectors.EVENT_READ)
        _send(self.control, {"op": "ready", "pid": os.getpid()})
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    self._on_request()
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    self._reap()

    def _on_request(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.control, MAX_DATAGRAM, 4)
        except ConnectionError:
            data, fds = b"", []
        if not data:
            self._shutdown(0)
        request = json.loads(data)
        if request.get("op") == "preload" and not fds:
            if self.user is None:  # never import a paglet's module as root
                _import_quietly(str(request.get("module")))
            return
        if request.get("op") == "preload_code" and not fds:
            if self.user is None:  # as for a module: code the host runs, never as root
                _rebuild_quietly(str(request.get("class_path")), str(request.get("code")))
            return
        if request.get("op") != "spawn" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            log.error("zygote: malformed request %r", request)
            return
        pid = os.fork()
        if pid == 0:
            self._become_child(fds[0])
        os.close(fds[0])
        self.children.add(pid)
        _send(self.control, {"op": "spawned", "token": request["token"], "pid": pid})

    def _become_child(self, fd: int) -> NoReturn:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        self.selector.close()
        self.control.close()
        os.close(self.alive_fd)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self.user is not None:
            self.user.become()
        from paglets.runtime.child import run_child  # noqa: PLC0415 - preloaded already

        run_child(socket.socket(fileno=fd))

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                _send(self.control, {"op": "exited", "pid": pid, "code": code})

    def _shutdown(self, code: int) -> NoReturn:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(code)


def _import_quietly(name: str) -> None:
    """Import a module children will need; a failure is left for the child to report."""
    from paglets.runtime.warmup import warm_module  # noqa: PLC0415 - preloaded already

    try:
        warm_module(importlib.import_module(name))
    except Exception:
        log.debug("zygote: could not preload %s", name, exc_info=True)
    gc.collect()
    gc.freeze()


def _rebuild_quietly(class_path: str, code: str) -> None:
    """Rebuild a class shipped by value that children will run; a failure is theirs to tell."""
    from paglets.byvalue.pickling import load_class  # noqa: PLC0415 - only hosts that use it
    from paglets.byvalue.refs import parse_code_ref  # noqa: PLC0415
    from paglets.core.paglet import Paglet  # noqa: PLC0415
    from paglets.wire.state_json import prepare  # noqa: PLC0415 - preloaded already

    try:
        ref = parse_code_ref(class_path)
        if ref is None:
            return
        cls = load_class(ref, base64.b64decode(code, validate=True), base=Paglet)
        state = getattr(cls, "State", None)
        if isinstance(state, type):
            prepare(state)
    except Exception:
        log.debug("zygote: could not rebuild %s", class_path, exc_info=True)
    gc.collect()
    gc.freeze()


def _preload(modules: list[str]) -> None:
    """Import what children need, warm it up, then freeze it: children share it unwalked.

    The collector is off meanwhile, and the runtime's dataclasses take their
    methods' code from the host's cache (`paglets.runtime.dataclasscode`): what
    this makes lives as long as the zygote, and the walks and compiles were CPU
    taken from the host booting beside it (a fifth of the zygote's boot). Both
    are as usual again after, for the zygote and the children it forks.
    """
    gc.disable()
    dataclasscode.install()
    importlib.import_module("paglets.runtime.child")
    warmup = importlib.import_module("paglets.runtime.warmup")
    try:
        warmup.warm_runtime()
    except Exception:  # only speed is lost: each child does it itself
        log.warning("zygote: could not warm the runtime up", exc_info=True)
    dataclasscode.uninstall()  # a paglet's own classes are made as anywhere else
    for name in modules:
        _import_quietly(name)
    gc.collect()
    gc.freeze()
    gc.enable()


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="paglets-zygote")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--alive-fd", type=int, required=True)
    parser.add_argument("--preload", action="append", default=[])
    parser.add_argument("--user", type=ChildUser.from_arg, default=None)
    args = parser.parse_args(argv)
    os.setpgrp()
    die_with_parent(signal.SIGTERM)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    control = socket.socket(fileno=args.fd)
    alive_fd: int = args.alive_fd
    _preload(args.preload)
    Zygote(control, alive_fd, args.user).serve()


if __name__ == "__main__":
    main()
