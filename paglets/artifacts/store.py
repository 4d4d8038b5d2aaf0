"""``ArtifactStore``: a host's artifacts on disk, within a quota, never half-written.

Layout under ``<home>/artifacts`` (every path built by
`paglets.persistence.paths.under`):

- ``blobs/<sha256>``: the bytes, named by their checksum (two names with the
  same bytes share one blob, counted once against the quota);
- ``names/<name>.json``: an artifact: its name, size, sha256 and creation time;
- ``tmp/``: uploads in progress.

An upload (`receive`) declares its size and sha256 first; it is refused at once
if it does not fit in the quota (counting uploads in progress). Its bytes go to
a new file in ``tmp/``, hashed as they arrive; only when all of them are there
and their sha256 is the one declared is the file fsynced and renamed into
``blobs/``, and then the name written (to a temporary file, renamed). Anything
else (the sender stops or lies, the checksum differs, the host dies) leaves at
most a file in ``tmp/``, removed at once or at the next start, never an
artifact. A blob no name points at (a crash between the two renames) is
removed at start too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import uuid
from typing import TYPE_CHECKING

from paglets.artifacts.model import ArtifactInfo, check_name, check_sha256
from paglets.core.errors import (
    ArtifactNotFoundError,
    ChecksumMismatchError,
    PayloadTooLargeError,
    ProtocolError,
    QuotaExceededError,
    RequestError,
)
from paglets.persistence.paths import under

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":  # noqa: PLR2004
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


class ArtifactStore:
    """See the module docstring.

    Args:
        root: the store's directory (``<home>/artifacts``).
        host: the host's name, on each `ArtifactInfo`.
        quota: bytes of blobs kept at most.
    """

    def __init__(self, root: Path, host: str, quota: int) -> None:
        self.root = root
        self.host = host
        self.quota = quota
        self._names: dict[str, ArtifactInfo] = {}
        self._reserved = 0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<ArtifactStore {self.root} {len(self._names)} artifacts, {self.used} bytes>"

    # -- start ----------------------------------------------------------------------

    def open(self) -> None:
        """Make the directories, drop unfinished uploads, read the names, drop orphan blobs."""
        for part in ("blobs", "names", "tmp"):
            under(self.root, part).mkdir(parents=True, exist_ok=True)
        for leftover in under(self.root, "tmp").iterdir():
            leftover.unlink(missing_ok=True)
        for entry in under(self.root, "names").iterdir():
            info = self._read_name(entry)
            if info is None or not under(self.root, "blobs", info.sha256).is_file():
                entry.unlink(missing_ok=True)  # a torn name, or one whose blob is gone
                continue
            self._names[info.name] = info
        kept = {info.sha256 for info in self._names.values()}
        for blob in under(self.root, "blobs").iterdir():
            if blob.name not in kept:
                blob.unlink(missing_ok=True)

    def _read_name(self, path: Path) -> ArtifactInfo | None:
        try:
            info = ArtifactInfo.from_dict(json.loads(path.read_bytes()))
        except (OSError, ValueError, ProtocolError):
            return None
        return info if path.name == f"{info.name}.json" else None

    # -- reading --------------------------------------------------------------------

    @property
    def used(self) -> int:
        """Bytes of blobs kept (a blob two names share counts once)."""
        return sum({i.sha256: i.size for i in self._names.values()}.values())

    def list(self) -> list[ArtifactInfo]:
        """Every artifact, by name."""
        return [self._names[name] for name in sorted(self._names)]

    def info(self, name: str) -> ArtifactInfo:
        """The artifact ``name``.

        Raises:
            RequestError: a bad name; ArtifactNotFoundError: no such artifact here.
        """
        found = self._names.get(check_name(name))
        if found is None:
            raise ArtifactNotFoundError(
                f"host {self.host} has no artifact {name!r}; 'paglets-artifacts list' shows "
                "what it has"
            )
        return found

    def blob(self, info: ArtifactInfo) -> Path:
        """Where the bytes of ``info`` are."""
        return under(self.root, "blobs", info.sha256)

    # -- writing --------------------------------------------------------------------

    def _reserve(self, size: int) -> None:
        if size > self.quota:
            raise PayloadTooLargeError(
                f"an artifact of {_size(size)} is larger than host {self.host}'s whole artifact "
                f"quota of {_size(self.quota)}; raise it (--artifact-quota, or artifact_quota "
                "in launch.toml [limits]) or put it on another host"
            )
        if self.used + self._reserved + size > self.quota:
            raise QuotaExceededError(
                f"an artifact of {_size(size)} does not fit: host {self.host} keeps "
                f"{_size(self.used)} of its {_size(self.quota)} quota "
                f"({_size(self._reserved)} more being uploaded); remove some with "
                "'paglets-artifacts rm NAME', or raise --artifact-quota"
            )
        self._reserved += size

    async def receive(
        self, name: str, size: int, sha256: str, chunks: AsyncIterator[bytes]
    ) -> ArtifactInfo:
        """Store ``chunks`` as the artifact ``name`` (replacing one of that name) once they
        are exactly ``size`` bytes whose sha256 is ``sha256``; see the module docstring.

        Raises:
            RequestError: a bad name, size or sha256, or a body longer or shorter than
                ``size``; PayloadTooLargeError: larger than the quota; QuotaExceededError:
                it does not fit now; ChecksumMismatchError: the bytes are not those declared.
        """
        name, sha256 = check_name(name), check_sha256(sha256)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RequestError("an artifact's size must be a whole number of bytes")
        self._reserve(size)
        tmp = under(self.root, "tmp", uuid.uuid4().hex)
        try:
            digest = await self._write(tmp, size, chunks)
            if digest != sha256:
                raise ChecksumMismatchError(
                    f"the {_size(size)} received for artifact {name!r} have sha256 {digest}, "
                    f"not the {sha256} declared; nothing was kept: send it again"
                )
            return await self._commit(tmp, name, size, sha256)
        finally:
            self._reserved -= size
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def _write(self, tmp: Path, size: int, chunks: AsyncIterator[bytes]) -> str:
        """Write ``chunks`` to ``tmp`` (fsynced); their sha256."""
        hasher = hashlib.sha256()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            written = 0

            def put(chunk: bytes) -> None:
                hasher.update(chunk)
                os.write(fd, chunk)

            async for chunk in chunks:
                written += len(chunk)
                if written > size:
                    raise RequestError(
                        f"the upload is longer than the {size} bytes it declared; nothing was kept"
                    )
                await asyncio.to_thread(put, chunk)
            if written != size:
                raise RequestError(
                    f"the upload ended at {written} of the {size} bytes it declared; "
                    "nothing was kept: send it again"
                )
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        return hasher.hexdigest()

    async def _commit(self, tmp: Path, name: str, size: int, sha256: str) -> ArtifactInfo:
        info = ArtifactInfo(name, size, sha256, time.time(), self.host)
        async with self._lock:
            await asyncio.to_thread(self._write_files, info, tmp)
            self._named(info)
        return info

    async def add_name(self, source: ArtifactInfo, name: str) -> ArtifactInfo:
        """``source``'s bytes under another name too (a copy on the same host: no bytes move)."""
        info = ArtifactInfo(check_name(name), source.size, source.sha256, time.time(), self.host)
        async with self._lock:
            await asyncio.to_thread(self._write_files, info, None)
            self._named(info)
        return info

    def _write_files(self, info: ArtifactInfo, tmp: Path | None) -> None:
        """Put the blob ``tmp`` in place (unless those bytes are kept already), then the name."""
        blob = self.blob(info)
        if tmp is not None and not blob.exists():
            tmp.chmod(0o444)
            tmp.replace(blob)
        record = under(self.root, "tmp", f"{uuid.uuid4().hex}.json")
        record.write_text(json.dumps(info.to_dict()))
        record.replace(under(self.root, "names", f"{info.name}.json"))

    def _named(self, info: ArtifactInfo) -> None:
        old = self._names.get(info.name)
        self._names[info.name] = info
        if old is not None:
            self._drop_blob(old)

    async def remove(self, name: str) -> ArtifactInfo:
        """Remove the artifact ``name``; returns what it was.

        Raises:
            RequestError: a bad name; ArtifactNotFoundError: no such artifact here.
        """
        async with self._lock:
            info = self.info(name)
            del self._names[info.name]
            await asyncio.to_thread(self._remove_files, info)
        return info

    def _remove_files(self, info: ArtifactInfo) -> None:
        under(self.root, "names", f"{info.name}.json").unlink(missing_ok=True)
        self._drop_blob(info)

    def _drop_blob(self, info: ArtifactInfo) -> None:
        """Remove the blob of ``info`` unless another name still points at it."""
        if all(other.sha256 != info.sha256 for other in self._names.values()):
            self.blob(info).unlink(missing_ok=True)
