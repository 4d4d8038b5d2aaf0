"""``FileBody``: a file as an HTTP request body, sent by the kernel where it can.

aiohttp sends a request body by copying each chunk through Python: read from
the file, then written to the socket. `FileBody` hands the socket and the file
to ``sendfile(2)`` instead (`asyncio.loop.sendfile`), so the bytes go from the
page cache to the socket without passing through the process; for 64 MiB that
saves the sending process about two thirds of its CPU time.

The first bytes still go through aiohttp's writer, because the request's
headers are sent with them. Where the kernel cannot do it (a TLS connection,
a platform without ``sendfile``), the rest goes in 1 MiB chunks, each read by a
worker thread while the one before is sent.

The file may still be growing (`GrowingFile`): another process writes it front
to back, up to a size it promised. The body follows the writer, and sends the
last byte only once the file is whole and its owner releases it, so a receiver
that needs every byte (as a movement target does) cannot take a file its
writer gave up on, nor one its sender has not made ready to be taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp.payload import Payload

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from aiohttp.abc import AbstractStreamWriter

__all__ = ["CHUNK", "FileBody", "GrowingFile"]

CHUNK = 1 << 20
_HEAD = 64 * 1024  # sent through aiohttp's writer, with the request headers
_POLL = 0.001  # seconds between looks at a growing file that has nothing new


class GrowingFile:
    """A file another process is writing front to back, up to ``size`` bytes.

    Its writer names it by ``paths``: where it is written, then where it is
    renamed to once whole. `open` it (under whichever name it has by then),
    tell it how the writing ended with `finished` or `failed`, `release` its
    last byte when it may go, and `close` it.
    """

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = tuple(paths), size
        self.path, self.fd = self.paths[0], -1
        loop = asyncio.get_running_loop()
        self._written: asyncio.Future[None] = loop.create_future()  # how the writing ended
        self._released: asyncio.Future[None] = loop.create_future()  # the last byte may go
        for fut in (self._written, self._released):
            fut.add_done_callback(_retrieved)

    def __repr__(self) -> str:
        state = "growing" if not self.done else self.failure or "whole"
        return f"<GrowingFile {self.path} {self.size} bytes, {state}>"

    async def open(self) -> None:
        """Open the first of `paths` that exists.

        Raises:
            FileNotFoundError: none of them exists.
        """

        def first() -> tuple[int, Path]:
            for path in self.paths:
                with contextlib.suppress(FileNotFoundError):
                    return os.open(path, os.O_RDONLY), path
            raise FileNotFoundError(f"none of {', '.join(map(str, self.paths))} exists")

        self.fd, self.path = await asyncio.to_thread(first)

    @property
    def done(self) -> bool:
        """The writer said how it ended (or `failed` was called)."""
        return self._written.done()

    @property
    def failure(self) -> BaseException | None:
        """Why the file will never be whole; ``None`` while growing, or once whole."""
        return self._written.exception() if self._written.done() else None

    @property
    def released(self) -> bool:
        """The last byte may go (`release`)."""
        return self._released.done() and self._released.exception() is None

    @property
    def held(self) -> BaseException | None:
        """Why the last byte will never go (what `failed` was told); ``None`` until then."""
        return self._released.exception() if self._released.done() else None

    def finished(self) -> None:
        """The writer wrote all ``size`` bytes (ignored once the writing ended)."""
        if not self._written.done():
            self._written.set_result(None)

    def failed(self, why: BaseException) -> None:
        """The file will never be whole, or never go whole: ``why``.

        The writer gave up or died, or whoever sends it cannot let it go; a
        body waiting for more of it raises ``why``. Once `release` d, ignored.
        """
        if not self._written.done():
            self._written.set_exception(why)
        if not self._released.done():
            self._released.set_exception(why)

    def release(self) -> None:
        """Let the last byte go, now that the writer `finished` it.

        Raises:
            RuntimeError: the writer has not said the file is whole.
        """
        if not self._written.done() or self._written.exception() is not None:
            raise RuntimeError(f"{self!r} is not whole; its last byte cannot go")
        if not self._released.done():
            self._released.set_result(None)

    async def wait_released(self) -> None:
        """Wait until `release` d; raises what `failed` was told instead."""
        await asyncio.shield(self._released)

    async def settled(self) -> BaseException | None:
        """Wait until the writing ended; returns its `failure`."""
        await asyncio.wait([self._written])
        return self.failure

    async def ready(self, sent: int) -> int:
        """How many bytes may be sent, once more than ``sent`` may be.

        All of them once `release` d; until then, all but the last byte of
        what is written so far.

        Raises:
            BaseException: what `failed` was told, or `OSError` if the file is
                not ``size`` bytes long once whole.
        """
        while True:
            if self._released.done():
                self._released.result()
                length = os.fstat(self.fd).st_size
                if length != self.size:
                    raise OSError(f"{self.path} is {length} bytes, not the {self.size} promised")
                return self.size
            written = min(os.fstat(self.fd).st_size, self.size - 1)
            if written > sent:
                return written
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._released), _POLL)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class FileBody(Payload):
    """The first ``size`` bytes of the file at ``path``, as a request body.

    Args:
        path: the file; it is opened when the body is sent, once per attempt.
            A `GrowingFile` is followed as it grows; its owner closes it.
        size: how many bytes to send (the request's ``Content-Length``).
        content_type: the body's media type.
        progress: called with the number of bytes sent so far, once the first
            `CHUNK` bytes are out and again later (a test's crash point).
    """

    def __init__(
        self,
        path: Path | GrowingFile,
        size: int,
        *,
        content_type: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(path, content_type=content_type)
        self._path = path
        self._size = self._length = size
        self._progress = progress

    def __repr__(self) -> str:
        return f"<FileBody {self._path} {self._length} bytes>"

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:  # noqa: ARG002
        raise TypeError(f"{self!r} is binary; it has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        size = self._length if content_length is None else min(self._length, content_length)
        pool = ThreadPoolExecutor(1, thread_name_prefix="paglets-body-out")
        fd = -1
        try:
            if isinstance(self._path, GrowingFile):
                fd = os.dup(self._path.fd)
            else:
                fd = await _run(pool, os.open, self._path, os.O_RDONLY)
            sent = 0
            first = min(_HEAD, await self._ready(0, size))
            head = await _run(pool, _pread, fd, first, 0, self._path)
            await writer.write(head)
            sent = len(head)
            if sent < size:
                sent = await self._sendfile(writer, fd, sent, size)
            if sent < size:
                await self._chunks(writer, pool, fd, sent, size)
        finally:
            # queued behind a read still running, so the fd is never closed under it
            if fd >= 0:
                pool.submit(os.close, fd)
            pool.shutdown(wait=False)

    async def _ready(self, sent: int, size: int) -> int:
        """How far the body may be sent now (all of it, unless the file is growing)."""
        if isinstance(self._path, GrowingFile):
            return min(size, await self._path.ready(sent))
        return size

    async def _sendfile(self, writer: AbstractStreamWriter, fd: int, sent: int, size: int) -> int:
        """Send from ``sent`` by ``sendfile(2)``; returns where it got (``sent`` if unavailable)."""
        transport = writer.transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return sent
        loop = asyncio.get_running_loop()
        # a file object only for the loop's sake: it reads nothing itself
        with os.fdopen(os.dup(fd), "rb", buffering=0) as file:
            while sent < size:
                step = await self._ready(sent, size) - sent
                if sent < CHUNK:
                    step = min(step, CHUNK)
                try:
                    n = await loop.sendfile(transport, file, sent, step, fallback=False)
                except (asyncio.SendfileNotAvailableError, RuntimeError):
                    if sent <= _HEAD:
                        return sent  # nothing went by sendfile: chunks will do
                    raise
                if n < step:
                    raise OSError(f"{self._path} ended at {sent + n} of {size} bytes")
                sent += n
                if self._progress is not None:
                    self._progress(sent)
        return sent

    async def _chunks(
        self,
        writer: AbstractStreamWriter,
        pool: ThreadPoolExecutor,
        fd: int,
        sent: int,
        size: int,
    ) -> None:
        async def read(at: int) -> bytes:
            n = min(CHUNK, await self._ready(at, size) - at)
            chunk: bytes = await _run(pool, _pread, fd, n, at, self._path)
            return chunk

        ahead = asyncio.ensure_future(read(sent))
        try:
            while sent < size:
                chunk = await ahead
                sent += len(chunk)
                if sent < size:
                    ahead = asyncio.ensure_future(read(sent))
                await writer.write(chunk)
                if self._progress is not None:
                    self._progress(sent)
        finally:
            if not ahead.done():
                ahead.cancel()
                await asyncio.wait([ahead])
            if not ahead.cancelled():
                ahead.exception()  # retrieved: the failure that matters is raised already


def _retrieved(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _run(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    return asyncio.wrap_future(pool.submit(fn, *args))


def _pread(fd: int, size: int, offset: int, path: Path | GrowingFile) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) < size:
        raise OSError(f"{path} ended at {offset + len(data)} of at least {offset + size} bytes")
    return data
