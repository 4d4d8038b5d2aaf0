"""``paglets-pi-compute``: Pi by the Chudnovsky series, computed across the mesh.

::

    paglets-pi-compute --digits 10000                # on every online host of the mesh
    paglets-pi-compute --digits 2000 --host beta     # on beta only
    paglets-pi-compute --digits 10000 --output pi.txt --json

The series' terms are cut into ranges (four per host), each computed by an
`examples.pi.PiTerms` compute job on one of the chosen hosts once its
compute-slot scheduler grants it a core, gathered by a job group's collector,
merged in order and checked against Machin's formula. Hosts without compute
slots get one `examples.pi.PiWorker` paglet each, sent ranges as messages. Jobs,
collector and workers are disposed of at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table, progress
from paglets.core.errors import HandlerError, PagletTimeoutError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from examples.pi import Terms
    from paglets import AsyncHostClient, AsyncPagletProxy
    from paglets.cli._output import Advance

PROG = "paglets-pi-compute"
WORKER = "examples.pi:PiWorker"
JOB = "examples.pi:PiTerms"
POLL = 0.05
RANGES_PER_WORKER = 4
CALL_TIMEOUT = 300.0


@dataclass
class _Worker:
    host: str
    proxy: AsyncPagletProxy
    ranges: int = 0
    terms: int = 0
    seconds: float = 0.0


@dataclass
class Result:
    """What one run computed (the ``--json`` form)."""

    digits: int
    terms: int
    ranges: int
    verified: bool
    seconds: float
    pi: str
    workers: list[dict[str, Any]] = field(default_factory=list)


async def compute(url: str | None, digits: int, names: tuple[str, ...]) -> Result:
    """Compute ``digits`` decimals of Pi across the mesh, merge and check them.

    Through compute slots when every host chosen serves them (one job per range,
    a job group gathering the results); else through one worker paglet per host.
    """
    from examples import pi  # noqa: PLC0415 - the math stays off --help's path

    started = time.perf_counter()
    total = pi.terms_for(digits)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(connect(url))
        chosen = list(names) or [h.name for h in await client.hosts(online=True)]
        hosts = [(name, await stack.enter_async_context(_at(client, name))) for name in chosen]
        count = min(total, len(hosts) * RANGES_PER_WORKER)
        bounds = [total * i // count for i in range(count + 1)]
        ranges = list(itertools.pairwise(bounds))
        if await _all_serve_slots(client, chosen):
            results, rows = await _by_jobs(client, hosts, ranges, digits)
        else:
            results, rows = await _by_workers(hosts, ranges)
    merged = results[0]
    for part in results[1:]:
        merged = pi.combine(merged, part)
    text = pi.pi_digits(merged, digits)
    verified = text == pi.machin_digits(digits)
    seconds = round(time.perf_counter() - started, 4)
    return Result(digits, total, len(ranges), verified, seconds, text, rows)


@contextlib.asynccontextmanager
async def _at(client: AsyncHostClient, name: str) -> AsyncIterator[AsyncHostClient]:
    other = await client.at(name)
    try:
        yield other
    finally:
        await other.close()


async def _all_serve_slots(client: AsyncHostClient, names: list[str]) -> bool:
    from paglets.services.compute.contract import COMPUTE_SLOTS  # noqa: PLC0415

    serving = {
        s.host
        for s in await client.services(mesh=True)
        if s.contract == COMPUTE_SLOTS.name and s.online is not False
    }
    return set(names) <= serving


async def _by_jobs(
    client: AsyncHostClient,
    hosts: list[tuple[str, AsyncHostClient]],
    ranges: list[tuple[int, int]],
    digits: int,
) -> tuple[list[Terms], list[dict[str, Any]]]:
    """One `PiTerms` compute job per range, in a group whose collector gathers them."""
    from examples import pi  # noqa: PLC0415
    from paglets.cli.computegroups import group_status  # noqa: PLC0415
    from paglets.services.compute.group import submit_group  # noqa: PLC0415

    states = [
        {"first": a, "last": b, "name": f"pi-{i}", "cores": 1} for i, (a, b) in enumerate(ranges)
    ]
    group = await submit_group(client, JOB, states, name=f"pi-{digits}", hosts=hosts)
    try:
        deadline = time.monotonic() + CALL_TIMEOUT
        with progress(f"{len(ranges)} jobs on {len(hosts)} hosts", len(ranges)) as advance:
            seen = 0
            while True:
                status = await group_status(client, group)
                ended = status["done"] + status["failed"]
                advance(ended - seen)
                seen = ended
                if status["completed_at"]:
                    break
                if time.monotonic() > deadline:
                    raise PagletTimeoutError(f"the jobs did not end within {CALL_TIMEOUT:g} s")
                await asyncio.sleep(POLL)
    finally:
        await _dispose_group(client, hosts, group)
    failed = [m for m in status["members"] if m["phase"] != "done"]
    if failed:
        raise HandlerError(f"job {failed[0]['name']} failed: {failed[0]['failure']}")
    rows: dict[str, dict[str, Any]] = {}
    for member, (first, last) in zip(status["members"], ranges, strict=True):
        row = rows.setdefault(member["host"], {"host": member["host"], "ranges": 0, "terms": 0})
        row["ranges"] += 1
        row["terms"] += last - first
    return [pi.from_hex(m["result"]) for m in status["members"]], list(rows.values())


async def _dispose_group(
    client: AsyncHostClient, hosts: list[tuple[str, AsyncHostClient]], group: str
) -> None:
    from paglets.cli.computegroups import group_status  # noqa: PLC0415

    by_name = dict(hosts)
    with contextlib.suppress(Exception):
        for member in (await group_status(client, group))["members"]:
            with contextlib.suppress(Exception):
                await by_name[member["host"]].proxy(member["agent_id"]).dispose()
    with contextlib.suppress(Exception):
        await client.proxy(group).dispose()


async def _by_workers(
    hosts: list[tuple[str, AsyncHostClient]], ranges: list[tuple[int, int]]
) -> tuple[list[Terms], list[dict[str, Any]]]:
    """One `PiWorker` per host, sent its next range as soon as it answers the last."""
    from examples import pi  # noqa: PLC0415

    workers: list[_Worker] = []
    try:
        for name, host in hosts:
            workers.append(_Worker(name, await host.create(WORKER)))
        results: list[Terms | None] = [None] * len(ranges)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(ranges)):
            queue.put_nowait(index)

        async def work(worker: _Worker, advance: Advance) -> None:
            while not queue.empty():
                index = queue.get_nowait()
                first, last = ranges[index]
                began = time.perf_counter()
                reply = await worker.proxy.send(
                    "terms", {"first": first, "last": last}, timeout=CALL_TIMEOUT
                )
                worker.seconds += time.perf_counter() - began
                worker.ranges += 1
                worker.terms += last - first
                results[index] = pi.from_hex({k: reply[k] for k in ("p", "q", "t")})
                advance()

        with progress(f"{len(ranges)} ranges on {len(workers)} hosts", len(ranges)) as advance:
            await asyncio.gather(*(work(w, advance) for w in workers))
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.proxy.dispose()
    rows = [
        {"host": w.host, "ranges": w.ranges, "terms": w.terms, "seconds": round(w.seconds, 4)}
        for w in workers
    ]
    return [r for r in results if r is not None], rows


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-pi-compute --digits 10000              # on every online host",
        "paglets-pi-compute --digits 2000 --host beta   # on beta only",
        "paglets-pi-compute --digits 10000 --output pi.txt --json",
    ),
)
@click.option(
    "--digits",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Decimals of Pi to compute (at most a million).",
)
@click.option(
    "--host",
    "names",
    multiple=True,
    metavar="NAME",
    help="A host to run a worker on; repeatable.  [default: every online host]",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the digits to this file.",
)
@url_option
@json_option
@click.version_option(__version__, prog_name=PROG)
def command(
    digits: int, names: tuple[str, ...], output: Path | None, url: str | None, as_json: bool
) -> None:
    """Compute Pi by the Chudnovsky series, the terms split across the mesh's hosts.

    The digits are checked against Machin's formula; the command fails (exit 1)
    if they differ.
    """
    result = asyncio.run(compute(url, digits, names))
    if output is not None:
        output.write_text(result.pi + "\n", encoding="ascii")
    if as_json:
        print_json(asdict(result))
    else:
        print_table(
            ("HOST", "RANGES", "TERMS"),
            [(w["host"], str(w["ranges"]), str(w["terms"])) for w in result.workers],
        )
        shown = result.pi if digits <= 60 else f"{result.pi[:32]}…{result.pi[-20:]}"  # noqa: PLR2004
        check = "verified by Machin's formula" if result.verified else "WRONG: Machin's differs"
        click.echo(f"pi = {shown}")
        click.echo(f"{digits} digits, {result.terms} terms in {result.seconds:.2f} s; {check}")
    if not result.verified:
        raise click.ClickException("the digits differ from Machin's formula")


def main() -> None:
    """Entry point of the ``paglets-pi-compute`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
