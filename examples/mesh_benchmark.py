"""A mesh benchmark: a traveler times every directed hop between the hosts.

The paglets of ``paglets-mesh-benchmark`` (docs/examples.md):

- the `Starter` stays on the entry host. It plans a route that takes every
  directed pair of hosts (``a -> b`` and ``b -> a``) ``repeats`` times, starts a
  `Traveler` with it, answers its ``clock`` messages with its own clock, and
  keeps its ``report`` for the caller (``result``);
- the `Traveler` carries a payload of ``payload_size`` bytes. Before each hop
  it notes the time it leaves (``on_dispatching``); on arrival it notes the time
  it came, and asks the starter for the time (a message round trip from this
  host to the entry host, and this host's clock offset from it, estimated as
  NTP does: the starter's time minus the middle of the round trip). Back on the
  entry host after the last hop it reports every hop and disposes itself.

A hop's latency is its arrival time less its departure time, each corrected
by its host's clock offset; it includes everything a move costs (state and
payload written, sent, committed, the paglet started on the target).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paglets import LifecycleEvent, Message, Paglet, PagletState

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_PAYLOAD = 64 << 20
MAX_HOPS = 2000


def route(hosts: Sequence[str], repeats: int = 1) -> list[str]:
    """A walk from ``hosts[0]`` back to it that takes every directed pair ``repeats`` times.

    Every host of the complete directed graph has as many ways in as out, so
    one closed walk (an Euler circuit, found by Hierholzer's algorithm) takes
    each pair exactly once.
    """
    left = {h: [o for o in reversed(hosts) if o != h] for h in hosts}
    stack, walk = [hosts[0]], []
    while stack:
        here = stack[-1]
        if left[here]:
            stack.append(left[here].pop())
        else:
            walk.append(stack.pop())
    once = walk[::-1]
    return once + once[1:] * (repeats - 1)


@dataclass
class Hop:
    source: str
    target: str
    departed: float  # the source host's clock
    arrived: float  # the target host's clock


@dataclass
class ClockSample:
    host: str
    rtt: float  # seconds of a message round trip from this host to the entry host
    offset: float  # seconds the entry host's clock is ahead of this one's


@dataclass
class TravelerState(PagletState):
    route: list[str] = field(default_factory=list)
    position: int = 0
    starter: str = ""
    entry: str = ""
    payload: bytes = b""
    departed: float = 0.0
    hops: list[Hop] = field(default_factory=list)
    clocks: list[ClockSample] = field(default_factory=list)


class Traveler(Paglet[TravelerState]):
    """See the module docstring."""

    State = TravelerState

    def on_dispatching(self, event: LifecycleEvent) -> None:
        del event
        self.state.departed = time.time()

    def on_arrival(self, event: LifecycleEvent) -> None:
        arrived = time.time()
        self.state.position += 1
        here = self.context.host_name
        self.state.hops.append(Hop(event.origin or "", here, self.state.departed, arrived))
        starter = self.context.proxy(self.state.starter, self.state.entry)
        asked = time.time()
        entry_time = float(starter.send("clock"))
        answered = time.time()
        offset = entry_time - (asked + answered) / 2
        self.state.clocks.append(ClockSample(here, answered - asked, offset))

    async def run(self) -> None:
        state = self.state
        if state.position + 1 < len(state.route):
            self.dispatch(state.route[state.position + 1])
            return
        hops = [dataclasses.asdict(hop) for hop in state.hops]
        clocks = [dataclasses.asdict(sample) for sample in state.clocks]
        starter = self.context.proxy(state.starter, state.entry)
        await starter.send_async("report", hops=hops, clocks=clocks)
        self.context.dispose()


@dataclass
class StarterState(PagletState):
    hosts: list[str] = field(default_factory=list)
    payload_size: int = 64 * 1024
    repeats: int = 1
    route: list[str] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0  # the whole tour, once it is over
    arrivals: int = 0
    hops: list[dict[str, Any]] = field(default_factory=list)
    clocks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error: str = ""


class Starter(Paglet[StarterState]):
    """See the module docstring."""

    State = StarterState

    async def run(self) -> None:
        state = self.state
        if state.route or state.done:
            return  # already started (a restart, say)
        state.error = self.check()
        if state.error:
            state.done = True
            return
        entry = self.context.host_name
        if entry in state.hosts:  # start and end here
            at = state.hosts.index(entry)
            state.route = route(state.hosts[at:] + state.hosts[:at], state.repeats)
        else:  # go to the first host and come back: two hops that are not measured pairs
            state.route = [entry, *route(state.hosts, state.repeats), entry]
        state.started = time.monotonic()
        traveler = TravelerState(
            route=state.route,
            starter=self.context.agent_id,
            entry=entry,
            payload=bytes(state.payload_size),
        )
        self.context.create("examples.mesh_benchmark:Traveler", traveler)

    def check(self) -> str:
        """What is wrong with the plan in the state, or ``""``."""
        hosts, repeats = self.state.hosts, self.state.repeats
        if not 2 <= len(hosts) == len(set(hosts)):
            return "give two or more different hosts"
        if not 0 <= self.state.payload_size <= MAX_PAYLOAD:
            return f"the payload must be 0 to {MAX_PAYLOAD} bytes"
        if not repeats >= 1 or len(hosts) * (len(hosts) - 1) * repeats > MAX_HOPS:
            return f"at most {MAX_HOPS} hops: fewer repeats or hosts"
        return ""

    def handle_message(self, message: Message) -> Any:
        kind, state = message.kind, self.state
        if kind == "clock":
            state.arrivals += 1
            return time.time()
        if kind == "report":
            state.hops = list(message.args["hops"])
            state.clocks = list(message.args["clocks"])
            state.seconds = time.monotonic() - state.started
            state.done = True
            return "thanks"
        if kind == "result":
            return {
                "done": state.done,
                "error": state.error,
                "hops_total": max(0, len(state.route) - 1),
                "hops_done": state.arrivals,
                "hosts": state.hosts,
                "payload_size": state.payload_size,
                "repeats": state.repeats,
                "seconds": state.seconds,
                "hops": state.hops,
                "clocks": state.clocks,
            }
        return self.not_handled()
