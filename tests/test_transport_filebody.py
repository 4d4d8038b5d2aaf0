"""``FileBody``: a file posted whole, over plain TCP (sendfile) and TLS (chunks)."""

from __future__ import annotations

import hashlib
import os
import ssl
from typing import TYPE_CHECKING

import aiohttp
import pytest
import trustme
from aiohttp import web

from paglets.transport.filebody import CHUNK, FileBody

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SIZE = 3 * CHUNK + 12345


async def _digest(request: web.Request) -> web.Response:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {"sha256": digest.hexdigest(), "size": size, "length": request.content_length}
    )


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


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
