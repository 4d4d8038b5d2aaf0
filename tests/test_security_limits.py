"""Limits before and around authentication: slow request heads, connection floods, envelopes.

Real hosts and raw sockets: half-sent request heads (slowloris), a flood of
connections over the cap, envelopes that declare a terabyte, arrive at a trickle
or come too many at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import resource
import socket
import struct
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from examples.travel import TravelerState
from paglets import AsyncHostClient, TransferError
from paglets.core.errors import TooManyConnectionsError
from paglets.movement.source import LOCAL_RECEIVERS, MESH_HEADER, TRANSFER_HEADER
from paglets.transport.guard import ConnectionGuard, ConnectionLimits
from paglets.wire.envelope import MEDIA_TYPE, EnvelopeSpec, envelope_size, read_header
from paglets.wire.envelope_write import write_envelope
from tests.conftest import wait_for
from tests.hostproc import HOST_CMD
from tests.test_movement import _forged_spec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from paglets import Host

TRAVELER = "examples.travel:Traveler"
FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: victim\r\nX-Slow: "
TIB = 1 << 40


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _health(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """``GET /health`` on a fresh connection: the status and the JSON body."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(f"{url}/health") as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def _closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the peer closes the connection within ``timeout`` s (reading what it sends)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[str], Awaitable[tuple[Any, Any]]]]:
    """Open raw TCP connections to a host's URL; all are closed at teardown."""
    writers: list[asyncio.StreamWriter] = []

    async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writers.append(writer)
        return reader, writer

    try:
        yield connect
    finally:
        for writer in writers:
            writer.close()


# -- item 12: request heads and connections -------------------------------------------


async def test_a_flood_of_half_sent_heads_over_the_cap_does_not_stop_health(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any]
) -> None:
    # The header timeout is long: what keeps the host answering is the cap, which
    # closes the connection that has waited longest for its head.
    host = await make_host(max_connections=40, header_timeout=60.0, api_key="k", **FAST)
    readers = []
    for _ in range(120):
        reader, writer = await raw(host.url)
        writer.write(HALF_HEAD)
        await writer.drain()
        readers.append(reader)
    started = time.monotonic()
    status, body = await _health(host.url)
    assert (status, body) == (200, {"status": "running"})
    assert time.monotonic() - started < 4.0
    # the host closed the connections that waited longest, and holds no more than 40
    await wait_for(lambda: sum(r.at_eof() for r in readers[:80]) == 80, 5, "80 closed")
    assert not any(r.at_eof() for r in readers[-39:])
    assert host._guard is not None
    assert host._guard.open_connections <= 40
    async with AsyncHostClient(host.url, "k") as client:
        assert (await client.host_info()).name == host.name


async def test_1100_half_sent_heads_do_not_stop_a_keyed_daemon_with_1024_open_files(
    tmp_path: Path, raw: Callable[..., Any]
) -> None:
    """The issue's report: a host limited to 1,024 open files (a common default)."""
    ready = tmp_path / "ready.json"
    argv = [*HOST_CMD, "--name", "victim", "--port", "0", "--state-dir", str(tmp_path)]
    argv += ["--ready-file", str(ready), "--log-level", "warning"]

    def limit_open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    env = {**os.environ, "PAGLETS_API_KEY": "secret"}
    with (tmp_path / "host.log").open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=limit_open_files,  # noqa: PLW1509 - no threads in between
        )
    try:
        await wait_for(lambda: ready.exists() or process.poll() is not None, 60, "ready")
        assert process.poll() is None, (tmp_path / "host.log").read_text()
        url = json.loads(ready.read_text())["url"]
        for _ in range(1100):
            _, writer = await raw(url)
            writer.write(HALF_HEAD)
        await writer.drain()
        started = time.monotonic()
        status, _ = await _health(url, timeout=10.0)
        assert status == 200
        assert time.monotonic() - started < 4.0
        async with AsyncHostClient(url, "secret") as client:
            assert (await client.host_info()).name == "victim"
    finally:
        process.terminate()
        process.wait(20)
    assert "allowing 768 connections" in (tmp_path / "host.log").read_text()


