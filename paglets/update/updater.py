"""``Updater``: a host that follows a git branch and restarts on its new commits.

Every ``interval`` seconds, and at once when a peer runs a commit this host has
not looked at, the updater fetches the branch. When the branch moved ahead of
the commit checked out, it:

1. refuses a non-fast-forward (a force-push) and a dirty tree (local changes):
   an ``update.failed`` event, the host keeps serving its commit;
2. takes the mesh's update lease (`paglets.update.lease`): one host at a time;
3. fast-forwards the checkout (``git merge --ff-only``), syncs the dependencies
   (``uv sync --frozen``) and checks the new code in a process of its own
   (`paglets.update.steps`); a failure puts the checkout back on the old commit
   (it moved it itself, on a clean tree), syncs again and reports why;
4. writes the restart marker (`paglets.update.marker`) and asks the host to
   stop; the command re-executes itself (`paglets.update.restart`), with the
   same command line, port and state directory, so its paglets are written to
   disk as it stops and come back as it starts.

The host's record carries its `UpdateStatus` (``pending``, ``updating``,
``failed`` with the reason), so ``paglets-mesh hosts`` shows where each host
is; the commit it runs is the record's ``commit``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from paglets.core.errors import ConfigurationError, UpdateError
from paglets.core.events import EventKind
from paglets.update.git import Checkout, check_ref_name, find_checkout, is_commit_id, short
from paglets.update.lease import Lease
from paglets.update.marker import Marker, Phase, clear
from paglets.update.steps import check_new_code, find_uv, sync_dependencies
from paglets.wire.mesh import UpdateState, UpdateStatus, printable

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from paglets.host import Host

log = logging.getLogger(__name__)

SETTLE_ROUNDS: Final = 3
"""Gossip rounds a host stays ``pending`` before it may take the lease."""
MAX_HINTS: Final = 1024
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    """Options of ``--git-auto-update``.

    Attributes:
        remote: the remote to follow; ``None``: the branch's upstream, else ``origin``.
        branch: the branch to follow; ``None``: the one checked out.
        interval: seconds between fetches (a peer on a new commit triggers one sooner).
        ready_timeout: seconds the restarted host has to be ready, else it rolls back.
        lease_time: seconds another host's ``pending`` or ``updating`` counts at most.
    """

    remote: str | None = None
    branch: str | None = None
    interval: float = 300.0
    ready_timeout: float = 120.0
    lease_time: float = 600.0

    def __post_init__(self) -> None:
        for what, value in (("--git-remote", self.remote), ("--git-branch", self.branch)):
            if value is not None:
                check_ref_name(value, what)
        if not self.interval > 0 or not self.ready_timeout > 0:
            raise ConfigurationError("--update-interval and the ready timeout must be positive")
        if not self.lease_time > self.ready_timeout:
            raise ConfigurationError("the update lease must outlast the ready timeout")


class _Failure(Exception):  # noqa: N818 - an outcome of a step, caught in `cycle`
    """A step of an update failed: its stage, why, and the commit it was for."""

    def __init__(self, stage: str, reason: str, commit: str | None = None) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.commit = commit
        self.rolled_back = False


class Updater:
    """See the module docstring.

    Args:
        host: the host to update (not started yet).
        config: the options.
        checkout: the checkout paglets runs from; found from paglets' code if not given.
        uv: the ``uv`` executable; found on ``PATH`` if not given.

    Raises:
        ConfigurationError: paglets does not run from a git checkout, or git or uv
            cannot be found.
    """

    def __init__(
        self,
        host: Host,
        config: UpdateConfig,
        checkout: Checkout | None = None,
        uv: str | None = None,
    ) -> None:
        if checkout is None:
            root = find_checkout()
            if root is None:
                raise ConfigurationError(
                    "--git-auto-update needs paglets to run from a git checkout "
                    "(install it with 'git clone' and 'uv sync', not from a wheel)"
                )
            checkout = Checkout(root)
        self.host = host
        self.config = config
        self.checkout = checkout
        self.uv = uv or find_uv()
        self.remote = config.remote or "origin"
        self.branch = config.branch or ""
        self.lease = Lease(host.name, config.lease_time)
        self.marker: Marker | None = None  # the update this process finishes, if any
        self.restart: Marker | None = None  # set once the host should re-execute
        self._bad: set[str] = set()  # commits that failed here: not tried again
        self._reported: set[tuple[str, str | None]] = set()
        self._hints: set[str] = set()
        self._kick = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Updater {self.host.name} {self.remote}/{self.branch or '?'}>"

    @property
    def restarting(self) -> bool:
        """Whether the host should now stop and re-execute (`restart` is set)."""
        return self.restart is not None

    @property
    def _settle(self) -> float:
        return SETTLE_ROUNDS * self.host.config.gossip_interval

    # -- before the host starts ---------------------------------------------------------

    async def prepare(self) -> None:
        """Resolve the branch and remote, and read what the previous process left.

        Raises:
            ConfigurationError: no branch is given and the checkout's HEAD is detached.
        """
        if not self.branch:
            branch = await self.checkout.branch()
            if branch is None:
                raise ConfigurationError(
                    f"the checkout {self.checkout.root} is on a detached HEAD; "
                    "check out a branch or pass --git-branch"
                )
            self.branch = branch
        if self.config.remote is None:
            self.remote = await self.checkout.upstream_remote(self.branch) or "origin"
        home = self.host.config.home
        await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
        marker = await asyncio.to_thread(Marker.load, home)
        if marker is None:
            return
        if marker.phase is Phase.RESTARTING:
            if await self.checkout.head() != marker.new:  # someone moved it since: stale
                log.warning("ignoring the update marker for %s: not checked out", marker.new)
                await asyncio.to_thread(clear, home)
                return
            self.marker = marker
            self._publish(UpdateStatus(UpdateState.UPDATING, marker.new))
            return
        await asyncio.to_thread(clear, home)
        self._bad.add(marker.new)
        self._failed("ready", marker.new, marker.reason, rolled_back=True)

    # -- once the host is ready ---------------------------------------------------------

    async def ready(self) -> None:
        """The host serves: an update that restarted it is done."""
        marker, self.marker = self.marker, None
        if marker is None:
            return
        await asyncio.to_thread(clear, self.host.config.home)
        self._publish(None)
        took = time.time() - marker.started_at
        self.host.events.append(
            EventKind.UPDATE_DONE,
            detail=f"updated from {short(marker.old)} to {short(marker.new)} in {took:.1f} s",
            data={
                "old": marker.old,
                "new": marker.new,
                "started_at": marker.started_at,
                "ready_at": time.time(),
            },
        )
        log.info("update to %s done in %.1f s", short(marker.new), took)

    async def run(self) -> None:
        """Fetch every ``interval`` and when a peer shows a new commit; until a restart."""
        next_fetch = 0.0
        while True:
            self._look_at_peers()
            if self._kick.is_set() or time.monotonic() >= next_fetch:
                self._kick.clear()
                try:
                    await self.cycle()
                except Exception:
                    log.exception("auto-update cycle failed")
                    self._publish(None)  # never hold the lease on a bug
                next_fetch = time.monotonic() + self.config.interval
                if self.restarting:
                    break
            await asyncio.sleep(self.host.config.gossip_interval)
        self.host.request_stop()

    def _look_at_peers(self) -> None:
        """Fetch now if a peer runs a commit we have not looked at yet."""
        mine = self.host.mesh.table.me.commit
        for record in self.host.mesh.hosts(online=True):
            commit = record.commit
            if not commit or not is_commit_id(commit):
                continue  # a host not run from git, or a record of a strange commit
            if commit != mine and commit not in self._hints:
                if len(self._hints) >= MAX_HINTS:
                    self._hints.clear()
                self._hints.add(commit)
                log.info("host %s runs %s; fetching", record.name, short(commit))
                self._kick.set()

    # -- one update ----------------------------------------------------------------------

    async def cycle(self) -> None:
        """Fetch; when the branch moved ahead, update to it (see the module docstring)."""
        try:
            head = await self.checkout.head()
            tip = await self._step("fetch", self.checkout.fetch(self.remote, self.branch))
            self._reported.difference_update({("fetch", None), ("git", None)})  # reachable again
            if tip == head or tip in self._bad or await self.checkout.is_ancestor(tip, head):
                self._clear_failure(head)
                return
            await self._refuse_unless_clean(head, tip)
            await self._update(head, tip)
        except _Failure as failure:
            self._failed(
                failure.stage, failure.commit, failure.reason, rolled_back=failure.rolled_back
            )
        except UpdateError as exc:
            self._failed("git", None, str(exc))

    async def _refuse_unless_clean(self, head: str, tip: str) -> None:
        if not await self.checkout.is_ancestor(head, tip):
            raise _Failure(
                "diverged",
                f"{self.remote}/{self.branch} is now {short(tip)}, which does not contain "
                f"{short(head)} (a force-push?); not updating: only fast-forwards are taken",
                tip,
            )
        if await self.checkout.is_dirty():
            raise _Failure(
                "dirty",
                f"the checkout {self.checkout.root} has local changes; not updating to "
                f"{short(tip)} (commit or discard them)",
                tip,
            )

    async def _update(self, head: str, tip: str) -> None:
        started_at = await self._take_lease(tip)
        if await self.checkout.head() != head or await self.checkout.is_dirty():
            self._publish(None)
            return  # the checkout changed under us: the next cycle looks again
        self.host.events.append(
            EventKind.UPDATE_STARTED,
            detail=f"updating from {short(head)} to {short(tip)} ({self.remote}/{self.branch})",
            data={"old": head, "new": tip},
        )
        await self._step("fast-forward", self.checkout.fast_forward(tip), tip)
        try:
            await self._step("sync", sync_dependencies(self.checkout.root, self.uv), tip)
            await self._step("check", check_new_code(self.checkout.root), tip)
        except _Failure as failure:
            self._bad.add(tip)
            failure.rolled_back = await self._roll_back(head)
            raise
        except BaseException:
            await self._roll_back(head)  # cancelled: the host stops; leave it on its commit
            raise
        marker = Marker(
            Phase.RESTARTING,
            old=head,
            new=tip,
            moved=True,
            started_at=started_at,
            ready_timeout=self.config.ready_timeout,
        )
        await asyncio.to_thread(marker.save, self.host.config.home)
        log.info("restarting on %s", short(tip))
        self.restart = marker

    async def _take_lease(self, tip: str) -> float:
        """Wait for the mesh's update lease (`paglets.update.lease`); when it was taken."""
        self._publish(UpdateStatus(UpdateState.PENDING, tip))
        self.lease.observe(self.host.mesh.hosts())
        await asyncio.sleep(self._settle)
        waited_for = None
        while (blocker := self.lease.blocker(self.host.mesh.hosts())) is not None:
            if blocker.name != waited_for:
                waited_for = blocker.name
                state = blocker.update.state.value if blocker.update else "?"
                self.host.events.append(
                    EventKind.UPDATE_WAITING,
                    detail=f"waiting for host {blocker.name} ({state}) before updating to "
                    f"{short(tip)}: one host of the mesh restarts at a time",
                    data={"host": blocker.name, "state": state, "new": tip},
                )
            await asyncio.sleep(self.host.config.gossip_interval)
        self._publish(UpdateStatus(UpdateState.UPDATING, tip))
        return time.time()

    async def _roll_back(self, head: str) -> bool:
        """Put the checkout and the environment back on ``head``; whether it worked."""
        try:
            if not await self._put_back(head):
                return False
            await sync_dependencies(self.checkout.root, self.uv)
        except UpdateError as exc:
            log.error("could not roll back to %s: %s", short(head), exc)  # noqa: TRY400
            return False
        return True

    async def _put_back(self, head: str) -> bool:
        """``git reset --hard head``, unless someone changed files since we moved them."""
        if await self.checkout.is_dirty():
            log.error(
                "not rolling back to %s: the checkout %s has local changes made during the "
                "update; it stays as it is",
                short(head),
                self.checkout.root,
            )
            return False
        await self.checkout.reset_to(head)
        return True

    @staticmethod
    async def _step(stage: str, step: Awaitable[_T], commit: str | None = None) -> _T:
        try:
            return await step
        except UpdateError as exc:
            raise _Failure(stage, str(exc), commit) from None

    # -- what the mesh and the events see -------------------------------------------------

    def _publish(self, status: UpdateStatus | None) -> None:
        table = self.host.mesh.table
        if table.me.update != status:
            table.set_me(table.me.replace(update=status))

    def _clear_failure(self, head: str) -> None:
        """Nothing to do: forget a failure, unless it says why a newer commit was refused."""
        update = self.host.mesh.table.me.update
        failed = update is not None and update.state is UpdateState.FAILED
        if failed and update is not None and update.commit in (None, head):
            self._publish(None)

    def _failed(
        self, stage: str, commit: str | None, reason: str, *, rolled_back: bool = False
    ) -> None:
        reason = printable(reason)
        self._publish(UpdateStatus(UpdateState.FAILED, commit, f"{stage}: {reason}"[:1000]))
        key = (stage, commit)
        if key in self._reported:
            return
        self._reported.add(key)
        log.warning("auto-update %s failed: %s", stage, reason)
        self.host.events.append(
            EventKind.UPDATE_FAILED,
            detail=f"update to {short(commit)} failed at {stage}: {reason}"
            + ("; back on the old commit" if rolled_back else ""),
            data={"stage": stage, "new": commit, "reason": reason, "rolled_back": rolled_back},
        )

    # -- a restart that did not come up ---------------------------------------------------

    async def roll_back_restart(self, reason: str) -> None:
        """The restarted host was not ready: put the checkout back and re-execute on it.

        Raises:
            UpdateError: the checkout cannot be put back (it was not moved by this
                host, it moved since, or it has local changes); the host then exits.
        """
        marker = self.marker
        if marker is None:
            raise UpdateError(f"the host failed to start: {reason}")
        head = await self.checkout.head()
        if not marker.moved or head != marker.new or await self.checkout.is_dirty():
            raise UpdateError(
                f"the host on {short(marker.new)} was not ready ({reason}) and the checkout "
                f"cannot be put back on {short(marker.old)}: it is on {short(head)} or has "
                "local changes; fix it by hand"
            )
        log.error("not ready on %s (%s); rolling back to %s", short(head), reason, marker.old)
        await self.checkout.reset_to(marker.old)
        await sync_dependencies(self.checkout.root, self.uv)
        rolled = Marker(
            Phase.ROLLED_BACK,
            old=marker.old,
            new=marker.new,
            moved=False,
            started_at=marker.started_at,
            ready_timeout=marker.ready_timeout,
            reason=reason[:500],
        )
        await asyncio.to_thread(rolled.save, self.host.config.home)
        self.restart = rolled
