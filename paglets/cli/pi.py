"""``paglets-pi-compute``: Pi by the Chudnovsky series, computed across the mesh.

::

    paglets-pi-compute --digits 10000                # on every online host of the mesh
    paglets-pi-compute --digits 2000 --host beta     # on beta only
    paglets-pi-compute --digits 10000 --output pi.txt --json

One `examples.pi.PiWorker` paglet is created on each chosen host; the series'
terms are cut into ranges, handed to the workers (a worker takes its next range
as soon as it answers the last), merged in order and checked against Machin's
formula. The workers are disposed of at the end, whatever happened.
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

if TYPE_CHECKING:
    from paglets import AsyncHostClient, AsyncPagletProxy
    from paglets.cli._output import Advance

PROG = "paglets-pi-compute"
WORKER = "examples.pi:PiWorker"
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


async def _workers(client: AsyncHostClient, names: tuple[str, ...]) -> list[_Worker]:
    chosen = list(names) if names else [h.name for h in await client.hosts(online=True)]
    workers = []
    try:
        for name in chosen:
            host = await client.at(name)
            try:
                workers.append(_Worker(name, await host.create(WORKER)))
            except BaseException:
                await host.close()
                raise
    except BaseException:
        await _dispose(workers)
        raise
    return workers


async def _dispose(workers: list[_Worker]) -> None:
    for worker in workers:
        with contextlib.suppress(Exception):
            await worker.proxy.dispose()
        await worker.proxy.client.close()


async def compute(url: str | None, digits: int, names: tuple[str, ...]) -> Result:
    """Compute ``digits`` decimals of Pi on the workers, merge and check them."""
    from examples import pi  # noqa: PLC0415 - the math stays off --help's path

    started = time.perf_counter()
    total = pi.terms_for(digits)
    async with connect(url) as client:
        workers = await _workers(client, names)
        try:
            count = min(total, len(workers) * RANGES_PER_WORKER)
            bounds = [total * i // count for i in range(count + 1)]
            ranges = list(itertools.pairwise(bounds))
            results: list[pi.Terms | None] = [None] * len(ranges)
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
                    results[index] = pi.from_hex(
                        {k: v for k, v in reply.items() if k in ("p", "q", "t")}
                    )
                    advance()

            with progress(f"{total} terms on {len(workers)} hosts", len(ranges)) as advance:
                await asyncio.gather(*(work(w, advance) for w in workers))
        finally:
            await _dispose(workers)
    merged = results[0]
    assert merged is not None  # noqa: S101 - every range was computed or gather raised
    for part in results[1:]:
        assert part is not None  # noqa: S101
        merged = pi.combine(merged, part)
    text = pi.pi_digits(merged, digits)
    verified = text == pi.machin_digits(digits)
    rows = [
        {"host": w.host, "ranges": w.ranges, "terms": w.terms, "seconds": round(w.seconds, 4)}
        for w in workers
    ]
    seconds = round(time.perf_counter() - started, 4)
    return Result(digits, total, len(ranges), verified, seconds, text, rows)


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
            ("HOST", "RANGES", "TERMS", "SECONDS"),
            [
                (w["host"], str(w["ranges"]), str(w["terms"]), f"{w['seconds']:.3f}")
                for w in result.workers
            ],
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