async def test_half_a_head_is_closed_after_the_header_timeout(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any]
) -> None:
    host = await make_host(header_timeout=0.5, idle_timeout=60.0, **FAST)
    reader, writer = await raw(host.url)
    writer.write(HALF_HEAD)
    started = time.monotonic()

    async def trickle() -> None:  # a byte now and then: a read timeout would never fire
        with contextlib.suppress(OSError):  # the host closed it
            while True:
                await asyncio.sleep(0.1)
                writer.write(b"x")
                await writer.drain()

    dripping = asyncio.create_task(trickle())
    try:
        assert await _closed_within(reader, 5.0), "the half-sent head was never cut off"
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
    assert 0.4 < time.monotonic() - started < 4.0
    # a whole head in time is served, on a kept-alive connection twice
    reader, writer = await raw(host.url)
    for _ in range(2):
        writer.write(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readuntil(b'"running"}')


async def test_the_header_clock_of_a_kept_alive_connection_counts_from_each_head(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any]
) -> None:
    # One clock per connection, moved for each request: requests served for three
    # header timeouts keep the connection, and half a head sent late is cut off a
    # whole header timeout after it began, not at a deadline of an earlier head.
    host = await make_host(header_timeout=0.5, idle_timeout=60.0, **FAST)
    reader, writer = await raw(host.url)
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        writer.write(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readuntil(b'"running"}')
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.8)  # idle between requests: aiohttp's idle timeout, not the clock
    writer.write(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    # a new connection's clock runs from the accept; it fires after its first request,
    # during the next head, which has its own deadline
    reader, writer = await raw(host.url)
    writer.write(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
    await reader.readuntil(b'"running"}')
    await asyncio.sleep(0.3)
    writer.write(HALF_HEAD)
    half = time.monotonic()
    assert await _closed_within(reader, 5.0), "the half-sent head was never cut off"
    assert 0.45 < time.monotonic() - half < 4.0


async def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any]
) -> None:
    host = await make_host(header_timeout=30.0, idle_timeout=0.5, **FAST)
    reader, writer = await raw(host.url)
    writer.write(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
    await reader.readuntil(b'"running"}')
    started = time.monotonic()
    assert await _closed_within(reader, 5.0), "the idle connection was never closed"
    assert time.monotonic() - started < 4.0


async def test_over_the_cap_with_every_connection_busy_a_new_one_gets_503_at_once(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any]
) -> None:
    host = await make_host(max_connections=3, **FAST)
    for _ in range(3):  # three long polls: busy with a request, so not to be closed
        _, writer = await raw(host.url)
        writer.write(f"GET /v1/events?since={2**60}&wait=3 HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    await wait_for(
        lambda: host._guard is not None and not host._guard._waiting,
        5,
        "the long polls to start",
    )
    started = time.monotonic()
    status, body = await _health(host.url)
    assert time.monotonic() - started < 4.0
    assert status == 503
    assert body["error"]["type"] == "TooManyConnectionsError"
    assert "--max-connections" in body["error"]["message"]
    with pytest.raises(TooManyConnectionsError, match="--max-connections"):
        async with AsyncHostClient(host.url) as client:
            await client.host_info()


