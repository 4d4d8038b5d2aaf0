"""Reading a movement envelope from a file: check it whole, rebuild its state, extract its files.

The byte layout is described in `paglets.wire.envelope`. The state is rebuilt only
as the class the receiver asks for, and only if the header names that very class;
files are extracted only under their destination (`paglets.persistence.paths.under`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import mmap
import os
from typing import TYPE_CHECKING, Self, TypeVar

from paglets.core.errors import EnvelopeError, RequestError
from paglets.core.state import PagletState
from paglets.persistence.paths import under
from paglets.wire.bigbytes import pread_bytes
from paglets.wire.envelope import (
    PREFIX,
    EnvelopeHeader,
    check_length,
    class_path_of,
    envelope_size,
    read_header,
)
from paglets.wire.landing import write_all, write_atomic
from paglets.wire.state_json import state_from_json

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["EnvelopeReader", "check_small", "read_small"]

S = TypeVar("S", bound=PagletState)


def read_small(path: Path, up_to: int) -> tuple[EnvelopeHeader, bytes | None]:
    """The header of the envelope at ``path``, and its whole content if at most ``up_to`` bytes.

    Raises:
        EnvelopeError: the file is not exactly one envelope.
    """
    with path.open("rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size > up_to:
            data = None
        else:
            data = f.read(size + 1)
            if len(data) != size:
                raise EnvelopeError(f"{path}: changed while it was read")
    if data is None:
        with EnvelopeReader(path) as reader:
            return reader.header, None
    try:
        return check_small(data), data
    except EnvelopeError as exc:
        raise EnvelopeError(f"{path}: {exc}") from None


def check_small(data: bytes) -> EnvelopeHeader:
    """The header of the envelope ``data``, which must be exactly one whole envelope.

    Raises:
        EnvelopeError: a bad header, or more or fewer bytes than it declares.
    """
    header, start = read_header(data)
    check_length(None, len(data), envelope_size(header, start))
    return header


class EnvelopeReader:
    """An envelope file on disk, mapped into memory and checked to be whole.

    Use it as a context manager; what it returns are copies, valid after `close`.

    Attributes:
        path: the envelope file.
        header: its decoded header.
    """

    def __init__(self, path: Path) -> None:
        """Open and check ``path``; `EnvelopeError` if it is not exactly one envelope."""
        self.path = path
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < PREFIX.size:
                raise EnvelopeError(f"{path}: truncated: {size} of at least {PREFIX.size} bytes")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._map)
        try:
            self.header, self._state_at = read_header(self._view)
            check_length(path, size, envelope_size(self.header, self._state_at))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Unmap the file; idempotent."""
        self._view.release()
        self._map.close()

    def _parts(self, stack: contextlib.ExitStack, at: int, sizes: list[int]) -> list[memoryview]:
        bounds = itertools.pairwise(itertools.accumulate(sizes, initial=at))
        return [stack.enter_context(self._view[start:end]) for start, end in bounds]

    def state(self, cls: type[S]) -> S:
        """Rebuild the state as ``cls``, which must be the class the header names.

        Raises:
            EnvelopeError: the header names another state class, or the state is not JSON.
            InvalidStateError: the state does not fit ``cls``.
        """
        if self.header.state_class_path != class_path_of(cls):
            raise EnvelopeError(
                f"{self.path}: the envelope holds state of class "
                f"{self.header.state_class_path!r}, not {class_path_of(cls)!r}"
            )
        start, end = self._state_at, self._state_at + self.header.state_len
        try:
            data = json.loads(str(self._view[start:end], "utf-8"))
        except (ValueError, RecursionError) as exc:
            raise EnvelopeError(f"{self.path}: the state is not UTF-8 JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EnvelopeError(f"{self.path}: the state must be a JSON object")
        # Blobs are read with pread, not copied out of the mapping: one copy from
        # the page cache, about twice as fast for large ones in a fresh process,
        # and the mapped pages never count in the reader's memory.
        return state_from_json(cls, data, self._read_blobs(end, self.header.blobs))

    def _read_blobs(self, at: int, sizes: list[int]) -> list[bytes]:
        blobs = []
        with self.path.open("rb", buffering=0) as f:
            for size in sizes:
                blobs.append(_pread_exactly(f.fileno(), size, at, self.path))
                at += size
        return blobs

    def _file_parts(self, stack: contextlib.ExitStack, *, check: bool = True) -> list[memoryview]:
        """The manifest's files, each checked against its SHA-256 (with ``check``)."""
        files, header = self.header.files, self.header
        start = self._state_at + header.state_len + sum(header.blobs)
        parts = self._parts(stack, start, [f.size for f in files])
        for entry, part in zip(files, parts, strict=True):
            if check and hashlib.sha256(part).hexdigest() != entry.sha256:
                raise EnvelopeError(f"{self.path}: file {entry.name!r} fails its SHA-256")
        return parts

    def check_files(self) -> None:
        """Check every file of the manifest against its SHA-256, writing nothing.

        Raises:
            EnvelopeError: a file's SHA-256 does not match.
        """
        with contextlib.ExitStack() as stack:
            self._file_parts(stack)

    def extract_files(
        self, dest_dir: Path, *, sync: bool = False, checked: bool = False
    ) -> list[Path]:
        """Write every file of the manifest under ``dest_dir``, after checking all digests.

        ``checked`` skips the digests: this process checked them in this very file
        (`check_files`) already.

        Each file goes to `paglets.persistence.paths.under` ``(dest_dir, name)``:
        never outside ``dest_dir``, not even through a symbolic link there.

        Returns:
            The paths written, in manifest order.

        Raises:
            EnvelopeError: a file's SHA-256 does not match, or a name leads out of
                ``dest_dir`` (through a symbolic link already there).
        """
        files = self.header.files
        with contextlib.ExitStack() as stack:
            parts = self._file_parts(stack, check=not checked)
            dest_dir.mkdir(parents=True, exist_ok=True)
            root = dest_dir.resolve()
            return [_place(root, e.name, part, sync) for e, part in zip(files, parts, strict=True)]


def _pread_exactly(fd: int, size: int, offset: int, path: Path) -> bytes:
    data = pread_bytes(fd, size, offset)
    if len(data) != size:
        raise EnvelopeError(f"{path}: truncated while reading the state")
    return data


def _place(root: Path, name: str, data: memoryview, sync: bool) -> Path:
    try:
        target = under(root, name)
    except RequestError as exc:
        raise EnvelopeError(f"file {name!r} would be written outside {root}: {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)  # at most MAX_FILE_DEPTH - 1 of them
    write_atomic(target, lambda fd, _tmp: write_all(fd, [data]), sync=sync)
    return target
