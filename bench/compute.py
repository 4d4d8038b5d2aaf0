"""The compute-slots benchmark: admission latency, release after a SIGKILL, throughput.

::

    uv run python bench/compute.py            # the full run (a minute or two)
    uv run python bench/compute.py --quick    # reduced counts, a smoke test

Every host is its own ``paglets-host`` process on loopback with a launch file
that declares the scheduler (``[compute]`` cores = 2, a load gate high enough
to ignore this machine's other work). Prints a Markdown table on stdout:

- (a) submit→start on an idle host: an ``examples.squares:Square`` job's
  create, then the time from the create's return to its grant (the scheduler's
  ``started_at``: its ``run`` submitted and was admitted), target p95 at most
  50 ms beyond the create; a plain ``Counter``'s create→first reply for scale;
- (b) a running job SIGKILLed → the next queued job granted (target: <= 1 s);
- (c) scheduler throughput: jobs admitted per second by the admission table
  with 1,000 tiny jobs queued (each admission follows a release); and jobs run
  end to end per second through a real host (tiny ``Square`` jobs, disposed
  when done);
- (d) a redirect: a job created on a host whose cores are all held, asking
  ``on_busy = "redirect"``, from its create to its grant on a second host it
  moved to (target p95 at most 500 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from durability import LEFTOVERS, host
from foundation import FIGURE_HEAD, Series, Table, machine

from paglets import AsyncHostClient, AsyncPagletProxy
from paglets.services.compute.contract import COMPUTE_SLOTS, JobsRequest
from paglets.services.compute.slots import Job, Resources, SlotTable

COUNTER = "examples.counter:Counter"
SQUARE = "examples.squares:Square"
PAUSE = "examples.squares:Pause"
LAUNCH = """\
[compute]
cores = 2
ram = "4GiB"
tmp = "1GiB"
max_load_per_cpu = 10000.0

[[services]]
name = "compute-slots"
class = "paglets.services.compute.service:ComputeSlots"
contract = "compute-slots.v1"
"""
TARGET_BEYOND_CREATE = 0.050
TARGET_KILL_TO_START = 1.0
TARGET_REDIRECT = 0.500


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def _job(client: AsyncHostClient, agent_id: str) -> object:
    slots = client.service(COMPUTE_SLOTS)
    while True:
        for job in (await slots.jobs(JobsRequest("all"))).jobs:
            if job.agent_id == agent_id and job.started_at is not None:
                return job
        await asyncio.sleep(0.005)


async def admission(client: AsyncHostClient, table: Table, rounds: int) -> None:
    """(a) create→grant of a job: the create, and the grant after the create returned."""
    creates: list[float] = []
    beyond: list[float] = []
    plain: list[float] = []
    warm = await client.create(SQUARE, {"n": 1, "cores": 1})  # starts the scheduler
    await _job(client, warm.agent_id)
    await warm.dispose()
    for _ in range(rounds):
        begun = time.time()
        job = await client.create(SQUARE, {"n": 3, "cores": 1})
        created = time.time()
        info = await _job(client, job.agent_id)
        creates.append(created - begun)
        beyond.append(info.started_at - created)  # type: ignore[attr-defined]
        await job.dispose()
        start = time.perf_counter()
        counter = await client.create(COUNTER)
        await counter.send("increment")
        plain.append(time.perf_counter() - start)
        await counter.dispose()
    b = Series(tuple(beyond))
    table.add(
        "(a)",
        "job create (median / p90)",
        Series(tuple(creates)).ms(),
        baseline=f"plain create→first reply {Series(tuple(plain)).ms()}",
    )
    table.add(
        "(a)",
        "grant after the create returned (median / p90; p95)",
        f"{b.ms()}; {p95(beyond) * 1000:.1f} ms",
        target=f"p95 <= {TARGET_BEYOND_CREATE * 1000:.0f} ms",
        met=p95(beyond) <= TARGET_BEYOND_CREATE,
    )


async def kill_to_start(client: AsyncHostClient, table: Table, rounds: int) -> None:
    """(b) SIGKILL of a running job → the next queued job's grant."""
    gaps: list[float] = []
    for _ in range(rounds):
        running = await client.create(PAUSE, {"seconds": 60, "cores": 2})
        await _job(client, running.agent_id)
        queued = await client.create(PAUSE, {"seconds": 0, "cores": 2})
        pid = next(p.pid for p in await client.list() if p.agent_id == running.agent_id)
        await asyncio.sleep(0.2)  # the queued job has submitted
        killed = time.time()
        os.kill(pid or 0, signal.SIGKILL)
        info = await _job(client, queued.agent_id)
        gaps.append(info.started_at - killed)  # type: ignore[attr-defined]
        await queued.dispose()
    g = Series(tuple(gaps))
    table.add(
        "(b)",
        "SIGKILL of a running job → next job granted (median / p90)",
        g.ms(),
        target=f"<= {TARGET_KILL_TO_START * 1000:.0f} ms",
        met=max(gaps) <= TARGET_KILL_TO_START,
    )


