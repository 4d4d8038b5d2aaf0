# ruff: noqa: PTH112, PTH114, PTH117, PTH118 - os.path on strings: it runs on every create and move, and pathlib costs several times as much
"""The one helper that builds a path from outside input and proves it stays under its root.

Every path whose parts come from the wire (an agent id, a transfer id, a file
name in an envelope's manifest) is built by `under`: each part must be a
relative path of plain names (no ``..``, no absolute path, no NUL), and the
result, with symlinks resolved, must lie inside the resolved root. Anything else
is a `RequestError` before any file is touched.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path, PurePosixPath

from paglets.core.errors import RequestError


def _checked_parts(part: str) -> tuple[str, ...]:
    if not isinstance(part, str) or not part:
        raise RequestError(f"a path part must be a non-empty string, not {part!r}")
    if "\x00" in part or "\\" in part:
        raise RequestError(f"path {part[:80]!r} has a NUL or a backslash in it")
    pure = PurePosixPath(part)
    if pure.is_absolute():
        raise RequestError(f"path {part[:80]!r} is absolute; only a relative path is allowed here")
    names = pure.parts
    if any(name in {".", ".."} for name in names) or any(n in {".", ".."} for n in part.split("/")):
        raise RequestError(f"path {part[:80]!r} has a '.' or '..' in it")
    return names


def under(root: Path, *parts: str) -> Path:
    """``root`` joined with ``parts``, proven to stay under ``root``.

    Symlinks are resolved on both sides (``root`` itself may be a symlink); a
    part that is absolute, holds ``..`` or reaches a symlink out of ``root`` is
    refused. The parts hold no ``..``, so only a symlink among them could lead
    out: each is looked at once (one ``lstat``), and the path is resolved whole
    only from the first symlink on.

    Raises:
        RequestError: the path would leave ``root``.
    """
    names: list[str] = []
    for part in parts:
        names.extend(_checked_parts(part))
    path = root.joinpath(*names)
    base = _real(root)
    current = base
    for i, name in enumerate(names):
        step = os.path.join(current, name)
        if os.path.islink(step):
            real = os.path.realpath(os.path.join(step, *names[i + 1 :]))
            if real != base and not real.startswith(base + os.sep):
                raise RequestError(f"path {'/'.join(names)[:80]!r} leads out of {root}")
            break
        current = step
    return path


@functools.lru_cache(maxsize=256)
def _real_dir(root: str) -> str:
    return os.path.realpath(root)


def _real(root: Path) -> str:
    """``root`` with its symlinks resolved; cached once it is a directory (roots stay put)."""
    text = os.fspath(root)
    if os.path.isdir(text):
        return _real_dir(text)
    return os.path.realpath(text)


def in_roots(
    path: str | os.PathLike[str], roots: tuple[Path, ...] | list[Path], *, owner: str = "this host"
) -> Path:
    """``path`` with its symlinks and ``..`` resolved, proven to lie inside one of ``roots``.

    For paths a person names (a file to send, a destination, a directory to
    search): ``path`` must be absolute; it need not exist. The check is on the
    fully resolved path, so neither a ``..`` nor a symlink anywhere along it,
    the last name included, leads out of a root. Use the returned path, not
    ``path``: it is the one that was checked. ``owner`` names the host in the error.

    Raises:
        RequestError: ``path`` is relative, holds a NUL, or resolves outside every root.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise RequestError(f"path {text[:80]!r} has a NUL in it")
    if not os.path.isabs(text):
        raise RequestError(f"path {text[:80]!r} is relative; give an absolute path")
    real = os.path.realpath(text)
    for root in roots:
        base = _real(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return Path(real)
    shown = ", ".join(str(root) for root in roots) or "none"
    raise RequestError(
        f"path {text[:200]} is outside the file roots of {owner} ({shown}); "
        "start the host with --file-root DIR (or file_roots in launch.toml [host]) to allow DIR"
    )
