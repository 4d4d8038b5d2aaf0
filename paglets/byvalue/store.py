"""A host's code store: the pickled classes it may run, by SHA-256, and the trust rule.

A host runs a class shipped by value only when one of these holds:

- **the code was registered in this very process**
  (`paglets.byvalue.local.register_in_process`): a
  client of an embedded `Host` hands the code over by a function call, not over
  the network; the code already runs here, so running it in a child adds nothing;
  the same holds for the code a paglet sends its host to create a paglet of
  (``self.context.create``): its process already runs code here;
- **the host trusts code by value** (``--trust-code-by-value``, which needs an
  API key): a key holder may send code (``PUT /v1/code/{sha256}``, or with a
  moving paglet), and the host keeps it under ``<home>/code/<sha256>.pkl``.

Anything else that names a by-value class (a create, an arriving envelope, an
activation of a checkpoint) is refused with `CodeNotTrustedError`, before any
process is started for it. The host never unpickles code itself: it hands the
bytes to the paglet's child (`paglets.byvalue.pickling.load_class`).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Final

from paglets.byvalue.local import in_process
from paglets.byvalue.refs import CodeRef, check_code, check_sha256
from paglets.core.errors import (
    CodeNotFoundError,
    CodeNotTrustedError,
    StorageError,
)
from paglets.persistence.paths import under
from paglets.wire.landing import write_all, write_atomic

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CodeStore"]

_CACHED_MAX: Final = 256  # classes read from disk kept in memory
MAX_STORED: Final = 1 << 30
"""The most bytes of code one host keeps on disk, all classes together."""


def _not_trusted(host_name: str, what: str) -> CodeNotTrustedError:
    return CodeNotTrustedError(
        f"host {host_name} does not trust code by value, so {what} cannot run there; start "
        "that host with --trust-code-by-value (it needs an API key), or move the class into "
        "a module that host can import (--allow-module)"
    )


class CodeStore:
    """The code one host may run, by SHA-256; see the module docstring.

    Args:
        root: where code sent to this host is kept (``<home>/code``).
        host_name: named in errors.
        trusted: whether the host takes code by value from key holders.
        fsync: flush kept code to disk before it counts.
    """

    def __init__(self, root: Path, host_name: str, *, trusted: bool, fsync: bool = True) -> None:
        self.root = root
        self.host_name = host_name
        self.trusted = trusted
        self.fsync = fsync
        self._cached: dict[str, bytes] = {}
        self._lock = asyncio.Lock()
        self._stored: int | None = None  # bytes kept on disk, counted at the first write

    def __repr__(self) -> str:
        return f"<CodeStore {self.root} trusted={self.trusted}>"

    def _file(self, sha256: str) -> Path:
        return under(self.root, f"{check_sha256(sha256)}.pkl")

    def knows(self, sha256: str) -> bool:
        """Whether this host may run the code of that hash now, and has it."""
        if in_process(sha256) is not None:
            return True
        return self.trusted and (sha256 in self._cached or self._file(sha256).is_file())

    def check_accepts(self, sha256: str) -> None:
        """Refuse code of that hash from the wire unless this host may keep it.

        Raises:
            RequestError: ``sha256`` is not 64 lowercase hex digits.
            CodeNotTrustedError: this host does not trust code by value, and the
                code was not registered in its process.
        """
        check_sha256(sha256)
        if not self.trusted and in_process(sha256) is None:
            raise _not_trusted(self.host_name, "the code sent")

    async def put(self, sha256: str, code: bytes) -> bool:
        """Keep ``code`` sent by a key holder; returns whether it was new here.

        Raises:
            RequestError: ``code`` is over the size limit or does not hash to ``sha256``.
            CodeNotTrustedError: this host does not trust code by value (and does
                not know this code already).
        """
        self.check_accepts(sha256)
        check_code(code, sha256, "the code sent")
        if self.knows(sha256):
            return False
        await self._keep(sha256, code)
        return True

    def check_runnable(self, ref: CodeRef) -> None:
        """Refuse, without reading it, code this host may not run or does not have.

        Raises:
            CodeNotTrustedError: not registered in this process, and not trusted.
            CodeNotFoundError: trusted, but not here.
        """
        if in_process(ref.sha256) is not None:
            return
        if not self.trusted:
            raise _not_trusted(self.host_name, f"class {ref.class_path} (shipped by value)")
        if ref.sha256 not in self._cached and not self._file(ref.sha256).is_file():
            raise self._missing(ref)

    def _missing(self, ref: CodeRef) -> CodeNotFoundError:
        return CodeNotFoundError(
            f"host {self.host_name} does not have the code of {ref.class_path} "
            f"(SHA-256 {ref.sha256}); send it first (PUT /v1/code/{ref.sha256})"
        )

    async def code_for(self, ref: CodeRef) -> bytes:
        """The code of ``ref``, to hand to the paglet's child.

        Raises:
            CodeNotTrustedError: the code was not registered in this process and
                this host does not trust code by value.
            CodeNotFoundError: this host trusts code by value but does not have it.
        """
        code = in_process(ref.sha256)
        if code is not None:
            if ref.sha256 not in self._cached:  # kept once, so a checkpoint of it can
                await self._keep(ref.sha256, code)  # start again on a trusting restart
            return code
        if not self.trusted:
            raise _not_trusted(self.host_name, f"class {ref.class_path} (shipped by value)")
        code = self._cached.get(ref.sha256)
        if code is None:
            try:
                data = await asyncio.to_thread(self._file(ref.sha256).read_bytes)
            except FileNotFoundError:
                raise self._missing(ref) from None
            code = ref.check(data)  # a damaged file is refused, not run
            self._remember(ref.sha256, code)
        return code

    def _remember(self, sha256: str, code: bytes) -> None:
        if len(self._cached) >= _CACHED_MAX:
            self._cached.pop(next(iter(self._cached)))
        self._cached[sha256] = code

    async def _keep(self, sha256: str, code: bytes) -> None:
        path = self._file(sha256)
        async with self._lock:
            if not path.is_file():
                if self._stored is None:
                    self._stored = await asyncio.to_thread(self._count)
                if self._stored + len(code) > MAX_STORED:
                    raise StorageError(
                        f"host {self.host_name} keeps {self._stored} bytes of code by value, "
                        f"its limit is {MAX_STORED}; remove code no paglet uses from {self.root}"
                    )
                await asyncio.to_thread(self._write, path, code)
                self._stored += len(code)
        self._remember(sha256, code)

    def _count(self) -> int:
        try:
            return sum(e.stat().st_size for e in os.scandir(self.root) if e.is_file())
        except FileNotFoundError:
            return 0

    def _write(self, path: Path, code: bytes) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

        def fill(fd: int, _tmp: Path) -> None:
            write_all(fd, [code])

        write_atomic(path, fill, sync=self.fsync)  # owner-only, as every file it makes