async def redirect(
    client: AsyncHostClient, other: AsyncHostClient, table: Table, rounds: int
) -> None:
    """(d) a job created on a full host that asks to be redirected: create → its grant
    on the other host (it moved there first)."""
    busy = await client.create(PAUSE, {"seconds": 600, "cores": 2})
    await _job(client, busy.agent_id)
    warm = await other.create(SQUARE, {"n": 1, "cores": 1})  # starts that scheduler
    await _job(other, warm.agent_id)
    await warm.dispose()
    gaps: list[float] = []
    for _ in range(rounds):
        begun = time.time()
        job = await client.create(SQUARE, {"n": 3, "cores": 1, "on_busy": "redirect"})
        info = await _job(other, job.agent_id)
        gaps.append(info.started_at - begun)  # type: ignore[attr-defined]
        await other.proxy(job.agent_id).dispose()
    await busy.dispose()
    table.add(
        "(d)",
        "redirect: create on a full host → granted on the other (median / p90; p95)",
        f"{Series(tuple(gaps)).ms()}; {p95(gaps) * 1000:.1f} ms",
        target=f"p95 <= {TARGET_REDIRECT * 1000:.0f} ms",
        met=p95(gaps) <= TARGET_REDIRECT,
    )


def table_throughput(table: Table, queued: int) -> None:
    """(c) admissions per second of the pure table with ``queued`` jobs waiting."""
    slots = SlotTable(Resources(2, 1 << 40, 1 << 40))
    now = 0.0
    for n in range(queued):
        slots.submit(Job(f"{n:012x}", f"a{n}", f"user{n % 10}", Resources(1, 1, 1)), now)
    start = time.perf_counter()
    admitted = 0
    while slots.running:
        now += 0.001
        admitted += len(slots.release(next(iter(slots.running)), now))
    took = time.perf_counter() - start
    table.add(
        "(c)",
        f"admission table: jobs admitted per second, {queued} queued",
        f"{admitted / took:,.0f}/s",
    )


async def end_to_end(client: AsyncHostClient, table: Table, jobs: int) -> None:
    """(c) tiny jobs run end to end through a real host, ``jobs`` submitted at once."""
    start = time.perf_counter()
    proxies = await asyncio.gather(
        *(client.create(SQUARE, {"n": n, "cores": 1}) for n in range(jobs))
    )

    async def finish(proxy: AsyncPagletProxy) -> None:
        phase = ""
        while phase not in ("done", "failed"):
            phase = (await proxy.send("compute.result"))["phase"]
            await asyncio.sleep(0.02)
        await proxy.dispose()

    await asyncio.gather(*(finish(p) for p in proxies))
    took = time.perf_counter() - start
    table.add("(c)", f"real host: {jobs} tiny jobs end to end, per second", f"{jobs / took:.1f}/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced counts: a smoke test")
    args = parser.parse_args()
    rounds, kills, jobs = (5, 2, 20) if args.quick else (30, 5, 100)
    table = Table(head=FIGURE_HEAD)
    with tempfile.TemporaryDirectory(prefix="paglets-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "launch.toml").write_text(LAUNCH)
        config = ("--config", str(workdir / "launch.toml"), "--max-paglets", "2000")
        async with (
            host(workdir, "compute", workdir / "state", *config) as h,
            AsyncHostClient(h.url) as client,
        ):
            _log("(a) create→grant against create→first reply")
            await admission(client, table, rounds)
            _log("(b) SIGKILL → next grant")
            await kill_to_start(client, table, kills)
            _log("(c) throughput")
            table_throughput(table, 1000)
            await end_to_end(client, table, jobs)
            _log("(d) a redirect to a second host")
            fast = ("--gossip-interval", "0.2", "--peer", h.url)
            async with (
                host(workdir, "compute-b", workdir / "state-b", *config, *fast) as b,
                AsyncHostClient(b.url) as other,
            ):
                while len(await client.hosts(online=True)) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await redirect(client, other, table, rounds)
    print(table.markdown())
    print(f"\n{machine()}")
    if LEFTOVERS.pids:
        print(f"\nleft behind by hosts (killed): {LEFTOVERS.pids}")


if __name__ == "__main__":
    asyncio.run(main())
