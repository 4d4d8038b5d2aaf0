"""Holes found by attacking the hardened host from outside (issue 14, red team).

Each test starts real ``paglets-host`` processes and talks raw HTTP to them. A
test here is marked ``xfail(strict=True)`` while the hole is open: its reason
says what is wrong. Fixing the hole makes the test pass, and strict ``xfail``
then fails the suite until the mark is removed.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.conftest import wait_for
from tests.hostproc import env_without_key
from tests.test_security_limits import _health, _port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from tests.hostproc import RunningHost

KEY = "redteam-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


# -- item 12, a variant: a slow body on the one route served without the key ----------


async def test_trickled_hello_bodies_without_the_key_do_not_stop_health(
    start_host: Callable[..., RunningHost],
) -> None:
    host = start_host("--max-connections", "40", env=env_without_key(PAGLETS_API_KEY=KEY))
    writers: list[asyncio.StreamWriter] = []
    head = (
        b"POST /v1/mesh/hello HTTP/1.1\r\nHost: victim\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2000\r\n\r\n{"
    )
    try:
        for _ in range(45):
            _, writer = await asyncio.open_connection("127.0.0.1", _port(host.url))
            writer.write(head)
            await writer.drain()
            writers.append(writer)
        await asyncio.sleep(0.5)  # let the host take in the heads (no condition to wait on)
        started = time.monotonic()
        status, body = await _health(host.url)
        assert (status, body) == (200, {"status": "running"})
        assert time.monotonic() - started < 4.0
    finally:
        for writer in writers:
            writer.close()


# -- item 11, a variant: a timed wake-up refused by --max-paglets is never retried -----


async def test_a_wake_up_refused_for_lack_of_room_happens_once_there_is_room(
    start_host: Callable[..., RunningHost], session: aiohttp.ClientSession
) -> None:
    host = start_host("--max-paglets", "1", env=env_without_key(PAGLETS_API_KEY=KEY))
    api = f"{host.url}/v1/paglets"
    counter = "examples.counter:Counter"
    status, _ = await _call(session, "POST", api, {"class_path": counter, "agent_id": "sleeper"})
    assert status == 201
    status, _ = await _call(session, "POST", f"{api}/sleeper/deactivate", {"duration": 0.5})
    assert status == 200
    status, _ = await _call(session, "POST", api, {"class_path": counter, "agent_id": "hog"})
    assert status == 201
    await wait_for(
        lambda: "paglet sleeper cannot wake up yet" in host.log(), 20, "the refused wake"
    )
    status, _ = await _call(session, "DELETE", f"{api}/hog")
    assert status == 200

    async def awake() -> bool:
        _, info = await _call(session, "GET", f"{api}/sleeper")
        return bool(info["status"] == "active")

    await wait_for(awake, 15, "the sleeper to wake once the host has room")


# -- item 17 / 9, a variant: a malformed request without the key logs an ERROR traceback --


async def test_malformed_requests_without_the_key_leave_no_traceback_in_the_log(
    start_host: Callable[..., RunningHost],
) -> None:
    host = start_host(env=env_without_key(PAGLETS_API_KEY=KEY))
    long_line = b"GET /health?" + b"x" * 9000 + b" HTTP/1.1\r\nHost: victim\r\n\r\n"
    bad_chunks = (
        b"POST /v1/mesh/hello HTTP/1.1\r\nHost: victim\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"not-a-chunk-size\r\n\r\n"
    )
    for request in (long_line, bad_chunks) * 3:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(host.url))
        writer.write(request)
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.")  # a 400 of some form
        writer.close()
    assert await _health(host.url) == (200, {"status": "running"})
    log = host.log()
    assert "Traceback" not in log, log[-2000:]
    assert " ERROR " not in log, log[-2000:]
