"""The baselines of ``mobility.py``: a bare aiohttp server that takes streamed bodies.

- ``POST /sink`` reads the request body streaming
  (``request.content.iter_chunked(1 MiB)``), discards it and answers
  ``{"bytes": N}``: what plain aiohttp streaming costs, nothing else.
- ``POST /file`` (``?fsync=1`` to flush it) reads the body the same way, but
  writes it into a new file under ``--dir``, from a worker thread, in batches of
  at most 1 MiB, as a paglets host writes an arriving envelope; then removes the
  file and answers ``{"bytes": N}``: the least a target host has to do.

Run as a separate process, like the hosts under test::

    python bench/_sink_server.py --dir D --ready-file F

Writes ``{"url", "pid"}`` to the ready file once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _echo_server import serve_until_signalled
from aiohttp import web

CHUNK = 1024 * 1024
DIR = web.AppKey("dir", Path)


async def sink(request: web.Request) -> web.Response:
    received = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        received += len(chunk)
    return web.json_response({"bytes": received})


async def to_file(request: web.Request) -> web.Response:
    sync = request.query.get("fsync") == "1"
    path = request.app[DIR] / f"{uuid.uuid4().hex}.body"
    loop = asyncio.get_running_loop()
    received, batch, batched = 0, [], 0
    with ThreadPoolExecutor(1, thread_name_prefix="sink-write") as pool:
        fd = await loop.run_in_executor(pool, _create, path)
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                batch.append(chunk)
                batched += len(chunk)
                if batched >= CHUNK:
                    await loop.run_in_executor(pool, _write_all, fd, batch)
                    received += batched
                    batch, batched = [], 0
            await loop.run_in_executor(pool, _write_all, fd, batch)
            received += batched
            if sync:
                await loop.run_in_executor(pool, os.fsync, fd)
        finally:
            await loop.run_in_executor(pool, _close_and_remove, fd, path)
    return web.json_response({"bytes": received})


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    pending = [memoryview(c) for c in chunks if c]
    while pending:
        written = os.writev(fd, pending)
        while written:
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0], written = pending[0][written:], 0


def _close_and_remove(fd: int, path: Path) -> None:
    os.close(fd)
    path.unlink(missing_ok=True)


async def serve(ready_file: Path, directory: Path) -> None:
    app = web.Application()
    app[DIR] = directory
    app.router.add_post("/sink", sink)
    app.router.add_post("/file", to_file)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await serve_until_signalled(runner, ready_file)
    finally:
        await runner.cleanup()
        await asyncio.to_thread(ready_file.unlink, missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where POST /file writes")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.ready_file, args.dir))


if __name__ == "__main__":
    main()
