"""The movement envelope's format and its header record: fields, checks and caps.

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

This module holds the format (the prefix, the caps) and the header record
(`EnvelopeHeader`, its checks, `read_header`, `peek_header`). An envelope is
written by `paglets.wire.envelope_write`, read and landed from a file by
`paglets.wire.envelope_read`, and received from a stream by
`paglets.wire.envelope_receive`; `paglets.wire.landing` writes files all or nothing.

Decoding never runs code named by the data: the header is checked field by
field, its agent and transfer ids must be well-formed identifiers
(`paglets.core.ids.check_id`), file names must be relative POSIX paths within
the caps (`MAX_FILES`, `MAX_FILE_DEPTH`, `MAX_FILE_NAME`), files are extracted
only under their destination (`paglets.persistence.paths.under`), and a header
longer than `PARSE_OFF_LOOP` is decoded off the event loop. The state is rebuilt
only as the class the receiver asks for, and only if the header names that very class.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Self

from paglets.core.errors import EnvelopeError, RequestError
from paglets.core.ids import IdKind, check_id

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "ENVELOPE_VERSION",
    "FILE_MODES",
    "INLINE_MAX",
    "KINDS",
    "MAGIC",
    "MAX_FILES",
    "MAX_FILE_DEPTH",
    "MAX_FILE_NAME",
    "MAX_HEADER",
    "MEDIA_TYPE",
    "PARSE_OFF_LOOP",
    "PREFIX",
    "SMALL_MAX",
    "EnvelopeHeader",
    "EnvelopeSpec",
    "FileEntry",
    "SourceFile",
    "check_length",
    "class_path_of",
    "envelope_size",
    "header_length",
    "peek_header",
    "read_header",
]

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

# The fixed start of every envelope: magic, version, header length (see above).
MAGIC: Final = b"PGLE"
PREFIX: Final = struct.Struct(">4sHI")
_MAX_ID = 200
_MAX_TEXT = 2048
# Bytes in one part of a file name: NAME_MAX (255 on Linux and macOS) less room for
# the affixes of the temporary file it is first written as (`paglets.wire.landing.temp_for`).
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


def class_path_of(cls: type) -> str:
    """``module:qualname``, as the header names a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def envelope_size(header: EnvelopeHeader, state_offset: int) -> int:
    """The total length of an envelope whose state starts at ``state_offset``."""
    return state_offset + header.state_len + sum(header.blobs) + sum(f.size for f in header.files)


def header_length(prefix: bytes) -> int:
    """The header length a `PREFIX` declares; `EnvelopeError` if the prefix is wrong."""
    magic, version, length = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise EnvelopeError(f"not a paglets envelope: it starts {magic!r}, not {MAGIC!r}")
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
    if len(data) < PREFIX.size:
        raise EnvelopeError(f"truncated: {len(data)} of at least {PREFIX.size} bytes")
    end = PREFIX.size + header_length(bytes(data[: PREFIX.size]))
    if len(data) < end:
        raise EnvelopeError(f"truncated: {len(data)} of at least {end} bytes")
    try:
        decoded = json.loads(str(data[PREFIX.size : end], "utf-8"))
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
    prefix = os.pread(fd, PREFIX.size, 0)
    if len(prefix) == PREFIX.size:
        prefix += os.pread(fd, header_length(prefix), PREFIX.size)
    return read_header(prefix)  # which says what is missing, if anything


def check_length(path: Path | None, size: int, total: int) -> None:
    """Refuse an envelope of ``size`` bytes that declares ``total``: too short or too long."""
    where = f"{path}: " if path else ""
    if size < total:
        raise EnvelopeError(f"{where}truncated: {size} of {total} bytes")
    if size > total:
        raise EnvelopeError(f"{where}trailing bytes: {size - total} after the {total} declared")
