"""The baselines of ``foundation.py``: bare aiohttp JSON echo servers.

Plain (``--hop`` not given), the server json-decodes each request body and
returns it, and does nothing else: no middleware, no child process.

With ``--hop``, the same server hands each decoded body to one forked child
process over a socketpair (a 4-byte length, then JSON), and the child decodes it
and sends it back: the least a host can do that runs its handlers in another
process, so the cost of that design, apart from paglets, shows on its own.

Run as a separate process, like the hosts under test::

    python bench/_echo_server.py [--hop] --ready-file F

Writes ``{"url", "pid"}`` to the ready file once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import struct
from pathlib import Path

from aiohttp import web

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_LENGTH = struct.Struct("!I")


async def echo(request: web.Request) -> web.Response:
    data = json.loads(await request.read())
    return web.Response(body=_dumps(data), content_type="application/json")


class Hop:
    """The server's end of the socketpair to the echo child; replies come in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()

    async def read_replies(self) -> None:
        while True:
            (size,) = _LENGTH.unpack(await self.reader.readexactly(_LENGTH.size))
            self.waiting.popleft().set_result(await self.reader.readexactly(size))

    async def call(self, data: object) -> object:
        frame = _dumps(data).encode()
        self.writer.write(_LENGTH.pack(len(frame)) + frame)
        reply = asyncio.get_running_loop().create_future()
        self.waiting.append(reply)
        return json.loads(await reply)


HOP = web.AppKey("hop", Hop)


async def echo_via_child(request: web.Request) -> web.Response:
    data = await request.app[HOP].call(json.loads(await request.read()))
    return web.Response(body=_dumps(data), content_type="application/json")


def child_loop(sock: socket.socket) -> None:
    """The echo child: blocking reads, decode, encode, write back; exit at EOF."""
    stream = sock.makefile("rb")
    while header := stream.read(_LENGTH.size):
        frame = _dumps(json.loads(stream.read(_LENGTH.unpack(header)[0]))).encode()
        sock.sendall(_LENGTH.pack(len(frame)) + frame)
    os._exit(0)


async def serve(ready_file: Path, child: socket.socket | None) -> None:
    app = web.Application()
    hop = reader_task = None
    if child is None:
        app.router.add_post("/echo", echo)
    else:
        hop = Hop(*await asyncio.open_unix_connection(sock=child))
        app[HOP] = hop
        reader_task = asyncio.create_task(hop.read_replies())
        app.router.add_post("/echo", echo_via_child)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await serve_until_signalled(runner, ready_file)
    finally:
        await runner.cleanup()
        if hop is not None and reader_task is not None:
            hop.writer.close()  # the child sees EOF and exits
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.IncompleteReadError):
                await reader_task
        await asyncio.to_thread(ready_file.unlink, missing_ok=True)


async def serve_until_signalled(runner: web.AppRunner, ready_file: Path) -> None:
    """Listen on a free loopback port, announce it in ``ready_file``, return on SIGTERM/SIGINT."""
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(_write_ready, ready_file, f"http://127.0.0.1:{port}")
    await stop.wait()


def _write_ready(path: Path, url: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    temp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--hop", action="store_true", help="echo through a child process")
    args = parser.parse_args()
    ours = None
    if args.hop:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.fork() == 0:  # before any thread or loop exists
            ours.close()
            child_loop(theirs)
        theirs.close()
    try:
        asyncio.run(serve(args.ready_file, ours))
    finally:
        if ours is not None:
            ours.close()
            with contextlib.suppress(ChildProcessError):
                os.wait()


if __name__ == "__main__":
    main()
