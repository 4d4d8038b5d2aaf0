"""``paglets-analysis-jobs``: a group of analysis jobs through compute slots across the mesh.

::

    paglets-analysis-jobs --tasks 3 --target-runtime 3
    paglets-analysis-jobs --tasks 20 --target-runtime 10 --cores 1 --json

Submits ``--tasks`` `examples.analysis.Analysis` jobs, round robin over the
online hosts that serve compute slots, with a collector on the host asked; shows
progress until the collector has every result (or ``--timeout``), then prints
the group's table. ``paglets-compute-groups show GROUP`` shows it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, progress

if TYPE_CHECKING:
    from paglets.transport.client import AsyncHostClient

PROG = "paglets-analysis-jobs"
ANALYSIS = "examples.analysis:Analysis"
POLL = 0.25


async def _hosts(client: AsyncHostClient, stack: contextlib.AsyncExitStack) -> list[Any]:
    """(name, client) of every online host that serves compute slots, the one asked first."""
    from paglets.services.compute.contract import COMPUTE_SLOTS  # noqa: PLC0415

    serving = {
        s.host
        for s in await client.services(mesh=True)
        if s.contract == COMPUTE_SLOTS.name and s.online
    }
    found = []
    for n, record in enumerate(await client.hosts()):
        if record.name not in serving:
            continue
        other = client if n == 0 else await stack.enter_async_context(connect(record.url))
        found.append((record.name, other))
    return found


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-analysis-jobs --tasks 3 --target-runtime 3",
        "paglets-analysis-jobs --tasks 20 --target-runtime 10 --url beta --json",
    ),
)
@click.option("--tasks", type=click.IntRange(1, 1000), default=3, show_default=True)
@click.option(
    "--target-runtime",
    type=click.FloatRange(0, 3600),
    default=3.0,
    show_default=True,
    help="Seconds each job works.",
)
@click.option("--cores", type=click.IntRange(0, 1024), default=1, show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 86_400),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the whole group.",
)
@url_option
@json_option
@click.version_option(__version__, prog_name=PROG)
def command(
    *,
    tasks: int,
    target_runtime: float,
    cores: int,
    timeout: float,
    url: str | None,
    as_json: bool,
) -> None:
    """Submit a group of analysis jobs through compute slots and print its results."""
    from paglets.cli.computegroups import group_status, print_members  # noqa: PLC0415
    from paglets.services.compute.group import submit_group  # noqa: PLC0415

    async def run() -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(connect(url))
            hosts = await _hosts(client, stack)
            if not hosts:
                raise click.ClickException("no online host of this mesh serves compute slots")
            states = [
                {"task": n, "target_runtime": target_runtime, "cores": cores, "name": f"task{n}"}
                for n in range(tasks)
            ]
            name = f"analysis-{tasks}x{target_runtime:g}s"
            group = await submit_group(client, ANALYSIS, states, name=name, hosts=hosts)
            deadline = time.monotonic() + timeout
            with progress(f"group {group[:12]}", tasks) as advance:
                seen = 0
                while True:
                    status = await group_status(client, group)
                    ended = status["done"] + status["failed"]
                    advance(ended - seen)
                    seen = ended
                    if status["completed_at"] or time.monotonic() > deadline:
                        return status
                    await asyncio.sleep(POLL)

    status = asyncio.run(run())
    if as_json:
        print_json(status)
        return
    print_members(status)
    complete = "complete" if status["completed_at"] else "not complete (timed out)"
    click.echo(
        f"group {status['group']} {status['name']}: {status['done']} done, "
        f"{status['failed']} failed of {status['total']}, {complete}"
    )


def main() -> None:
    """Entry point of the ``paglets-analysis-jobs`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
