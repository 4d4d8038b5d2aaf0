"""``Checkout``: the git commands an auto-update needs, run against one checkout.

Each call runs ``git`` as a child process (never through a shell), with a
bounded time, no terminal prompt and the checkout as its working directory; a
failure is an `UpdateError` that names the command and quotes git's last
words. The checkout's files change only through `fast_forward` (which never
merges and refuses to overwrite local changes) and `reset_to` (which the
updater calls only to undo a fast-forward it made itself, on a clean tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Final

from paglets.core.errors import ConfigurationError, UpdateError

log = logging.getLogger(__name__)

GIT_TIMEOUT: Final = 120.0
"""The longest a git command may run (a fetch over a slow link included)."""
_SHA: Final = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_REF_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


def find_checkout(start: Path | None = None) -> Path | None:
    """The root of the git checkout ``start`` (default: paglets' own code) lies in."""
    root = (start or Path(__file__)).resolve()
    for directory in root.parents:
        if (directory / ".git").exists():
            return directory
    return None


def check_ref_name(value: str, what: str) -> str:
    """``value`` if it is a plain remote or branch name, else `ConfigurationError`."""
    if not _REF_NAME.fullmatch(value) or ".." in value or value.endswith((".lock", "/")):
        raise ConfigurationError(
            f"{what} {value!r} is not a plain git name (letters, digits, '.', '_', '-', '/')"
        )
    return value


def is_commit_id(value: str) -> bool:
    """Whether ``value`` is a full commit id (40 or 64 lowercase hex digits)."""
    return _SHA.fullmatch(value) is not None


def short(commit: str | None) -> str:
    """The first 12 characters of a commit id, as people read them; ``-`` for none."""
    return commit[:12] if commit else "-"


class Checkout:
    """The git checkout at ``root``.

    Args:
        root: the directory holding ``.git``.
        git: the ``git`` executable; found on ``PATH`` when not given.
    """

    def __init__(self, root: Path, git: str | None = None) -> None:
        found = git or shutil.which("git")
        if found is None:
            raise ConfigurationError("--git-auto-update needs git, and there is none on PATH")
        self.root = root
        self.git = found

    def __repr__(self) -> str:
        return f"<Checkout {self.root}>"

    async def run(self, *args: str, timeout: float = GIT_TIMEOUT) -> str:
        """Run ``git args...`` in the checkout; its stdout, stripped.

        Raises:
            UpdateError: git exited non-zero, or ran longer than ``timeout``.
        """
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        process = await asyncio.create_subprocess_exec(
            self.git,
            *args,
            cwd=self.root,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise UpdateError(f"git {args[0]} took longer than {timeout:g} s") from None
        if process.returncode != 0:
            words = _last_words(err.decode(errors="replace"))
            raise UpdateError(f"git {args[0]} failed (exit {process.returncode}): {words}")
        return out.decode(errors="replace").strip()

    async def head(self) -> str:
        """The commit checked out."""
        return _sha(await self.run("rev-parse", "--verify", "HEAD"))

    async def branch(self) -> str | None:
        """The branch checked out, or ``None`` on a detached HEAD."""
        try:
            return await self.run("symbolic-ref", "--quiet", "--short", "HEAD")
        except UpdateError:
            return None

    async def upstream_remote(self, branch: str) -> str | None:
        """The remote ``branch`` tracks (``branch.<name>.remote``), if any."""
        try:
            return await self.run("config", "--get", f"branch.{branch}.remote") or None
        except UpdateError:
            return None

    async def is_dirty(self) -> bool:
        """Whether tracked files differ from the commit checked out (staged or not)."""
        return bool(await self.run("status", "--porcelain", "--untracked-files=no"))

    async def fetch(self, remote: str, branch: str) -> str:
        """Fetch ``branch`` from ``remote``; the commit it points to there."""
        await self.run("fetch", "--quiet", "--no-tags", remote, branch)
        return _sha(await self.run("rev-parse", "--verify", "FETCH_HEAD^{commit}"))

    async def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether ``newer`` contains ``older`` (a fast-forward can go from one to the other)."""
        try:
            await self.run("merge-base", "--is-ancestor", older, newer)
        except UpdateError:
            return False
        return True

    async def fast_forward(self, commit: str) -> None:
        """Move the branch and the files to ``commit``; never a merge commit.

        Raises:
            UpdateError: ``commit`` does not contain HEAD, or it would overwrite
                local changes or untracked files.
        """
        await self.run("merge", "--ff-only", "--quiet", _sha(commit))

    async def reset_to(self, commit: str) -> None:
        """Put the branch and the files back on ``commit`` (``git reset --hard``)."""
        await self.run("reset", "--hard", "--quiet", _sha(commit))


def _sha(value: str) -> str:
    if not is_commit_id(value):
        raise UpdateError(f"git gave {value[:80]!r} where a commit id was expected")
    return value


def _last_words(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-3:])[-limit:] or "no message"
