"""Landing bytes in a file all or nothing: a new temporary file beside it, then a rename.

The temporary file is created exclusively (never an existing file, never through
a symbolic link), owner-only, and replaces the target by a rename, so a reader
sees the old file or the whole new one; with ``sync`` the file is flushed to disk
before the rename and its directory after it. The envelope's writer, reader and receiver
(`paglets.wire.envelope_write`, `paglets.wire.envelope_read`,
`paglets.wire.envelope_receive`) all write through here.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Final

from paglets.persistence.files import fsync_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

__all__ = ["CHUNK", "create_new", "land_small", "temp_for", "write_all", "write_atomic"]

# The most bytes one step of a copy or of a streamed reception handles.
CHUNK: Final = 1 << 20


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``chunks`` to ``fd``, in order (``writev``, resumed if short)."""
    pending = [memoryview(c).cast("B") for c in chunks if len(c)]
    while pending:
        written = os.writev(fd, pending[:512])
        while written:
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0], written = pending[0][written:], 0


def temp_for(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def create_new(path: Path) -> int:
    """Create ``path``, which must not exist yet, owner-only, for writing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def write_atomic(path: Path, fill: Callable[[int, Path], None], *, sync: bool) -> None:
    """Run ``fill(fd, tmp)`` on a new temporary file ``tmp`` beside ``path``, then rename it."""
    tmp = temp_for(path)
    fd = create_new(tmp)
    try:
        try:
            fill(fd, tmp)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)  # replaces a symbolic link at path, never follows it
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def land_small(dest: Path, chunks: Sequence[bytes], sync: bool) -> None:
    """Write ``chunks`` to ``dest`` through a temporary file, all or nothing."""
    tmp = temp_for(dest)
    fd = create_new(tmp)
    try:
        write_all(fd, chunks)
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        tmp.replace(dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(dest.parent)
