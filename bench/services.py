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
  (target: at most 1.5x).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from durability import LEFTOVERS, host
from foundation import FIGURE_HEAD, Series, Table, latency, machine

from examples.greeter import GREETER, GreetRequest
from paglets import AsyncHostClient

COUNTER = "examples.counter:Counter"
LAUNCH = """\
[[services]]
name = "greeter"
class = "examples.greeter:Greeter"
contract = "greeter.v1"
"""
TARGET_CALL_RATIO = 1.2
TARGET_FIRST_RATIO = 1.5


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
    print(table.markdown())
    print(f"\n{machine()}")
    if LEFTOVERS.pids:
        print(f"\nleft behind by hosts (killed): {LEFTOVERS.pids}")


if __name__ == "__main__":
    asyncio.run(main())
