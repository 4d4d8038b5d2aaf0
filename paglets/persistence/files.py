"""Plain files under the state directory: atomic writes and a quarantine for bad ones.

A file is written whole or not at all: the bytes go to a temporary file in the
same directory, which is flushed to disk and renamed over the target, and then
the directory itself is flushed so that the rename survives a power cut. A file
that cannot be read is never deleted: it is moved into ``quarantine/`` beside a
note that says why, for a person to look at.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from paglets.core.errors import StorageError

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def storage_error(path: Path, exc: OSError, doing: str = "write") -> StorageError:
    """A `StorageError` for ``exc`` that names ``path`` and says what to do about it."""
    if exc.errno in _FULL:
        what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return StorageError(
            f"could not {doing} {path}: {what} on the disk that holds {path.parent}; "
            "free some space there (or point PAGLETS_HOME at a larger disk) and retry"
        )
    reason = exc.strerror or str(exc)
    return StorageError(f"could not {doing} {path}: {reason}")


def fsync_file(path: Path) -> None:
    """Flush a file's content to disk, by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename or a new file) to disk; no-op off POSIX."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes | Iterable[bytes | memoryview], *, sync: bool = True
) -> None:
    """Replace ``path`` with ``data``, all or nothing.

    Args:
        path: the file to write; its directory is created if missing.
        data: the whole content, or chunks of it written in order.
        sync: flush the file and its directory to disk before returning. Without
            it the write is still atomic for other processes, but a power cut may
            leave the previous content (never a mix).

    Raises:
        StorageError: the file could not be written (disk full, no permission, ...).
            ``path`` then keeps its previous content, and no temporary file is left.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise storage_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, bytes | bytearray | memoryview):
                out.write(data)
            else:
                for chunk in data:
                    out.write(chunk)
            out.flush()
            if sync:
                os.fsync(out.fileno())
        Path(tmp_name).replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            Path(tmp_name).unlink()
        if isinstance(exc, OSError):
            raise storage_error(path, exc) from exc
        raise
    if sync:
        try:
            fsync_dir(path.parent)
        except OSError as exc:
            raise storage_error(path, exc, "flush the directory of") from exc


def quarantine(path: Path, root: Path, reason: str) -> Path:
    """Move a file that cannot be used into ``root/quarantine/``, beside a note why.

    Returns:
        The file's new path. Its name starts with the UTC time it was moved and a
        unique suffix, so that repeated quarantines of one name never collide; a
        sibling ``<name>.reason.txt`` holds the original path and ``reason``.

    Raises:
        StorageError: the file could not be moved.
    """
    target_dir = root / QUARANTINE_DIR
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = target_dir / f"{stamp}-{uuid.uuid4().hex[:8]}-{path.name}"
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
    except OSError as exc:
        raise storage_error(path, exc, "move into quarantine") from exc
    note = f"original path: {path}\nquarantined at: {stamp}\nreason: {reason}\n"
    try:
        write_atomic(target.with_name(target.name + ".reason.txt"), note.encode())
    except StorageError:
        log.exception("could not write the reason file for quarantined %s", target)
    log.warning("moved %s to %s: %s", path, target, reason)
    return target
