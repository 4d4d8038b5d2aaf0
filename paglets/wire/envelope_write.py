"""Writing a movement envelope: a paglet's state and files packed into one file.

The byte layout is described in `paglets.wire.envelope`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from paglets.core.errors import EnvelopeError
from paglets.wire.envelope import (
    ENVELOPE_VERSION,
    MAGIC,
    MAX_HEADER,
    PREFIX,
    EnvelopeHeader,
    EnvelopeSpec,
    FileEntry,
    SourceFile,
    class_path_of,
    envelope_size,
)
from paglets.wire.landing import CHUNK, write_all, write_atomic
from paglets.wire.state_json import state_to_json

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from paglets.core.state import PagletState

__all__ = ["write_envelope"]


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        return {"size": f.tell(), "sha256": sha256}


def _copy_file(fd: int, path: Path, entry: FileEntry) -> None:
    digest, size, buffer = hashlib.sha256(), 0, bytearray(CHUNK)
    with path.open("rb") as f, memoryview(buffer) as view:
        while (n := f.readinto(buffer)) and (size := size + n) <= entry.size:
            digest.update(view[:n])
            write_all(fd, [view[:n]])
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise EnvelopeError(f"file {path} changed while it was being packed; try again")


def write_envelope(
    path: Path,
    spec: EnvelopeSpec,
    state: PagletState,
    files: Sequence[SourceFile] = (),
    *,
    sync: bool,
    started: Callable[[Path, int], None] | None = None,
) -> EnvelopeHeader:
    """Write an envelope to ``path``, all or nothing (a temporary file, then a rename).

    Large bytes values of the state go out of band, neither encoded nor copied;
    files are streamed. The file is written front to back and never rewritten,
    so another process may read what is there while it grows (``started``).

    Args:
        path: where the envelope goes.
        spec: the header fields the sender chooses.
        state: the paglet's state; its class must be ``spec.state_class_path``.
        files: registered files to carry, in manifest order.
        sync: flush the file and its directory to disk before returning.
        started: called with the temporary file and the envelope's whole size
            once the header and the state's JSON are in it, before the large
            bytes values and the files. Whatever it raises stops the write
            (and removes the temporary file).

    Returns:
        The header written.

    Raises:
        EnvelopeError: a header field is invalid, the state is not of the class
            the spec names, or a file changed while it was packed.
        InvalidStateError: the state holds a value that cannot be encoded.
        OSError: a file cannot be read or the envelope cannot be written.
    """
    if spec.state_class_path != class_path_of(type(state)):
        raise EnvelopeError(
            f"the spec names state class {spec.state_class_path!r}, "
            f"but the state is a {class_path_of(type(state))}"
        )
    blobs: list[memoryview] = []
    try:
        state_bytes = _json(state_to_json(state, blobs))
        spec_fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        entries = [{"name": f.name, "mode": f.mode, **_digest(f.path)} for f in files]
        sizes = {"state_len": len(state_bytes), "blobs": [b.nbytes for b in blobs]}
        header = EnvelopeHeader.parse(spec_fields | sizes | {"files": entries})
        header_bytes = _json(header.to_dict())
        if len(header_bytes) > MAX_HEADER:
            raise EnvelopeError(f"envelope header of {len(header_bytes)} bytes, over {MAX_HEADER}")
        prefix = PREFIX.pack(MAGIC, ENVELOPE_VERSION, len(header_bytes))

        def fill(fd: int, tmp: Path) -> None:
            write_all(fd, [prefix, header_bytes, state_bytes])
            if started is not None:
                started(tmp, envelope_size(header, len(prefix) + len(header_bytes)))
            write_all(fd, blobs)
            for source, entry in zip(files, header.files, strict=True):
                _copy_file(fd, source.path, entry)

        write_atomic(path, fill, sync=sync)
    finally:  # a view left alive (by a traceback) would pin a bytearray of the state
        for blob in blobs:
            blob.release()
    return header
