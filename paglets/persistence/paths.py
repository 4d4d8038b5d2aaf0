"""The one helper that builds a path from outside input and proves it stays under its root.

Every path whose parts come from the wire (an agent id, a transfer id, a file
name in an envelope's manifest) is built by `under`: each part must be a
relative path of plain names (no ``..``, no absolute path, no NUL), and the
result, with symlinks resolved, must lie inside the resolved root. Anything else
is a `RequestError` before any file is touched.
"""

from __future__ import annotations

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
    refused.

    Raises:
        RequestError: the path would leave ``root``.
    """
    names: list[str] = []
    for part in parts:
        names.extend(_checked_parts(part))
    path = root.joinpath(*names)
    base = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != base and not real.is_relative_to(base):
        raise RequestError(f"path {'/'.join(names)[:80]!r} leads out of {root}")
    return path
