"""Idle paglets: what a host with many of them costs at rest, against one, same run.

::

    uv run python bench/idle.py            # 1, 300 and 1,000 idle paglets (about 2 minutes)
    uv run python bench/idle.py --quick    # 1 and 100

One ``paglets-host`` process per count (``--max-child-memory`` raised, so the
memory budget, which counts each child's resident pages, does not stop it at
1,000): create the paglets, let the host settle, then measure the CPU time of
the host, its zygote and every child over a window, and the round trip of one
paglet among them. The figures for one idle paglet are the baseline. Prints a
Markdown table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from foundation import MS, host_argv, machine, md_row, running

from paglets import AsyncHostClient

COUNTER = "examples.counter:Counter"
SETTLE = 3.0
WINDOW = 10.0
RTT = 500


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


async def measure(count: int, workdir: Path) -> tuple[float, float]:
    """CPU at rest (% of one core) and the round-trip median (s) with ``count`` idle paglets."""
    argv = [*host_argv(workdir, f"idle{count}", (), None), "--max-child-memory", "64GiB"]
    async with running(f"idle{count}", argv, workdir) as host, AsyncHostClient(host.url) as c:
        gate = asyncio.Semaphore(16)

        async def one() -> None:
            async with gate:
                await (await c.create(COUNTER)).send("get")

        await asyncio.gather(*(one() for _ in range(count - 1)))
        probe = await c.create(COUNTER)
        await probe.send("get")
        print(f"{count} paglets created", file=sys.stderr)
        await asyncio.sleep(SETTLE)
        parent = host.process()
        procs = [parent, *parent.children(recursive=True)]
        before, start = _cpu(procs), time.monotonic()
        await asyncio.sleep(WINDOW)
        cpu = (_cpu(procs) - before) / (time.monotonic() - start)
        samples = []
        for _ in range(RTT):
            begun = time.perf_counter()
            await probe.send("get")
            samples.append(time.perf_counter() - begun)
    return cpu * 100, statistics.median(samples)


async def run(counts: list[int]) -> list[tuple[str, ...]]:
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: await measure(n, Path(tmp)) for n in counts}
    base_cpu, base_rtt = results[1]
    rows = []
    for n, (cpu, rtt) in results.items():
        rows.append(
            (
                f"{n:,} idle paglet{'s' if n > 1 else ''}",
                f"{cpu:.2f} % of a core",
                f"{cpu / base_cpu:.1f}x" if n > 1 else "(baseline)",
                f"{rtt * MS:.3f} ms",
                f"{rtt / base_rtt:.2f}x" if n > 1 else "(baseline)",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 100 paglets only")
    args = parser.parse_args()
    rows = asyncio.run(run([1, 100] if args.quick else [1, 300, 1000]))
    print(f"# Idle paglets ({machine()})\n")
    print("Targets (issue 20): ≤ 1.5 % of a core at 300, ≤ 5 % at 1,000; round trip")
    print("with 1,000 live ≤ 1.2x that with one.\n")
    print(
        md_row(("paglets", "CPU at rest (host, zygote, children)", "ratio", "round trip", "ratio"))
    )
    print(md_row(("---",) * 5))
    for row in rows:
        print(md_row(row))


if __name__ == "__main__":
    main()
