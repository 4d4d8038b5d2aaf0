"""What the commands of touring paglets share: which hosts to visit, and the wait.

A touring paglet (`examples.tour.Tour`) starts on the local host, visits the
hosts in order and comes home; the command polls its ``result`` until ``done``,
drawing a progress bar by hosts visited, then disposes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

import click

from paglets.cli._output import progress

if TYPE_CHECKING:
    from paglets.transport.client import AsyncHostClient

POLL: Final = 0.1

hosts_option: Final = click.option(
    "--hosts",
    metavar="NAMES",
    help="Hosts to visit, comma-separated, in order.  [default: every online host of "
    "the local host's mesh version, the local host first]",
)
timeout_option: Final = click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the whole tour may take.",
)


async def tour_hosts(client: AsyncHostClient, names: str | None) -> tuple[str, list[str]]:
    """The local host's name and the hosts to visit: ``names`` checked, else every
    online host of the local host's mesh version.

    Raises:
        HostNotFoundError: a name the local host's mesh does not know.
    """
    from paglets.core.errors import HostNotFoundError  # noqa: PLC0415

    records = await client.hosts()
    local = records[0]
    if not names:
        same = [r.name for r in records if r.online and r.mesh_version == local.mesh_version]
        return local.name, same
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {r.name for r in records}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise HostNotFoundError(
            f"no host {', '.join(unknown)} in the mesh of {local.name}; "
            "see 'paglets-mesh hosts' for the names"
        )
    return local.name, list(dict.fromkeys(wanted))


def itinerary(home: str, hosts: list[str], task: str) -> dict[str, Any]:
    """The JSON state fields of a tour over ``hosts`` from ``home``."""
    return {
        "itinerary": {"stops": [{"host": h, "task": task} for h in hosts], "position": 0},
        "home": home,
    }


async def run_tour(
    client: AsyncHostClient,
    class_path: str,
    state: dict[str, Any],
    *,
    hosts: int,
    what: str,
    timeout: float,
) -> dict[str, Any]:
    """Create the touring paglet, wait until it is home and done, return its ``result``.

    Raises:
        PagletTimeoutError: it was not done within ``timeout`` seconds.
    """
    from paglets.core.errors import PagletError, PagletTimeoutError  # noqa: PLC0415

    paglet = await client.create(class_path, state)
    try:
        deadline = time.monotonic() + timeout
        seen = 0
        with progress(what, hosts) as advance:
            while True:
                result: dict[str, Any] = await paglet.send("result")
                advance(len(result["found"]) - seen)
                seen = len(result["found"])
                if result["done"]:
                    return result
                if time.monotonic() > deadline:
                    raise PagletTimeoutError(
                        f"the tour was not over within {timeout:g} s ({seen} of {hosts} hosts "
                        "done); raise --timeout"
                    )
                await asyncio.sleep(POLL)
    finally:
        with contextlib.suppress(PagletError):
            await paglet.dispose()
