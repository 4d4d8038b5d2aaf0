"""The mesh benchmark: convergence, failure detection and zeroconf discovery.

::

    uv run python bench/mesh.py                 # 3 runs of each measurement
    uv run python bench/mesh.py --runs 1 --hosts 4

Every host is its own ``paglets-host`` process on loopback (``--port 0``,
``--ready-file``). Prints a Markdown table on stdout, progress on stderr:

- *converge*: a seed starts; then N-1 hosts start at once with ``--peer SEED``.
  Timed from the launch of the N-1 (and, apart, from the last one ready) until
  every host lists N hosts online.
- *death -> offline everywhere*: one host is SIGKILLed; timed until every other
  host lists it offline. Bounded below by ``--offline-after``.
- *zeroconf discovery*: two hosts with ``--discovery --discovery-interface
  127.0.0.1`` and no ``--peer``; timed from both ready until each lists the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from paglets import AsyncHostClient, PagletError, __version__

READY_TIMEOUT = 60.0
POLL = 0.01


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    ready: Path
    url: str = ""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Fleet:
    def __init__(self, tmp: Path, gossip: float, offline: float) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.gossip = gossip
        self.offline = offline
        self.procs: list[Proc] = []
        self.clients: dict[str, AsyncHostClient] = {}

    async def launch(self, name: str, *args: str) -> Proc:
        ready = self.tmp / f"{name}.ready"
        argv = [sys.executable, "-m", "paglets.cli.host", "--name", name, "--port", "0"]
        argv += ["--ready-file", str(ready), "--state-dir", str(self.tmp / "state")]
        argv += ["--log-level", "warning", "--gossip-interval", str(self.gossip)]
        argv += ["--offline-after", str(self.offline), *args]
        env = {k: v for k, v in os.environ.items() if k != "PAGLETS_API_KEY"}
        log = (self.tmp / f"{name}.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env
        )
        log.close()
        proc = Proc(name, process, ready)
        self.procs.append(proc)
        return proc

    async def ready(self, proc: Proc) -> Proc:
        deadline = time.monotonic() + READY_TIMEOUT
        while not proc.ready.exists():
            if proc.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError((self.tmp / f"{proc.name}.log").read_text())
            await asyncio.sleep(POLL)
        proc.url = json.loads(proc.ready.read_text())["url"]
        self.clients[proc.name] = AsyncHostClient(proc.url, api_key="")
        return proc

    async def view(self, name: str) -> dict[str, bool]:
        try:
            return {h.name: h.online for h in await self.clients[name].hosts()}
        except PagletError:
            return {}

    async def until(self, predicate, timeout: float = 60.0) -> float:
        start = time.perf_counter()
        while not await predicate():
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the mesh did not get there in time")
            await asyncio.sleep(POLL)
        return time.perf_counter() - start

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        for proc in self.procs:
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.send_signal(signal.SIGTERM)
                await proc.process.wait()


async def converge(tmp: Path, n: int, gossip: float, offline: float) -> tuple[float, float, float]:
    fleet = Fleet(tmp, gossip, offline)
    tag = uuid.uuid4().hex[:6]
    try:
        seed = await fleet.ready(await fleet.launch(f"seed-{tag}"))
        launched = time.perf_counter()
        procs = [await fleet.launch(f"h{i}-{tag}", "--peer", seed.url) for i in range(1, n)]
        await asyncio.gather(*(fleet.ready(p) for p in procs))
        last_ready = time.perf_counter()
        names = {p.name for p in fleet.procs}

        async def converged() -> bool:
            views = await asyncio.gather(*(fleet.view(p.name) for p in fleet.procs))
            return all(set(v) == names and all(v.values()) for v in views)

        await fleet.until(converged)
        done = time.perf_counter()
        # Death: kill one non-seed host, wait until every other host shows it offline.
        victim = fleet.procs[-1]
        victim.process.kill()
        killed = time.perf_counter()
        others = [p for p in fleet.procs if p is not victim]

        async def offline_everywhere() -> bool:
            views = await asyncio.gather(*(fleet.view(p.name) for p in others))
            return all(v.get(victim.name) is False for v in views)

        await fleet.until(offline_everywhere)
        return done - launched, done - last_ready, time.perf_counter() - killed
    finally:
        await fleet.close()


async def discovery(tmp: Path, gossip: float, offline: float) -> float:
    fleet = Fleet(tmp, gossip, offline)
    tag = uuid.uuid4().hex[:6]
    zc = ("--discovery", "--discovery-interface", "127.0.0.1")
    try:
        a, b = await fleet.launch(f"zc-a-{tag}", *zc), await fleet.launch(f"zc-b-{tag}", *zc)
        await asyncio.gather(fleet.ready(a), fleet.ready(b))

        async def met() -> bool:
            va, vb = await fleet.view(a.name), await fleet.view(b.name)
            return va.get(b.name) is True and vb.get(a.name) is True

        return await fleet.until(met)
    finally:
        await fleet.close()


def _stats(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    if len(ms) == 1:
        return f"{ms[0]:.0f}"
    return f"{statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gossip-interval", type=float, default=0.2)
    parser.add_argument("--offline-after", type=float, default=1.0)
    args = parser.parse_args()
    before = os.getloadavg()
    rows: dict[str, list[float]] = {"from launch": [], "from last ready": [], "death": [], "zc": []}
    with tempfile.TemporaryDirectory(prefix="paglets-bench-mesh-") as tmp:
        for run in range(args.runs):
            _log(f"run {run + 1}/{args.runs}: {args.hosts} hosts converge, one dies")
            launch, ready, death = await converge(
                Path(tmp) / f"c{run}", args.hosts, args.gossip_interval, args.offline_after
            )
            rows["from launch"].append(launch)
            rows["from last ready"].append(ready)
            rows["death"].append(death)
            _log(f"run {run + 1}/{args.runs}: zeroconf discovery")
            rows["zc"].append(
                await discovery(Path(tmp) / f"z{run}", args.gossip_interval, args.offline_after)
            )
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    print(
        f"Mesh benchmark: paglets {__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, --gossip-interval {args.gossip_interval:g} s, "
        f"--offline-after {args.offline_after:g} s, {args.runs} runs (median (min-max))\n"
    )
    n = args.hosts
    table = [
        (f"{n} hosts converge from one seed, from launch", rows["from launch"]),
        (f"{n} hosts converge, from the last host ready", rows["from last ready"]),
        (f"death -> offline on all {n - 1} others (SIGKILL)", rows["death"]),
        ("zeroconf discovery, 2 hosts on loopback, from ready", rows["zc"]),
    ]
    print("| measurement | ms |")
    print("| --- | --- |")
    for label, values in table:
        print(f"| {label} | {_stats(values)} |")
    after = os.getloadavg()
    print(f"\nload average {before[0]:.2f} before, {after[0]:.2f} after", end="; ")
    print(f"leftover processes: {len(leftovers)}")


if __name__ == "__main__":
    asyncio.run(main())
