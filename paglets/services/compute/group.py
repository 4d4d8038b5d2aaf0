"""``JobGroup``: the result collector of a group of compute jobs.

`submit_group` creates the collector, then one job per state, each told the
collector's address (``collector``, ``collector_host`` in its state). A job
sends its result or failure to the collector when it ends (``group.result``);
the collector also watches every member (`paglets.core.context.PagletContext.monitor`),
so a member that crashes, is disposed before it reported, or whose host goes
offline counts as failed (``HostLost`` for a host gone). Once every member has
reported, the collector is complete: it logs one line and records the time
(``completed_at``); the user-info service will carry that notification.

``group.status`` answers the group's table: each member's host, phase, result
or failure.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from paglets.core.errors import PagletError, RequestError
from paglets.core.paglet import Paglet
from paglets.core.state import PagletState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from paglets.core.message import Message
    from paglets.transport.client import AsyncHostClient

COLLECTOR: Final = "paglets.services.compute.group:JobGroup"
RESULT: Final = "group.result"
STATUS: Final = "group.status"
MEMBERS: Final = "group.members"
DOWN: Final = "paglet.down"
MAX_MEMBERS: Final = 10_000
ENDED: Final = ("done", "failed")


@dataclass
class Member(PagletState):
    """One job of the group, as its collector knows it."""

    agent_id: str = ""
    host: str = ""
    name: str = ""
    phase: str = "pending"
    result: Any = None
    failure: str = ""


@dataclass
class JobGroupState(PagletState):
    """The group's name, members and when it completed (0: not yet)."""

    name: str = ""
    members: list[Member] = field(default_factory=list)
    created_at: float = 0.0
    completed_at: float = 0.0
    early: list[Member] = field(default_factory=list)  # reports before the member list


class JobGroup(Paglet[JobGroupState]):
    """Collects the results of a group's jobs; see the module docstring."""

    State = JobGroupState

    def handle_message(self, message: Message) -> Any:
        """``group.members`` (from `submit_group`), ``group.result``, ``paglet.down``,
        ``group.status``."""
        args = message.args
        if message.kind == MEMBERS:
            return self._add(args.get("members"))
        if message.kind == RESULT:
            phase = args.get("phase")
            if phase not in ENDED:
                raise RequestError(f"a group result's phase is done or failed, not {phase!r:.20}")
            self._settle(
                str(args.get("agent_id")), phase, args.get("result"), str(args.get("failure", ""))
            )
            return None
        if message.kind == DOWN:
            reason = str(args.get("reason"))
            why = "HostLost: its host went offline" if reason == "host_offline" else reason
            detail = str(args.get("detail", ""))
            self._settle(str(args.get("agent_id")), "failed", None, f"{why} {detail}".strip())
            return None
        if message.kind == STATUS:
            return self.status()
        return self.not_handled()

    def status(self) -> dict[str, Any]:
        """The group: its name, counts, completion time and members."""
        members = self.state.members
        return {
            "group": self.context.agent_id,
            "name": self.state.name,
            "total": len(members),
            "done": sum(1 for m in members if m.phase == "done"),
            "failed": sum(1 for m in members if m.phase == "failed"),
            "created_at": self.state.created_at,
            "completed_at": self.state.completed_at,
            "members": [
                {
                    "agent_id": m.agent_id,
                    "host": m.host,
                    "name": m.name,
                    "phase": m.phase,
                    "result": m.result,
                    "failure": m.failure,
                }
                for m in members
            ],
        }

    def _add(self, members: object) -> int:
        if not isinstance(members, list) or len(self.state.members) + len(members) > MAX_MEMBERS:
            raise RequestError(f"group.members takes a list of at most {MAX_MEMBERS} members")
        for item in members:
            if not isinstance(item, dict):
                raise RequestError("a group member is {agent_id, host, name}")
            member = Member(str(item.get("agent_id")), str(item.get("host")), str(item.get("name")))
            self.state.members.append(member)
            early = next((m for m in self.state.early if m.agent_id == member.agent_id), None)
            if early is not None:
                self.state.early.remove(early)
                self._settle(member.agent_id, early.phase, early.result, early.failure)
                continue
            try:
                self.context.monitor(member.agent_id, member.host)
            except PagletError as exc:
                self._settle(member.agent_id, "failed", None, f"cannot be watched: {exc}")
        self.state.created_at = self.state.created_at or time.time()
        self._check_complete()
        return len(self.state.members)

    def _settle(self, agent_id: str, phase: str, result: Any, failure: str) -> None:
        member = next((m for m in self.state.members if m.agent_id == agent_id), None)
        if member is None and len(self.state.early) < MAX_MEMBERS:
            # a job that ended before `submit_group` sent the member list
            self.state.early.append(Member(agent_id, "", "", phase, result, failure[:500]))
            return
        if member is None or member.phase in ENDED:
            return  # reported already (a disposal after its result)
        member.phase, member.result, member.failure = phase, result, failure[:500]
        if self.state.created_at:  # else `_add` is still listing the members
            self._check_complete()

    def _check_complete(self) -> None:
        """Once every member has ended: record the time and say so, once."""
        members = self.state.members
        if not self.state.completed_at and all(m.phase in ENDED for m in members):
            self.state.completed_at = time.time()
            failed = sum(1 for m in members if m.phase == "failed")
            self.context.log.info(
                "group %s complete: %d done, %d failed",
                self.state.name,
                len(members) - failed,
                failed,
            )
            with contextlib.suppress(PagletError):  # the user is told once, by user-info
                self.context.notify(
                    f"group {self.state.name or self.context.agent_id} complete",
                    f"{len(members) - failed} done, {failed} failed",
                    severity="warning" if failed else "info",
                )


async def submit_group(
    client: AsyncHostClient,
    class_path: str,
    states: Sequence[dict[str, Any]],
    *,
    name: str = "",
    hosts: Sequence[tuple[str, AsyncHostClient]] = (),
) -> str:
    """Create a collector on ``client``'s host and one job per state; its agent id.

    Jobs go round robin to ``hosts`` (name and client of each; default: the
    collector's host), each with the collector's address and the group's name.
    """
    info = await client.host_info()
    collector = await client.create(COLLECTOR, {"name": name})
    places = list(hosts) or [(info.name, client)]
    members = []
    for n, state in enumerate(states):
        host, target = places[n % len(places)]
        fields = {"group": name, "collector": collector.agent_id, "collector_host": info.name}
        job = await target.create(class_path, {**state, **fields})
        members.append({"agent_id": job.agent_id, "host": host, "name": state.get("name", "")})
    await collector.send(MEMBERS, {"members": members})
    return collector.agent_id