async def test_a_connection_handed_over_after_the_guard_closed_is_closed_at_once() -> None:
    # a connection the kernel accepted just before the host stopped is handed to its
    # protocol only afterwards: nobody would serve it, so it must not stay open
    guard = ConnectionGuard(ConnectionLimits())
    guard.close()
    served: list[asyncio.BaseTransport] = []

    class Inner(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            served.append(transport)

    ours, theirs = socket.socketpair()
    try:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(guard.protocol_factory(Inner), ours)
        assert transport.is_closing(), "the late connection is closed, not left open"
        assert not served, "the inner protocol never sees it"
        assert guard.open_connections == 0
    finally:
        theirs.close()


async def test_a_connection_accepted_in_the_turn_the_site_stops_is_closed_not_leaked() -> None:
    # asyncio accepts in one turn and makes the transport in the next; on Python 3.11 a
    # transport made after its server closed is left half-built with its socket open.
    # Here the stop comes in the very turn of the accept (a timer runs after the accept).
    app = web.Application()
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    guard = ConnectionGuard(ConnectionLimits())
    site = guard.site(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[None] = loop.create_future()

    def stop_in_this_turn() -> None:
        coro = site.stop()
        try:
            coro.send(None)  # as far as it goes in this turn, as an eager task would
        except StopIteration:
            stopped.set_result(None)
            return
        rest = asyncio.ensure_future(coro)
        rest.add_done_callback(lambda _: stopped.set_result(None))

    client = socket.create_connection(("127.0.0.1", port))  # accepted in the next turn
    try:
        loop.call_later(0, stop_in_this_turn)
        await stopped
        await runner.cleanup()
        guard.close()
        assert await site.wait_closed(2.0), "every connection the site made is closed"
        client.settimeout(2.0)
        assert client.recv(1) == b"", "the host's end was closed, not leaked"
    finally:
        client.close()
    gc.collect()  # a leaked transport warns (an error here) when collected


# -- item 13: envelopes ------------------------------------------------------------------


def _spec(agent_id: str, transfer_id: str) -> EnvelopeSpec:
    return _forged_spec(
        agent_id, TRAVELER, "examples.travel:TravelerState", transfer_id, origin="elsewhere"
    )


def _envelope(tmp_path: Path, payload: int, **header: Any) -> tuple[str, bytes]:
    """A Traveler's envelope with a ``payload``-byte blob; ``header`` overrides fields."""
    transfer_id = uuid.uuid4().hex
    path = tmp_path / f"{transfer_id}.env"
    write_envelope(
        path,
        _spec(uuid.uuid4().hex, transfer_id),
        TravelerState(payload=b"p" * payload),
        sync=False,
    )
    data = path.read_bytes()
    if not header:
        return transfer_id, data
    parsed, start = read_header(data)
    fields = json.dumps(parsed.to_dict() | header, separators=(",", ":")).encode()
    return transfer_id, struct.pack(">4sHI", b"PGLE", 1, len(fields)) + fields + data[start:]


def _transfer_head(host: Host, transfer_id: str, length: int | None) -> bytes:
    lines = [
        "POST /v1/transfers HTTP/1.1",
        "Host: h",
        f"Content-Type: {MEDIA_TYPE}",
        f"{TRANSFER_HEADER}: {transfer_id}",
        f"{MESH_HEADER}: {host.config.mesh_version}",
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(reader: asyncio.StreamReader, timeout: float) -> tuple[int, dict[str, Any]]:
    """Read one HTTP response with a JSON body (sized by Content-Length)."""
    async with asyncio.timeout(timeout):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status = int(head.split(" ", 2)[1])
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    return status, json.loads(await reader.readexactly(length))


def _inbox(host: Host) -> list[str]:
    inbox = host.transfers.receiver.inbox
    return sorted(p.name for p in inbox.iterdir()) if inbox.exists() else []


async def test_an_envelope_declaring_a_tebibyte_is_refused_413_before_its_body(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any], tmp_path: Path
) -> None:
    host = await make_host(**FAST)
    # by its Content-Length: nothing of the body is sent at all
    reader, writer = await raw(host.url)
    writer.write(_transfer_head(host, uuid.uuid4().hex, TIB))
    status, body = await _answer(reader, 5.0)
    assert status == 413
    assert body["error"]["type"] == "PayloadTooLargeError"
    assert str(TIB) in body["error"]["message"]
    assert str(4 << 30) in body["error"]["message"]
    # by its header, in a chunked body: only the header is sent
    transfer_id, data = _envelope(tmp_path, 10, blobs=[TIB])
    header, start = read_header(data)
    reader, writer = await raw(host.url)
    writer.write(_transfer_head(host, transfer_id, None))
    writer.write(b"%x\r\n" % start + data[:start] + b"\r\n")
    status, body = await _answer(reader, 5.0)
    assert status == 413
    assert body["error"]["type"] == "PayloadTooLargeError"
    assert str(envelope_size(header, start)) in body["error"]["message"]
    assert _inbox(host) == []


async def test_a_trickling_envelope_is_cut_at_its_deadline_and_leaves_nothing(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any], tmp_path: Path
) -> None:
    # 1 s of grace, then 16 MiB/s: a 6 MiB envelope has about 1.4 s in all
    host = await make_host(read_timeout=1.0, transfer_min_rate=16 << 20, **FAST)
    transfer_id, data = _envelope(tmp_path, 6 << 20)
    reader, writer = await raw(host.url)
    writer.write(_transfer_head(host, transfer_id, len(data)))
    writer.write(data[: 5 << 20])  # most of it at once: it is being spooled to disk
    await writer.drain()
    await wait_for(lambda: bool(_inbox(host)), 5, "the envelope to be spooled")
    started = time.monotonic()

    async def trickle() -> None:  # a byte every 0.1 s: each read comes well in time
        with contextlib.suppress(OSError):  # the host closed it
            for i in range(5 << 20, len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.1)

    dripping = asyncio.create_task(trickle())
    try:
        status, body = await _answer(reader, 8.0)
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
    assert time.monotonic() - started < 5.0
    assert status == 400
    assert "too slowly" in body["error"]["message"]
    assert "--transfer-min-rate" in body["error"]["message"]
    await wait_for(lambda: _inbox(host) == [], 5, "the partial envelope to be removed")
    assert host.supervisor.list() == []


async def _http_mesh(
    make_host: Callable[..., Awaitable[Host]], *, http: bool = True, **target: Any
) -> tuple[Host, Host]:
    """Two hosts that move paglets over HTTP (else by linking files in this process)."""
    b = await make_host(name="b", **FAST, **target)
    a = await make_host(name="a", peers=(b.url,), **FAST)
    for url, receiver in list(LOCAL_RECEIVERS.items()):
        if http and receiver in (a.transfers.receiver, b.transfers.receiver):
            del LOCAL_RECEIVERS[url]
    await wait_for(lambda: all(len(h.mesh.hosts(online=True)) == 2 for h in (a, b)), 10, "the mesh")
    return a, b


@pytest.mark.parametrize(
    ("payload", "limit", "http"),
    [(300 << 10, 64 << 10, True), (6 << 20, 1 << 20, True), (300 << 10, 64 << 10, False)],
    ids=["sent-whole", "sent-while-written", "linked-in-process"],
)
async def test_a_paglet_over_the_targets_size_limit_stays_at_its_source(
    make_host: Callable[..., Awaitable[Host]], payload: int, limit: int, *, http: bool
) -> None:
    a, b = await _http_mesh(make_host, http=http, max_envelope_size=limit)
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.send("payload", {"size": payload})
        with pytest.raises(TransferError) as caught:
            await traveler.dispatch("b")
        message = str(caught.value)
        found = re.search(r"the envelope is (\d+) bytes .*limit of (\d+) bytes", message)
        assert found is not None, message
        assert int(found[1]) > payload
        assert int(found[2]) == limit
        assert await traveler.send("where") == "a"
        assert await traveler.send("increment") == 1
    assert b.supervisor.list() == []


async def test_too_many_transfers_at_once_get_429_and_the_paglet_stays(
    make_host: Callable[..., Awaitable[Host]], raw: Callable[..., Any], tmp_path: Path
) -> None:
    a, b = await _http_mesh(make_host, max_transfers=1, read_timeout=30.0)
    # One transfer that takes its time holds the only place.
    transfer_id, data = _envelope(tmp_path, 6 << 20)
    reader, writer = await raw(b.url)
    writer.write(_transfer_head(b, transfer_id, len(data)))
    writer.write(data[:100_000])
    await writer.drain()
    await wait_for(lambda: b.transfers.receiver.gate.active == 1, 5, "the slow transfer")
    async with AsyncHostClient(a.url) as client:
        traveler = await client.create(TRAVELER)
        with pytest.raises(TransferError, match=r"TooManyTransfersError|--max-transfers"):
            await traveler.dispatch("b")
        assert await traveler.send("where") == "a"
        assert await traveler.send("increment") == 1
        # once the place is free, the same paglet moves
        writer.write(data[100_000:])
        status, _ = await _answer(reader, 10.0)
        assert status == 200
        await traveler.dispatch("b")
        assert await traveler.send("where") == "b"
        assert await traveler.send("increment") == 2


def test_a_malformed_request_is_one_debug_line_or_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiohttp.http_exceptions import LineTooLong  # noqa: PLC0415

    from paglets.transport.serverlog import server_logger  # noqa: PLC0415

    bad = LineTooLong(b"x" * 9000, 8190)
    with caplog.at_level(logging.INFO, logger=server_logger.name):
        server_logger.exception("Error handling request from %s", "1.2.3.4", exc_info=bad)
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger=server_logger.name):
        server_logger.exception("Error handling request from %s", "1.2.3.4", exc_info=bad)
        server_logger.exception("Unhandled exception", exc_info=ValueError("a bug"))
    malformed, bug = caplog.records
    assert malformed.levelno == logging.DEBUG
    assert malformed.exc_info is None
    assert "from 1.2.3.4: LineTooLong" in malformed.getMessage()
    assert "\n" not in malformed.getMessage()
    assert bug.levelno == logging.ERROR
    assert bug.exc_info is not None, "other errors keep their traceback"
