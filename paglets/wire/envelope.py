"""The movement envelope: one paglet's identity, state and files as one binary stream.

The same bytes go host to host (``application/vnd.paglets.envelope``), host to
child and into the spool on disk. Format version 1, integers big-endian::

    magic    4 bytes          b"PGLE"
    version  u16              1
    hlen     u32              length of the header, at most MAX_HEADER (1 MiB)
    header   hlen bytes       UTF-8 JSON object: the EnvelopeHeader fields, exactly
    state    state_len bytes  UTF-8 JSON of the state (`state_to_json` with blobs)
    blobs    sum(blobs)       the state's large bytes values, raw, back to back
    files    sum(sizes)       each registered file, raw, in manifest order

Nothing follows the last file: an envelope is exactly
``10 + hlen + state_len + sum(blobs) + sum(file sizes)`` bytes long.

Decoding never runs code named by the data: the header is checked field by
field, its agent and transfer ids must be well-formed identifiers
(`paglets.core.ids.check_id`), file names must be relative POSIX paths within
the caps (`MAX_FILES`, `MAX_FILE_DEPTH`, `MAX_FILE_NAME`), files are extracted
only under their destination (`paglets.persistence.paths.under`), and a header
longer than `PARSE_OFF_LOOP` is decoded off the event loop. The state is rebuilt
only as the class the receiver asks for, and only if the header names that very class.
`receive_envelope` takes any ``read(n)`` coroutine returning up to ``n`` bytes and
``b""`` at the end, so aiohttp's ``request.content.read`` fits as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import mmap
import os
import re
import secrets
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from paglets.core.errors import EnvelopeError, PayloadTooLargeError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.core.state import PagletState
from paglets.persistence.files import fsync_dir
from paglets.persistence.paths import under
from paglets.wire.bigbytes import pread_bytes
from paglets.wire.state_json import state_from_json, state_to_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence
    from pathlib import Path

__all__ = [
    "ENVELOPE_VERSION",
    "FILE_MODES",
    "INLINE_MAX",
    "KINDS",
    "MAX_FILES",
    "MAX_FILE_DEPTH",
    "MAX_FILE_NAME",
    "MAX_HEADER",
    "MEDIA_TYPE",
    "PARSE_OFF_LOOP",
    "SMALL_MAX",
    "EnvelopeHeader",
    "EnvelopeReader",
    "EnvelopeSpec",
    "FileEntry",
    "SourceFile",
    "check_small",
    "envelope_size",
    "land_small",
    "peek_header",
    "read_header",
    "read_small",
    "receive_envelope",
    "write_envelope",
]

S = TypeVar("S", bound=PagletState)
T = TypeVar("T")
Read = Callable[[int], "Awaitable[bytes]"]

MEDIA_TYPE: Final = "application/vnd.paglets.envelope"
ENVELOPE_VERSION: Final = 1
MAX_HEADER: Final = 1 << 20
# Caps on the file manifest, checked as the header is parsed: each file name becomes
# a path (and its parents directories) when the envelope is extracted, so these bound
# what an envelope can make its receiver build, in memory and on disk.
MAX_FILES: Final = 512  # files in one envelope (a checkpoint then names all within MAX_HEADER)
MAX_FILE_DEPTH: Final = 8  # parts of one file name ("a/b/c" has 3): at most 7 directories
MAX_FILE_NAME: Final = 512  # characters in one file name, all its parts together
# A header longer than this is decoded in a worker thread, off the receiver's event loop.
PARSE_OFF_LOOP: Final = 64 * 1024
# The largest envelope a paglet's process hands its host inline (in its call), not by file.
INLINE_MAX: Final = 64 * 1024
# The most bytes after its header an envelope may have and still be taken whole into
# memory and landed in one step (rather than streamed through a file batch by batch).
SMALL_MAX: Final = 4 << 20
KINDS: Final = ("dispatch", "clone", "retract", "checkpoint")
FILE_MODES: Final = ("copy", "move")

_MAGIC = b"PGLE"
_PREFIX = struct.Struct(">4sHI")
_CHUNK = 1 << 20
_MAX_ID = 200
_MAX_TEXT = 2048
# Bytes in one part of a file name: NAME_MAX (255 on Linux and macOS) less room for
# the affixes of the temporary file it is first written as (`_temp_for`).
_MAX_PART = 200


def _is_size(v: Any) -> bool:
    return type(v) is int and v >= 0  # type() excludes bool


def _is_file_name(v: Any) -> bool:
    """A relative POSIX path, within the caps, that stays inside the directory it goes to."""
    if not isinstance(v, str) or not 0 < len(v) <= MAX_FILE_NAME or "\0" in v or "\\" in v:
        return False
    parts = v.split("/", MAX_FILE_DEPTH)  # never more than the cap allows, however many
    return len(parts) <= MAX_FILE_DEPTH and all(
        part not in {"", ".", ".."} and len(part.encode()) <= _MAX_PART for part in parts
    )


_HEX64 = re.compile("[0-9a-f]{64}")
_Checks = dict[str, tuple[Callable[[Any], bool], str]]
_ID = (lambda v: isinstance(v, str) and 0 < len(v) <= _MAX_ID, f"a string of 1-{_MAX_ID} chars")
_SIZE = (_is_size, "a non-negative integer")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_FILE_CHECKS: _Checks = {
    "name": (
        _is_file_name,
        (
            f"a relative POSIX path of at most {MAX_FILE_DEPTH} parts and {MAX_FILE_NAME} "
            f"characters (each part at most {_MAX_PART} bytes), without '..', '.', empty "
            "parts, backslashes or NUL"
        ),
    ),
    "size": _SIZE,
    "mode": (lambda v: v in FILE_MODES, f"one of {list(FILE_MODES)}"),
    "sha256": (lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)), "64 lowercase hex"),
}
_HEADER_IDS = (
    ("agent_id", IdKind.AGENT),
    ("transfer_id", IdKind.TRANSFER),
    ("origin", IdKind.HOST),
    ("source", IdKind.HOST),
)
_HEADER_CHECKS: _Checks = {
    **dict.fromkeys(("agent_id", "class_path", "state_class_path", "transfer_id"), _ID),
    "kind": (lambda v: v in KINDS, f"one of {list(KINDS)}"),
    "hops": _SIZE,
    "origin": _ID,
    "origin_url": (lambda v: isinstance(v, str) and len(v) <= _MAX_TEXT, "a string"),
    "source": _ID,
    "created": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        "a finite number",
    ),
    "ticket": _OBJECT,
    "meta": _OBJECT,
    "state_len": _SIZE,
    "blobs": (lambda v: isinstance(v, list) and all(map(_is_size, v)), "a list of sizes"),
    "files": (
        lambda v: isinstance(v, list) and len(v) <= MAX_FILES,
        f"a list of at most {MAX_FILES} file entries (carry more files as an archive)",
    ),
}


def _check(what: str, data: Any, checks: _Checks) -> None:
    if not isinstance(data, dict):
        raise EnvelopeError(f"{what} must be a JSON object, not {type(data).__name__}")
    unknown, missing = data.keys() - checks.keys(), checks.keys() - data.keys()
    if unknown:
        raise EnvelopeError(f"unknown fields in {what}: {sorted(unknown)}")
    if missing:
        raise EnvelopeError(f"{what} lacks fields: {sorted(missing)}")
    for name, (ok, word) in checks.items():
        if not ok(data[name]):
            raise EnvelopeError(f"{what}.{name} must be {word}, not {data[name]!r:.80}")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One registered file in the manifest: where it goes, how big, its SHA-256."""

    name: str
    size: int
    mode: str
    sha256: str

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Decode and check the JSON form; `EnvelopeError` names what is wrong."""
        _check("file entry", data, _FILE_CHECKS)
        return cls(**data)


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A registered file to pack: its name in the manifest and where it is now."""

    name: str
    path: Path
    mode: str = "copy"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeSpec:
    """The header fields a sender chooses; `write_envelope` works out the rest."""

    agent_id: str
    class_path: str
    state_class_path: str
    transfer_id: str
    kind: str
    hops: int
    origin: str
    origin_url: str
    source: str
    created: float
    ticket: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeHeader(EnvelopeSpec):
    """The spec, plus the sizes of everything after the header and the file manifest."""

    state_len: int
    blobs: list[int]
    files: list[FileEntry]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return data | {"files": [dataclasses.asdict(entry) for entry in self.files]}

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Decode and check the JSON form; `EnvelopeError` names what is wrong.

        The agent id and the transfer id must be well-formed identifiers
        (`paglets.core.ids.check_id`): both become file names on the receiver;
        ``origin`` and ``source`` must be well-formed host names.
        The manifest is within `MAX_FILES`, `MAX_FILE_DEPTH` and `MAX_FILE_NAME`.
        """
        _check("envelope header", data, _HEADER_CHECKS)
        for name, kind in _HEADER_IDS:
            try:
                check_id(data[name], kind)
            except RequestError as exc:
                raise EnvelopeError(f"envelope header.{name}: {exc}") from None
        files = [FileEntry.parse(entry) for entry in data["files"]]
        names = [entry.name for entry in files]
        parents = {name.rsplit("/", i)[0] for name in names for i in range(1, name.count("/") + 1)}
        if len(set(names)) != len(names) or parents & set(names):
            raise EnvelopeError(f"envelope file names collide: {names!r:.200}")
        return cls(**{**data, "created": float(data["created"]), "files": files})


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def envelope_size(header: EnvelopeHeader, state_offset: int) -> int:
    """The total length of an envelope whose state starts at ``state_offset``."""
    return state_offset + header.state_len + sum(header.blobs) + sum(f.size for f in header.files)


def _header_length(prefix: bytes) -> int:
    magic, version, length = _PREFIX.unpack(prefix)
    if magic != _MAGIC:
        raise EnvelopeError(f"not a paglets envelope: it starts {magic!r}, not {_MAGIC!r}")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(
            f"envelope version {version} is not supported: this host reads version "
            f"{ENVELOPE_VERSION} only; run the same paglets release on both hosts"
        )
    if length > MAX_HEADER:
        raise EnvelopeError(f"envelope header of {length} bytes is over the {MAX_HEADER} limit")
    return int(length)


def read_header(data: bytes | memoryview) -> tuple[EnvelopeHeader, int]:
    """Decode the header at the start of an envelope.

    Args:
        data: the envelope's first bytes: at least the prefix and the header.

    Returns:
        The header, and the offset at which the state starts.

    Raises:
        EnvelopeError: bad magic, an unsupported version, a header too short,
            too large, not JSON or not exactly the `EnvelopeHeader` fields.
    """
    if len(data) < _PREFIX.size:
        raise EnvelopeError(f"truncated: {len(data)} of at least {_PREFIX.size} bytes")
    end = _PREFIX.size + _header_length(bytes(data[: _PREFIX.size]))
    if len(data) < end:
        raise EnvelopeError(f"truncated: {len(data)} of at least {end} bytes")
    try:
        decoded = json.loads(str(data[_PREFIX.size : end], "utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise EnvelopeError(f"the envelope header is not UTF-8 JSON: {exc}") from None
    return EnvelopeHeader.parse(decoded), end


def peek_header(fd: int) -> tuple[EnvelopeHeader, int]:
    """The header of the envelope open as ``fd`` (it may still be growing), and its length.

    Returns:
        The header, and where the state starts (so the envelope's whole size
        is ``envelope_size(header, start)``).

    Raises:
        EnvelopeError: a bad or incomplete header.
    """
    prefix = os.pread(fd, _PREFIX.size, 0)
    if len(prefix) == _PREFIX.size:
        prefix += os.pread(fd, _header_length(prefix), _PREFIX.size)
    return read_header(prefix)  # which says what is missing, if anything


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    pending = [memoryview(c).cast("B") for c in chunks if len(c)]
    while pending:
        written = os.writev(fd, pending[:512])
        while written:
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0], written = pending[0][written:], 0


def _temp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _write_atomic(path: Path, fill: Callable[[int, Path], None], *, sync: bool) -> None:
    """Run ``fill(fd, tmp)`` on a new temporary file ``tmp`` beside ``path``, then rename it."""
    tmp = _temp_for(path)
    fd = _create(tmp)
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


def _digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        return {"size": f.tell(), "sha256": sha256}


def _copy_file(fd: int, path: Path, entry: FileEntry) -> None:
    digest, size, buffer = hashlib.sha256(), 0, bytearray(_CHUNK)
    with path.open("rb") as f, memoryview(buffer) as view:
        while (n := f.readinto(buffer)) and (size := size + n) <= entry.size:
            digest.update(view[:n])
            _write_all(fd, [view[:n]])
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
    if spec.state_class_path != _class_path(type(state)):
        raise EnvelopeError(
            f"the spec names state class {spec.state_class_path!r}, "
            f"but the state is a {_class_path(type(state))}"
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
        prefix = _PREFIX.pack(_MAGIC, ENVELOPE_VERSION, len(header_bytes))

        def fill(fd: int, tmp: Path) -> None:
            _write_all(fd, [prefix, header_bytes, state_bytes])
            if started is not None:
                started(tmp, envelope_size(header, len(prefix) + len(header_bytes)))
            _write_all(fd, blobs)
            for source, entry in zip(files, header.files, strict=True):
                _copy_file(fd, source.path, entry)

        _write_atomic(path, fill, sync=sync)
    finally:  # a view left alive (by a traceback) would pin a bytearray of the state
        for blob in blobs:
            blob.release()
    return header


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
    _check_length(None, len(data), envelope_size(header, start))
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
            if size < _PREFIX.size:
                raise EnvelopeError(f"{path}: truncated: {size} of at least {_PREFIX.size} bytes")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._map)
        try:
            self.header, self._state_at = read_header(self._view)
            _check_length(path, size, envelope_size(self.header, self._state_at))
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
        if self.header.state_class_path != _class_path(cls):
            raise EnvelopeError(
                f"{self.path}: the envelope holds state of class "
                f"{self.header.state_class_path!r}, not {_class_path(cls)!r}"
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


def _check_length(path: Path | None, size: int, total: int) -> None:
    where = f"{path}: " if path else ""
    if size < total:
        raise EnvelopeError(f"{where}truncated: {size} of {total} bytes")
    if size > total:
        raise EnvelopeError(f"{where}trailing bytes: {size - total} after the {total} declared")


def _place(root: Path, name: str, data: memoryview, sync: bool) -> Path:
    try:
        target = under(root, name)
    except RequestError as exc:
        raise EnvelopeError(f"file {name!r} would be written outside {root}: {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)  # at most MAX_FILE_DEPTH - 1 of them
    _write_atomic(target, lambda fd, _tmp: _write_all(fd, [data]), sync=sync)
    return target


class _Spool:
    """The temporary file being received; one worker thread runs its steps, in order."""

    def __init__(self, dest: Path) -> None:
        self.dest, self.tmp, self.fd = dest, _temp_for(dest), -1
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="paglets-envelope")

    def run(self, step: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.wrap_future(self.pool.submit(step, *args))

    def open(self) -> None:
        self.fd = _create(self.tmp)

    def write(self, chunks: Sequence[bytes]) -> None:
        _write_all(self.fd, chunks)

    def commit(self, sync: bool) -> None:
        if sync:
            os.fsync(self.fd)
        fd, self.fd = self.fd, -1
        os.close(fd)
        self.tmp.replace(self.dest)
        if sync:
            fsync_dir(self.dest.parent)

    def discard(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        self.tmp.unlink(missing_ok=True)


def land_small(dest: Path, chunks: Sequence[bytes], sync: bool) -> None:
    """Write ``chunks`` to ``dest`` through a temporary file, all or nothing."""
    tmp = _temp_for(dest)
    fd = _create(tmp)
    try:
        _write_all(fd, chunks)
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


async def _read_up_to(read: Read, n: int) -> list[bytes]:
    chunks, got = [], 0
    while got < n and (chunk := await read(n - got)):
        if len(chunk) > n - got:
            raise ValueError(f"read({n - got}) returned {len(chunk)} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return chunks


async def _read_exactly(read: Read, n: int, done: int) -> bytes:
    data = b"".join(await _read_up_to(read, n))
    if len(data) < n:
        raise EnvelopeError(f"truncated: {done + len(data)} of at least {done + n} bytes")
    return data


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _stream_body(  # noqa: PLR0917 - private, one caller
    read: Read, spool: _Spool, done: int, total: int, chunk_size: int, progress: Any
) -> None:
    """Receive the rest, one batch read while the one before it is written."""
    writing: asyncio.Future[None] | None = None
    while done < total:
        batch = await _read_up_to(read, min(chunk_size, total - done))
        if not batch:
            _check_length(None, done, total)
        if writing is not None:
            await writing
        writing = spool.run(spool.write, batch)
        # a failure of a write left behind by another failure is not worth a log line
        writing.add_done_callback(_retrieved)
        done += sum(map(len, batch))
        if progress is not None:
            progress()
    if writing is not None:
        await writing
    if await read(1):
        raise EnvelopeError(f"trailing bytes after the {total} bytes the header declares")


async def receive_envelope(
    read: Read,
    dest: Path,
    *,
    check: Callable[[EnvelopeHeader], None],
    sync: bool,
    max_total: int | None = None,
    chunk_size: int = _CHUNK,
    small_max: int = SMALL_MAX,
    progress: Callable[[], None] | None = None,
    land: Callable[[EnvelopeHeader, list[bytes]], Awaitable[None]] | None = None,
) -> EnvelopeHeader:
    """Stream an envelope from ``read`` to ``dest``, all or nothing.

    The header is read and given to ``check`` before anything else is read or
    written, so a host can refuse early. A small rest (``small_max``) is read
    whole and landed in one step. A larger one goes to a temporary file
    beside ``dest`` in batches of at most ``chunk_size`` bytes, each written by
    a worker thread while the next one is read (so at most two batches are in
    memory at a time), and is renamed to ``dest`` only once exactly the
    declared length has arrived. On any failure the temporary file is removed.

    Args:
        read: ``read(n)`` returns up to ``n`` bytes, ``b""`` at the end of the
            stream (aiohttp's ``request.content.read`` as is).
        dest: where the envelope goes.
        check: called with the header; whatever it raises propagates.
        sync: flush the file and its directory to disk before returning.
        max_total: refuse envelopes declaring more bytes than this.
        chunk_size: the most body bytes in one batch (two may be in memory at once).
        small_max: the most body bytes (after the header) taken whole.
        progress: called after each batch is written (a test's crash point).
        land: lands an envelope of at most ``small_max`` body bytes, given its
            header and all its bytes, instead of a worker thread running
            `land_small` (e.g. in one trip with the caller's own bookkeeping).

    Returns:
        The header of the envelope now at ``dest``.

    Raises:
        EnvelopeError: a bad header, or a stream shorter or longer than declared.
        PayloadTooLargeError: the envelope declares more than ``max_total`` bytes.
    """
    prefix = await _read_exactly(read, _PREFIX.size, 0)
    raw = await _read_exactly(read, _header_length(prefix), _PREFIX.size)
    if len(raw) > PARSE_OFF_LOOP:  # a long header is decoded in a thread, off the loop
        header, start = await asyncio.to_thread(read_header, prefix + raw)
    else:
        header, start = read_header(prefix + raw)
    total = envelope_size(header, start)
    if max_total is not None and total > max_total:
        raise PayloadTooLargeError(f"the envelope is {total} bytes, over the {max_total} limit")
    check(header)
    if total - start <= small_max:
        # A small envelope (most moves): read it whole and land it in one trip
        # to a thread, without a worker of its own.
        body = await _read_up_to(read, total - start)
        _check_length(None, start + sum(map(len, body)), total)
        if await read(1):
            raise EnvelopeError(f"trailing bytes after the {total} bytes the header declares")
        if land is None:
            await asyncio.to_thread(land_small, dest, [prefix, raw, *body], sync)
        else:
            await land(header, [prefix, raw, *body])
        if progress is not None:
            progress()
        return header
    spool = _Spool(dest)
    try:
        await spool.run(spool.open)
        await spool.run(spool.write, [prefix, raw])
        await _stream_body(read, spool, start, total, chunk_size, progress)
        await spool.run(spool.commit, sync)
    except BaseException:
        # Queued behind any write still running, so the fd is never closed under it.
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.shield(spool.run(spool.discard))
        raise
    finally:
        spool.pool.shutdown(wait=False)  # idle by now, or finishing the discard
    return header
