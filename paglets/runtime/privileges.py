"""Keeping the host's secrets from its children: a non-dumpable host, children as another user.

Children are forked from a zygote the host started with a scrubbed environment,
so no secret reaches them by inheritance. What is left is reading it from the
host: a child running as the host's user can read ``/proc/<host pid>/environ``
(the environment the host started with, whatever it later removed from
``os.environ``) and the host's memory. Two measures close that:

- `protect_host`: the host marks itself non-dumpable (Linux), so those files
  belong to root and a process of the same, non-root user cannot read them;
- `ChildUser` (``--child-user``): a host run as root starts its children as
  another user, who cannot read the host's files or ``/proc`` entries at all.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paglets.core.errors import ConfigurationError
from paglets.runtime.osutil import set_dumpable

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)


def protect_host() -> bool:
    """Make this process non-dumpable; returns whether it is (best effort, logged)."""
    if set_dumpable(dumpable=False):
        log.debug("host process marked non-dumpable")
        return True
    log.warning(
        "cannot mark the host process non-dumpable on %s: its children can read its memory "
        "and environment if they run as the same user; run them as another one (--child-user)",
        sys.platform,
    )
    return False


@dataclass(frozen=True, slots=True)
class ChildUser:
    """The user children run as: its name, uid, primary gid and all its groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def lookup(cls, name: str) -> ChildUser:
        """The user ``name`` (or a numeric uid), checked usable by this host.

        Raises:
            ConfigurationError: not a POSIX system, the host is not root, no
                such user, or the user is root.
        """
        try:
            import pwd  # noqa: PLC0415 - POSIX only
        except ImportError:
            raise ConfigurationError(
                f"--child-user needs a POSIX system; {sys.platform} has none"
            ) from None
        if os.geteuid() != 0:
            raise ConfigurationError(
                f"--child-user {name} needs the host to run as root (it runs as uid "
                f"{os.geteuid()}); start it as root or drop --child-user"
            )
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, OverflowError):
            raise ConfigurationError(
                f"--child-user {name!r}: no such user on this machine; create it "
                "(e.g. a system user for paglets) or name an existing one"
            ) from None
        if entry.pw_uid == 0:
            raise ConfigurationError(f"--child-user {name!r} is root: name an unprivileged user")
        groups = tuple(dict.fromkeys([entry.pw_gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)]))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)

    def to_arg(self) -> str:
        """This user as one command-line argument (for the zygote)."""
        return ":".join([self.name, str(self.uid), str(self.gid), ",".join(map(str, self.groups))])

    @classmethod
    def from_arg(cls, arg: str) -> ChildUser:
        """The inverse of `to_arg`."""
        name, uid, gid, groups = arg.split(":")
        return cls(name, int(uid), int(gid), tuple(int(g) for g in groups.split(",") if g))

    def become(self) -> None:
        """Drop this process to the user for good (in a child, before paglet code).

        Supplementary groups first, then the group, then the user; then it is
        checked that root cannot be taken back. A failure ends the process: a
        child must never run paglet code as root by mistake.
        """
        try:
            os.setgroups(list(self.groups))
            os.setgid(self.gid)
            os.setuid(self.uid)
        except OSError as exc:
            _die(f"cannot become user {self.name} ({exc})")
        if os.getuid() != self.uid or os.geteuid() != self.uid or os.getegid() != self.gid:
            _die(f"did not become user {self.name}")
        try:
            os.setuid(0)
        except PermissionError:
            return
        _die(f"could take root back after becoming {self.name}")

    def grant(self, *paths: Path) -> None:
        """Create each directory in ``paths`` (if missing) and give it to this user."""
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, self.uid, self.gid, follow_symlinks=False)
            os.chmod(path, 0o700, follow_symlinks=False)  # noqa: PTH101 - no Path form

    def give_file(self, path: str | Path) -> None:
        """Give this user the regular file ``path`` (an envelope its paglet starts from).

        Opened without following a symlink, and only if it is a regular file of
        the host or already this user's: a child cannot have the host give it
        another file by planting a link where its envelope should be.

        Raises:
            PermissionError: ``path`` is not such a file.
        """
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), self.uid):
                raise PermissionError(f"{path} is not an envelope this host wrote")
            if st.st_uid != self.uid:
                os.fchown(fd, self.uid, self.gid)
        finally:
            os.close(fd)

    def prepare_home(
        self, home: Path, *, searchable: tuple[Path, ...], owned: tuple[Path, ...]
    ) -> None:
        """Lay out a host's ``home`` for children running as this user.

        ``searchable`` directories (and ``home``) are made and opened for search
        only (``0o711``): a child reaches its own paths through them without
        listing them. ``owned`` directories (checkpoints, the outgoing spool),
        where children write their files, are given to this user.

        Raises:
            ConfigurationError: a directory above ``home`` is closed to this user.
        """
        blocked = self.unreachable(home)
        if blocked is not None:
            raise ConfigurationError(
                f"--child-user {self.name} cannot reach the state directory {home}: {blocked} "
                "is closed to it; choose a --state-dir under directories it can search "
                f"(e.g. chmod o+x {blocked})"
            )
        for path in (home, *searchable):
            path.mkdir(parents=True, exist_ok=True)
            # search only, on purpose: no listing, no writing
            os.chmod(path, 0o711, follow_symlinks=False)  # noqa: PTH101, S103
        self.grant(*owned)

    def unreachable(self, path: Path) -> Path | None:
        """The first directory above ``path`` this user cannot pass through, if any.

        Judged by the mode bits (owner, group, others), as the kernel would for
        this user; ``None`` when every directory from ``/`` down to ``path`` is
        searchable by it.
        """
        for parent in [*reversed(path.resolve().parents), path.resolve()]:
            try:
                st = parent.stat()
            except FileNotFoundError:
                return None  # made later, by the host, searchable
            if st.st_uid == self.uid:
                bit = 0o100
            elif st.st_gid in self.groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                return parent
        return None


def _die(why: str) -> None:
    sys.stderr.write(f"paglets child: {why}; exiting\n")
    os._exit(70)  # EX_SOFTWARE
