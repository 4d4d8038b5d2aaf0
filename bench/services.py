"""The resident-services benchmark: typed service calls against plain messages, this run.

::

    uv run python bench/services.py            # the full run (about half a minute)
    uv run python bench/services.py --quick    # reduced counts, a smoke test

Every host is its own ``paglets-host`` process on loopback, started with a
launch file that declares the greeter service (``examples.greeter:Greeter``,
lazy). Prints a Markdown table on stdout (progress on stderr):

- (a) a typed service call round trip (``client.service(GREETER).greet``, over
  the client's channel) against a plain message round trip to a ``Counter`` on the same
  host (over the client's channel, as proxies send), alternating blocks
  (target: at most 1.2x); and against the same message sent over HTTP;
- (b) the first call to a lazy service on a fresh host against
  create→first reply of a ``Counter`` on another fresh host, alternating
  (target: at most 1.5x);
- (c) ``paglets-sysinfo summary --json`` across three hosts started with the
  bundled launch file (server-info on each): the wall time of the command as a
  user runs it, its services already started (target: at most 500 ms), and the
  first run, which starts them; and the parallel gathering alone, in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from durability import LEFTOVERS, host
from foundation import FIGURE_HEAD, Series, Table, latency, machine

from examples.greeter import GREETER, GreetRequest
from paglets import AsyncHostClient
from paglets.builtins.serverinfo import SummaryRequest
from paglets.cli.sysinfo import gather
from paglets.launch.files import bundled_text

COUNTER = "examples.counter:Counter"
LAUNCH = """\
[[services]]
name = "greeter"
class = "examples.greeter:Greeter"
contract = "greeter.v1"
"""
TARGET_CALL_RATIO = 1.2
TARGET_FIRST_RATIO = 1.5
TARGET_SUMMARY = 0.5  # seconds
FAST_MESH = ("--gossip-interval", "0.2", "--offline-after", "2")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def calls(workdir: Path, table: Table, blocks: int, per_block: int) -> None:
    """(a) typed service calls against plain messages, on one host."""
    async with (
        host(
            workdir, "calls", workdir / "state-calls", "--config", str(workdir / "launch.toml")
        ) as h,
        AsyncHostClient(h.url) as client,
        AsyncHostClient(h.url, channel=False) as http,
    ):
        greeter = client.service(GREETER)
        counter = await client.create(COUNTER)
        over_http = http.proxy(counter.agent_id)
        await greeter.greet(GreetRequest("warm"))
        await over_http.send("increment")
        typed: list[float] = []
        plain: list[float] = []
        plain_http: list[float] = []
        for _ in range(blocks):
            typed += (await latency(lambda: greeter.greet(GreetRequest("x")), per_block)).samples
            plain += (await latency(lambda: counter.send("increment"), per_block)).samples
            plain_http += (await latency(lambda: over_http.send("increment"), per_block)).samples
    t, p, ph = Series(tuple(typed)), Series(tuple(plain)), Series(tuple(plain_http))
    ratio = t.median / p.median
    table.add(
        "(a)",
        "typed service call round trip (median / p90)",
        t.ms(),
        baseline=f"plain message {p.ms()}",
        ratio=ratio,
        target=f"<= {TARGET_CALL_RATIO}x",
        met=ratio <= TARGET_CALL_RATIO,
    )
    table.add(
        "(a)",
        "the same, against a plain message over HTTP (no channel)",
        t.ms(),
        baseline=f"plain message over HTTP {ph.ms()}",
        ratio=t.median / ph.median,
    )


async def first_calls(workdir: Path, table: Table, rounds: int) -> None:
    """(b) the first call to a lazy service against create→first reply, fresh hosts."""
    first: list[float] = []
    create: list[float] = []
    config = str(workdir / "launch.toml")
    for n in range(rounds):
        lazy = host(workdir, f"lazy{n}", workdir / f"state-lazy{n}", "--config", config)
        async with lazy as h, AsyncHostClient(h.url) as client:
            await client.health()  # a warm connection, as the baseline has
            start = time.perf_counter()
            await client.service(GREETER).greet(GreetRequest("first"))
            first.append(time.perf_counter() - start)
        fresh = host(workdir, f"new{n}", workdir / f"state-new{n}", "--config", config)
        async with fresh as h, AsyncHostClient(h.url) as client:
            await client.health()
            start = time.perf_counter()
            proxy = await client.create(COUNTER)
            await proxy.send("increment")
            create.append(time.perf_counter() - start)
        _log(f"  round {n + 1}/{rounds}")
    f, c = Series(tuple(first)), Series(tuple(create))
    ratio = f.median / c.median
    table.add(
        "(b)",
        "first call to a lazy service (median / p90)",
        f.ms(),
        baseline=f"create→first reply {c.ms()}",
        ratio=ratio,
        target=f"<= {TARGET_FIRST_RATIO}x",
        met=ratio <= TARGET_FIRST_RATIO,
    )


async def _command(module: str, *args: str) -> tuple[float, Any]:
    """One console command as a user runs it (``python -m``): its wall time and JSON."""
    argv = [sys.executable, "-m", module, *args]
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed: {err.decode()}")
    return took, json.loads(out)


async def _sysinfo(url: str) -> float:
    """One ``paglets-sysinfo summary --json``; its wall time, once every host answered."""
    took, answers = await _command("paglets.cli.sysinfo", "summary", "--json", "--url", url)
    statuses = [a["status"] for a in answers]
    if statuses != ["ok"] * 3:
        raise RuntimeError(f"paglets-sysinfo summary: {answers}")
    return took


async def summary(workdir: Path, table: Table, runs: int) -> None:
    """(c) ``paglets-sysinfo summary --json`` across three hosts."""
    config = workdir / "bundled.toml"
    config.write_text(bundled_text())
    flags = ("--config", str(config), *FAST_MESH)
    async with host(workdir, "alpha", workdir / "state-mesh", *flags) as a:
        peer = ("--peer", a.url)
        async with (
            host(workdir, "beta", workdir / "state-mesh", *flags, *peer),
            host(workdir, "gamma", workdir / "state-mesh", *flags, *peer),
            AsyncHostClient(a.url) as client,
        ):
            for _ in range(600):
                if len(await client.hosts(online=True)) == 3:
                    break
                await asyncio.sleep(0.05)
            first = await _sysinfo(a.url)
            warm: list[float] = []
            mesh: list[float] = []  # the same start (interpreter, click, aiohttp), one request
            for _ in range(runs):
                warm.append(await _sysinfo(a.url))
                mesh.append(
                    (await _command("paglets.cli.mesh", "hosts", "--json", "--url", a.url))[0]
                )
            inproc = []
            for _ in range(runs):
                start = time.perf_counter()
                await gather(a.url, "summary", SummaryRequest(), timeout=2.0)
                inproc.append(time.perf_counter() - start)
    w, m = Series(tuple(warm)), Series(tuple(mesh))
    table.add(
        "(c)",
        "paglets-sysinfo summary --json, 3 hosts, services started (median / p90)",
        w.ms(0),
        baseline=f"paglets-mesh hosts --json {m.ms(0)}",
        ratio=w.median / m.median,
        target=f"<= {TARGET_SUMMARY * 1000:.0f} ms",
        met=w.median <= TARGET_SUMMARY,
    )
    table.add("(c)", "the first run, which starts the three services", f"{first * 1000:.0f} ms")
    table.add(
        "(c)",
        "the same gathering in-process (no interpreter start)",
        Series(tuple(inproc)).ms(0),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced counts: a smoke test")
    args = parser.parse_args()
    blocks, per_block, rounds = (2, 50, 2) if args.quick else (6, 200, 6)
    table = Table(head=FIGURE_HEAD)
    with tempfile.TemporaryDirectory(prefix="paglets-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "launch.toml").write_text(LAUNCH)
        _log("(a) typed calls against plain messages")
        await calls(workdir, table, blocks, per_block)
        _log("(b) first call to a lazy service against create→first reply")
        await first_calls(workdir, table, rounds)
        _log("(c) paglets-sysinfo summary across three hosts")
        await summary(workdir, table, rounds * 2)
    print(table.markdown())
    print(f"\n{machine()}")
    if LEFTOVERS.pids:
        print(f"\nleft behind by hosts (killed): {LEFTOVERS.pids}")


if __name__ == "__main__":
    asyncio.run(main())
