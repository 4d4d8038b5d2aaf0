"""How long a host takes to start, against a bare aiohttp server started in the same run.

::

    uv run python bench/start.py            # 12 starts of each (about half a minute)
    uv run python bench/start.py --quick    # 3 of each, a smoke test

Each start is a new process with an empty state directory, timed from just
before its exec: for the host (``python -m paglets.cli.host``) until its
``--ready-file`` exists and until the reply to its first ``create`` +
``send("get")``; for the baseline (``bench/_echo_server.py``, a bare aiohttp
server) until its ready file exists and until the answer to its first
``POST /echo``. Host and baseline starts alternate (which goes first
alternates too), so that drift in the machine's load hits both alike; the
table shows medians. Prints a Markdown table on stdout, progress on stderr.

Both are measured twice: **with bytecode caches** (``PYTHONPYCACHEPREFIX`` in
a temporary directory, filled by one untimed start of each: how an installed
host restarts) and **as the environment is** (with
``PYTHONDONTWRITEBYTECODE=1``, as on the machines this was written on, every
start compiles each imported module outside the standard library from source).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from foundation import (
    COUNTER,
    FIGURE_HEAD,
    MS,
    TARGET_CREATE,
    Table,
    echo_argv,
    echo_sender,
    host_argv,
    machine,
    running,
)

from paglets import AsyncHostClient

TARGET_READY_RATIO = 1.3  # host start -> ready over bare aiohttp start -> first answer
POLL = 0.001  # how often the ready file is looked for, seconds
BYTECODE_ENV = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")


@dataclass(frozen=True)
class Start:
    """One start, in seconds from just before the exec."""

    ready: float  # the ready file exists
    answered: float  # the first request was answered (the host: create + first reply)


async def start_host(workdir: Path, i: int) -> Start:
    """Start a host on an empty state directory; time its ready file and first create."""
    argv = host_argv(workdir / f"host-{i}", "start", (), None)
    began = time.perf_counter()
    async with running(f"host-{i}", argv, workdir, poll=POLL) as host:
        ready = time.perf_counter() - began
        async with AsyncHostClient(host.url) as client:
            proxy = await client.create(COUNTER)
            await proxy.send("get")
            answered = time.perf_counter() - began
            await proxy.dispose()
    return Start(ready, answered)


async def start_echo(workdir: Path, i: int) -> Start:
    """Start the bare aiohttp server; time its ready file and its first answer."""
    began = time.perf_counter()
    async with running(f"echo-{i}", echo_argv(), workdir, poll=POLL) as echo:
        ready = time.perf_counter() - began
        async with AsyncHostClient(echo.url) as client:
            await echo_sender(client)()
            answered = time.perf_counter() - began
    return Start(ready, answered)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * MS:.0f} ms"


async def measure(starts: int, *, cached: bool) -> tuple[list[Start], list[Start]]:
    """``starts`` starts of the host and of the baseline, alternating."""
    hosts: list[Start] = []
    echoes: list[Start] = []
    saved = {name: os.environ.get(name) for name in BYTECODE_ENV}
    with tempfile.TemporaryDirectory(prefix="paglets-bench-start-") as tmp:
        workdir = Path(tmp)
        if cached:  # the servers inherit this environment
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        try:
            if cached:
                print("filling the bytecode caches", file=sys.stderr)
                await start_host(workdir, -1)
                await start_echo(workdir, -1)
            for i in range(starts):
                print(f"start {i + 1}/{starts}", file=sys.stderr)
                if i % 2:
                    echoes.append(await start_echo(workdir, i))
                    hosts.append(await start_host(workdir, i))
                else:
                    hosts.append(await start_host(workdir, i))
                    echoes.append(await start_echo(workdir, i))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return hosts, echoes


async def run(starts: int) -> Table:
    table = Table(head=FIGURE_HEAD)
    for cached, section in ((True, "1"), (False, "2")):
        print("with bytecode caches" if cached else "as the environment is", file=sys.stderr)
        hosts, echoes = await measure(starts, cached=cached)
        add_rows(table, section, hosts, echoes)
    return table


def add_rows(table: Table, section: str, hosts: list[Start], echoes: list[Start]) -> None:
    echo_answer = statistics.median(s.answered for s in echoes)
    baseline = f"{echo_answer * MS:.0f} ms (bare aiohttp: start -> first answer)"
    ready = statistics.median(s.ready for s in hosts)
    table.add(
        f"{section}(a)",
        "host start -> ready file",
        median_ms([s.ready for s in hosts]),
        baseline=baseline,
        ratio=ready / echo_answer,
        target=f"<= {TARGET_READY_RATIO}x",
        met=ready <= TARGET_READY_RATIO * echo_answer,
    )
    first = statistics.median(s.answered for s in hosts)
    table.add(
        f"{section}(b)",
        "host start -> first create's reply",
        median_ms([s.answered for s in hosts]),
        baseline=baseline,
        ratio=first / echo_answer,
    )
    after = [s.answered - s.ready for s in hosts]
    table.add(
        f"{section}(c)",
        "ready file -> first create's reply (create + send)",
        f"{statistics.median(after) * MS:.1f} / max {max(after) * MS:.1f} ms",
        target=f"median <= {TARGET_CREATE * MS:.0f} ms",
        met=statistics.median(after) <= TARGET_CREATE,
    )
    table.add(
        f"{section}(d)",
        "bare aiohttp start -> ready file (for reference)",
        median_ms([s.ready for s in echoes]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Host start against a bare aiohttp start.")
    parser.add_argument("--quick", action="store_true", help="3 starts of each: a smoke test")
    parser.add_argument("--starts", type=int, default=12, help="starts of each (default 12)")
    args = parser.parse_args()
    starts = 3 if args.quick else args.starts
    began, load = time.perf_counter(), os.getloadavg()
    table = asyncio.run(run(starts))
    print(f"## paglets start benchmark{' (--quick)' if args.quick else ''}\n")
    print(f"Machine: {machine()}.\n")
    print(table.markdown())
    print(
        f"\nMedians of {starts} starts of each, alternating; every start a new process "
        "with an empty state directory, timed from just before its exec. Rows 1: with "
        "bytecode caches (filled by one untimed start of each); rows 2: as the environment "
        f"is (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}). "
        "Run took "
        f"{time.perf_counter() - began:.0f} s; load average before it {load[0]:.2f}, "
        f"after it {os.getloadavg()[0]:.2f}."
    )


if __name__ == "__main__":
    main()
