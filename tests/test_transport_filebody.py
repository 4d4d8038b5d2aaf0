"""``FileBody``: a file posted whole, over plain TCP (sendfile) and TLS (chunks)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from paglets.transport.filebody import CHUNK, FileBody, GrowingFile

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import trustme

SIZE = 3 * CHUNK + 12345


async def _digest(request: web.Request) -> web.Response:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {"sha256": digest.hexdigest(), "size": size, "length": request.content_length}
    )


@pytest.fixture(params=["tcp", "tls"])
async def server(request: pytest.FixtureRequest, ca: trustme.CA) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/digest", _digest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if request.param == "tls":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{port}/digest"
    finally:
        await runner.cleanup()


@pytest.fixture
async def session(ca: trustme.CA) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        yield http


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "body"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("size", [10, 70_000, SIZE])
async def test_the_file_arrives_whole_with_its_length(
    server: str, session: aiohttp.ClientSession, data_file: tuple[Path, bytes], size: int
) -> None:
    path, data = data_file
    progress: list[int] = []
    body = FileBody(path, size, content_type="application/x-test", progress=progress.append)
    async with session.post(server, data=body) as resp:
        answer = await resp.json()
    assert resp.status == 200
    assert answer == {
        "sha256": hashlib.sha256(data[:size]).hexdigest(),
        "size": size,
        "length": size,
    }
    if size > CHUNK:
        assert progress[-1] == size
        assert any(at >= CHUNK for at in progress)


async def test_the_body_can_be_sent_again(
    server: str, session: aiohttp.ClientSession, data_file: tuple[Path, bytes]
) -> None:
    path, data = data_file
    body = FileBody(path, SIZE, content_type="application/x-test")
    for _ in range(2):  # a retry posts the same body object again
        async with session.post(server, data=body) as resp:
            assert (await resp.json())["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_file_shorter_than_promised_fails_the_request(
    server: str, session: aiohttp.ClientSession, data_file: tuple[Path, bytes]
) -> None:
    path, _ = data_file
    body = FileBody(path, SIZE + CHUNK, content_type="application/x-test")
    with pytest.raises(aiohttp.ClientError) as failure:
        async with session.post(server, data=body) as resp:
            await resp.read()
    assert "ended at" in str(failure.value.__cause__ or failure.value)


def test_a_file_body_has_no_text_form(data_file: tuple[Path, bytes]) -> None:
    body = FileBody(data_file[0], 10, content_type="application/x-test")
    with pytest.raises(TypeError, match="binary"):
        body.decode()


# -- a file still being written --------------------------------------------------------


async def _grow(path: Path, data: bytes, pieces: int) -> None:
    """Append ``data`` to ``path`` in ``pieces`` writes, yielding between them."""
    step = -(-len(data) // pieces)
    with path.open("ab", buffering=0) as f:
        for at in range(0, len(data), step):
            await asyncio.to_thread(f.write, data[at : at + step])
            await asyncio.sleep(0.002)


async def test_a_growing_file_goes_as_it_is_written_and_ends_only_when_whole(
    server: str, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    tmp, final = tmp_path / ".body.tmp", tmp_path / "body"
    tmp.write_bytes(data[:100])
    growing = GrowingFile([tmp, final], SIZE)
    await growing.open()
    try:
        post = asyncio.ensure_future(
            session.post(server, data=FileBody(growing, SIZE, content_type="application/x-test"))
        )
        await _grow(tmp, data[100:], 8)
        tmp.rename(final)  # as the writer does: the open file follows
        await asyncio.sleep(0.2)
        assert not post.done()  # everything written, but not said to be whole
        growing.finished()
        await asyncio.sleep(0.1)
        assert not post.done()  # whole, but not released
        growing.release()
        async with await post as resp:
            answer = await resp.json()
    finally:
        growing.close()
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    assert answer["size"] == SIZE


async def test_a_growing_file_whose_writer_fails_never_sends_its_last_byte(
    server: str, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "body"
    path.write_bytes(data)  # all there, but the writer will not vouch for it
    growing = GrowingFile([path], SIZE)
    await growing.open()
    try:
        body = FileBody(growing, SIZE, content_type="application/x-test")
        post = asyncio.ensure_future(session.post(server, data=body))
        await asyncio.sleep(0.2)
        assert not post.done()
        growing.failed(OSError("the disk is full"))
        with pytest.raises(aiohttp.ClientError) as failure:
            async with await post as resp:
                await resp.read()
    finally:
        growing.close()
    assert "the disk is full" in str(failure.value.__cause__ or failure.value)
    assert isinstance(await growing.settled(), OSError)
    assert growing.held is growing.failure
    with pytest.raises(RuntimeError, match="not whole"):
        growing.release()


async def test_a_growing_file_called_whole_at_the_wrong_length_is_not_sent_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"x" * 10)
    growing = GrowingFile([path], 11)
    await growing.open()
    try:
        assert await growing.ready(0) == 10  # all written so far, short of the last byte
        path.write_bytes(b"x" * 11)
        assert await growing.ready(0) == 10  # the last byte waits for the writer
        path.write_bytes(b"x" * 10)  # then cut short: not what was promised
        growing.finished()
        assert await growing.ready(0) == 10  # whole, but not released
        growing.release()
        with pytest.raises(OSError, match="10 bytes, not the 11 promised"):
            await growing.ready(10)
    finally:
        growing.close()


async def test_a_growing_file_is_opened_under_its_new_name_once_renamed(tmp_path: Path) -> None:
    tmp, final = tmp_path / ".body.tmp", tmp_path / "body"
    final.write_bytes(b"renamed already")
    growing = GrowingFile([tmp, final], 15)
    await growing.open()
    try:
        assert growing.path == final
        assert not growing.done
        assert growing.failure is None
    finally:
        growing.close()
    with pytest.raises(FileNotFoundError, match="none of"):
        await GrowingFile([tmp], 15).open()
