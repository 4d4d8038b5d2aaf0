"""Receiving a movement envelope from a stream into a file, all or nothing.

The byte layout is described in `paglets.wire.envelope`. `receive_envelope` takes
any ``read(n)`` coroutine returning up to ``n`` bytes and ``b""`` at the end, so
aiohttp's ``request.content.read`` fits as is; the header is checked (and a long
one decoded off the event loop) before any of the rest is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from paglets.core.errors import EnvelopeError, PayloadTooLargeError
from paglets.persistence.files import fsync_dir
from paglets.wire.envelope import (
    PARSE_OFF_LOOP,
    PREFIX,
    SMALL_MAX,
    EnvelopeHeader,
    check_length,
    envelope_size,
    header_length,
    read_header,
)
from paglets.wire.landing import CHUNK, create_new, land_small, temp_for, write_all

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence
    from pathlib import Path

__all__ = ["receive_envelope"]

T = TypeVar("T")
Read = Callable[[int], "Awaitable[bytes]"]


class _Spool:
    """The temporary file being received; one worker thread runs its steps, in order."""

    def __init__(self, dest: Path) -> None:
        self.dest, self.tmp, self.fd = dest, temp_for(dest), -1
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="paglets-envelope")

    def run(self, step: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.wrap_future(self.pool.submit(step, *args))

    def open(self) -> None:
        self.fd = create_new(self.tmp)

    def write(self, chunks: Sequence[bytes]) -> None:
        write_all(self.fd, chunks)

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
            check_length(None, done, total)
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
    chunk_size: int = CHUNK,
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
    prefix = await _read_exactly(read, PREFIX.size, 0)
    raw = await _read_exactly(read, header_length(prefix), PREFIX.size)
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
        check_length(None, start + sum(map(len, body)), total)
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
