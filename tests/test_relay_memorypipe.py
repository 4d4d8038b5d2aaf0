"""A connect-mode host's in-memory connections to its own application (`paglets.mesh.memorypipe`).

A real aiohttp application and a real aiohttp client joined with no socket: a
streamed body arrives whole and in order, the writer waits for a reader that is
slow (flow control, so a big body never piles up in memory), and a request given
up mid-body ends the handler's read, as a dropped socket does, leaving nothing open.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from paglets.mesh.memorypipe import HIGH_WATER, MemoryConnector

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SIZE = 32 << 20
PIECE = 1 << 20


async def test_a_streamed_body_arrives_whole_and_waits_for_a_slow_reader() -> None:
    written = 0
    ahead: list[int] = []
    data = os.urandom(PIECE)

    async def sink(request: web.Request) -> web.Response:
        digest, read = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(256 << 10):
            digest.update(chunk)
            read += len(chunk)
            ahead.append(written - read)
            await asyncio.sleep(0.002)  # a slow reader
        return web.json_response({"read": read, "sha256": digest.hexdigest()})

    async def body() -> AsyncIterator[bytes]:
        nonlocal written
        for _ in range(SIZE // PIECE):
            written += PIECE
            yield data

    app = web.Application()
    app.router.add_post("/sink", sink)
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    try:
        async with (
            aiohttp.ClientSession(connector=MemoryConnector(runner.server)) as http,
            http.post("http://in-memory/sink", data=body()) as response,
        ):
            answer = await response.json()
        assert answer == {
            "read": SIZE,
            "sha256": hashlib.sha256(data * (SIZE // PIECE)).hexdigest(),
        }
        # the writer never ran far ahead of the reader: flow control held it back
        assert max(ahead) <= 2 * HIGH_WATER + 2 * PIECE, max(ahead) // PIECE
    finally:
        await runner.cleanup()


async def test_a_request_given_up_mid_body_ends_the_handlers_read() -> None:
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def sink(request: web.Request) -> web.Response:
        try:
            async for _ in request.content.iter_chunked(1 << 16):
                pass
        except ConnectionError as exc:
            ended.set_result(type(exc).__name__)
        else:
            ended.set_result("read to the end")
        return web.Response()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * PIECE
        await asyncio.sleep(60)  # never finishes: the client gives up first
        yield b"never"

    app = web.Application()
    app.router.add_post("/sink", sink)
    runner = web.AppRunner(app)
    await runner.setup()
    server = runner.server
    assert server is not None
    try:
        async with aiohttp.ClientSession(connector=MemoryConnector(server)) as http:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await http.post("http://in-memory/sink", data=body())
            assert await asyncio.wait_for(ended, 10) == "ConnectionResetError"
            await asyncio.sleep(0.1)
            assert server.connections == []  # nothing left open
    finally:
        await runner.cleanup()
