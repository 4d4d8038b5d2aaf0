# ruff: noqa: PLR0912 - this paglet blocks and polls on purpose
"""Paglets that misbehave on request, for the test suite only.

`Probe` dumps its environment, eats memory, hangs, exits and writes a chosen path
when disposed: no host may allow them by default, so they live under ``tests/``
and never ship (see the package docstring).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from paglets import (
    LifecycleEvent,
    Message,
    Paglet,
    PagletState,
    RestartMode,
    RestartPolicy,
)


@dataclass
class ProbeState(PagletState):
    log: list[str] = field(default_factory=list)
    disposed_marker: str | None = None


class Probe(Paglet[ProbeState]):
    """Does what a message asks: echo, raise, exit, hang, eat memory, record order."""

    State = ProbeState

    def on_disposing(self, event: LifecycleEvent) -> None:
        if self.state.disposed_marker:
            with open(self.state.disposed_marker, "w") as fh:  # noqa: PTH123
                fh.write(event.agent_id)

    async def handle_message(self, message: Message) -> Any:  # noqa: C901, PLR0911
        kind, args = message.kind, message.args
        if kind == "echo":
            return args
        if kind == "record":
            self.state.log.append(str(args["tag"]))
            return len(self.state.log)
        if kind == "gate":
            # hold the mailbox until `count` more messages are queued behind us
            while self.context.pending_messages < int(args["count"]):
                await asyncio.sleep(0.005)
            self.state.log.append("gate")
            return None
        if kind == "raise":
            raise ValueError(args.get("text", "boom"))
        if kind == "exit":
            sys.exit(int(args.get("code", 3)))
        if kind == "os_exit":
            os._exit(int(args.get("code", 4)))
        if kind == "hang":
            time.sleep(3600)
        if kind == "sleep":
            await asyncio.sleep(float(args["seconds"]))
            return "slept"
        if kind == "block":  # busy without letting the child's loop turn
            time.sleep(float(args["seconds"]))
            return "blocked"
        if kind == "eat_memory":
            hoard = []
            for _ in range(int(args.get("chunks", 400))):
                hoard.append(bytearray(50 * 1024 * 1024))
                time.sleep(0.01)
            return len(hoard)
        if kind == "env":
            return dict(os.environ)
        if kind == "pid":
            return os.getpid()
        if kind == "modules":  # the top-level packages this process has imported
            return sorted({name.partition(".")[0] for name in sys.modules})
        if kind == "code_built":  # classes shipped by value this process has rebuilt
            from paglets.byvalue import pickling  # noqa: PLC0415

            return sorted(pickling._loaded)
        if kind == "unserializable":
            return {1, 2, 3}
        if kind == "save":
            self.checkpoint()
            return len(self.state.log)
        if kind == "hosts":
            hosts = self.context.hosts(
                online=args.get("online"),
                tags=args.get("tags", ()),
                movable=args.get("movable", False),
            )
            return [h.name for h in hosts]
        if kind == "forward":
            other = self.context.proxy(args["to"], args.get("host"))
            if args.get("async"):
                return await other.send_async(args["kind"], **args.get("args", {}))
            return other.send(args["kind"], **args.get("args", {}))
        return self.not_handled()


@dataclass
class CallerState(PagletState):
    seen_by_run: list[str] = field(default_factory=list)


class Caller(Paglet[CallerState]):
    """Calls its host from a ``def`` handler and from a ``run()`` thread."""

    State = CallerState

    def run(self) -> None:
        self.state.seen_by_run = [h.name for h in self.context.hosts()]

    def handle_message(self, message: Message) -> Any:
        if message.kind == "hosts":
            return [h.name for h in self.context.hosts()]
        if message.kind == "seen_by_run":
            return self.state.seen_by_run
        if message.kind == "forward":
            args = message.args
            return self.context.proxy(args["to"], args.get("host")).send(
                args["kind"], **args["args"]
            )
        return self.not_handled()


class Phoenix(Probe):
    """A `Probe` its host restarts after a failure: twice within a minute, then it fails."""

    restart_policy = RestartPolicy(RestartMode.ON_FAILURE, max_restarts=2, window=60, backoff=0.05)


@dataclass
class WatcherState(PagletState):
    downs: list[dict[str, Any]] = field(default_factory=list)


class Watcher(Paglet[WatcherState]):
    """Monitors other paglets and keeps the ``paglet.down`` messages it gets."""

    State = WatcherState

    def handle_message(self, message: Message) -> Any:
        if message.kind == "watch":
            self.context.monitor(message.args["agent_id"], message.args.get("host"))
            return "watching"
        if message.kind == "paglet.down":
            self.state.downs.append(dict(message.args))
            return None
        if message.kind == "downs":
            return self.state.downs
        return self.not_handled()


class Drowsy(Probe):
    """A `Probe` its host deactivates after 0.3 s without a message."""

    deactivation_policy = 0.3


@dataclass
class SlowStartState(PagletState):
    start_delay: float = 0.0
    fail_start: bool = False
    log: list[str] = field(default_factory=list)


class SlowStarter(Paglet[SlowStartState]):
    """Takes ``start_delay`` seconds to be created or to arrive, then fails if ``fail_start``."""

    State = SlowStartState

    def on_creation(self, event: LifecycleEvent) -> None:
        self._start(event, "created")

    def on_arrival(self, event: LifecycleEvent) -> None:
        self._start(event, "arrived")

    def _start(self, _event: LifecycleEvent, what: str) -> None:
        time.sleep(self.state.start_delay)
        if self.state.fail_start:
            raise RuntimeError("told to fail its start")
        self.state.log.append(what)

    def handle_message(self, message: Message) -> Any:
        self.state.log.append(message.kind)
        return list(self.state.log)
