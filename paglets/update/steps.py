"""The steps of an update that run other programs: the dependency sync and the check.

- `sync_dependencies`: ``uv sync --frozen`` in the checkout, into the
  environment this host runs from (the lock file decides; nothing is resolved).
- `check_new_code`: ``python -m paglets.update.selfcheck`` with the new code
  and the synced environment, in a process of its own: the code imports, a host
  starts and a paglet answers (`paglets.update.selfcheck`).

Each runs with a bounded time; a failure is an `UpdateError` quoting the
program's last words.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Final

from paglets.core.errors import ConfigurationError, UpdateError

SYNC_TIMEOUT: Final = 600.0
CHECK_TIMEOUT: Final = 120.0
_OUTPUT_LIMIT: Final = 64 * 1024


def find_uv() -> str:
    """The ``uv`` executable, as a shell of this user finds it (``~/.local/bin`` too).

    Raises:
        ConfigurationError: there is none.
    """
    local = str(Path.home() / ".local" / "bin")
    found = shutil.which("uv") or shutil.which("uv", path=local)
    if found is None:
        raise ConfigurationError(
            "--git-auto-update syncs dependencies with uv, and uv is not on PATH "
            f"nor in {local}; install uv (https://docs.astral.sh/uv/)"
        )
    return found


def _environment() -> dict[str, str]:
    """This process's environment, with uv pointed at the environment we run from."""
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:  # a virtual environment: sync that one
        env["UV_PROJECT_ENVIRONMENT"] = sys.prefix
        env["VIRTUAL_ENV"] = sys.prefix
    env.pop("PYTHONHOME", None)
    return env


async def sync_dependencies(root: Path, uv: str, timeout: float = SYNC_TIMEOUT) -> None:
    """``uv sync --frozen`` in ``root``.

    Raises:
        UpdateError: uv failed or ran over ``timeout``.
    """
    await _run("dependency sync", [uv, "sync", "--frozen", "--quiet"], root, timeout)


async def check_new_code(root: Path, timeout: float = CHECK_TIMEOUT) -> str:
    """Run the self check with the code in ``root``; its output (``ok <version>``).

    Raises:
        UpdateError: the check failed or ran over ``timeout``.
    """
    argv = [sys.executable, "-m", "paglets.update.selfcheck"]
    return await _run("check of the new code", argv, root, timeout)


async def _run(what: str, argv: list[str], cwd: Path, timeout: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=_environment(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its children go with it if it is killed
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()
        raise UpdateError(f"the {what} took longer than {timeout:g} s") from None
    text = out[-_OUTPUT_LIMIT:].decode(errors="replace")
    if process.returncode != 0:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        words = " / ".join(lines[-2:])[-400:] or "no output"
        raise UpdateError(f"the {what} failed (exit {process.returncode}): {words}")
    return text.strip()
