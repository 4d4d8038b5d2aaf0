"""``paglets-mesh``: look at the mesh from the command line.

::

    paglets-mesh hosts                       # the mesh as the local host sees it,
                                             # with each host's identity fingerprint
    paglets-mesh hosts --url beta --json     # as host "beta" sees it, as JSON
    paglets-mesh resolve beta                # the URL of host "beta"
    paglets-mesh discover --timeout 3        # hosts announced on the LAN (zeroconf)

``--url`` takes a URL or a host name; a name is resolved through the local
host (``$PAGLETS_URL``, else ``http://127.0.0.1:8765``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import TYPE_CHECKING

import click

from paglets._version import __version__
from paglets.cli._errors import run_cli

if TYPE_CHECKING:
    from paglets.mesh.discovery import Announcement
    from paglets.wire.mesh import HostRecord

PROG = "paglets-mesh"
DEFAULT_URL = "http://127.0.0.1:8765"

_url_option = click.option(
    "--url",
    metavar="URL|NAME",
    help="The host to ask, by URL or by name.  [default: $PAGLETS_URL or " + DEFAULT_URL + "]",
)
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
)


def _local_url() -> str:
    return os.environ.get("PAGLETS_URL") or DEFAULT_URL


async def _client_url(url: str | None) -> str:
    from paglets.transport.client import AsyncHostClient  # noqa: PLC0415 - aiohttp is heavy

    if url is None:
        return _local_url()
    if url.startswith(("http://", "https://")):
        return url
    async with AsyncHostClient(_local_url()) as local:
        return await local.resolve(url)


async def _hosts(url: str | None) -> list[HostRecord]:
    from paglets.transport.client import AsyncHostClient  # noqa: PLC0415

    async with AsyncHostClient(await _client_url(url)) as client:
        return await client.hosts()


def _ago(timestamp: float) -> str:
    age = max(0.0, time.time() - timestamp)
    if age < 60:  # noqa: PLR2004
        return f"{age:.1f} s ago"
    if age < 3600:  # noqa: PLR2004
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.1f} h ago"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Look at the hosts of a paglets mesh."""


@command.command()
@_url_option
@_json_option
def hosts(url: str | None, as_json: bool) -> None:
    """List the hosts of the mesh with their status."""
    from paglets.wire.mesh import fingerprint  # noqa: PLC0415 - lazy like the others

    records = asyncio.run(_hosts(url))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    rows = [["NAME", "URL", "STATUS", "MESH VERSION", "LAST SEEN", "PAGLETS", "TAGS", "IDENTITY"]]
    rows[0][4:4] = ["COMMIT", "UPDATE"]
    rows += [
        [
            r.name,
            r.url,
            "online" if r.online else "offline",
            r.mesh_version,
            (r.commit or "-")[:12],
            _update(r),
            _ago(r.last_seen),
            str(r.paglets),
            ",".join(r.tags),
            fingerprint(r.public_key),
        ]
        for r in records
    ]
    click.echo(_table(rows))
    for r in records:
        if r.update is not None and r.update.reason:
            click.echo(f"{r.name}: {_update(r)}: {r.update.reason}")


def _update(record: HostRecord) -> str:
    """A host's auto-update state in a table cell: ``-`` when idle."""
    update = record.update
    if update is None:
        return "-"
    return f"{update.state.value} {(update.commit or '-')[:12]}"


@command.command()
@click.argument("name")
@_url_option
def resolve(name: str, url: str | None) -> None:
    """Print the URL of the host called NAME."""
    from paglets.transport.client import AsyncHostClient  # noqa: PLC0415

    async def run() -> str:
        async with AsyncHostClient(await _client_url(url)) as client:
            return await client.resolve(name)

    click.echo(asyncio.run(run()))


@command.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Seconds to listen.",
)
@click.option(
    "--interface",
    "interfaces",
    multiple=True,
    metavar="ADDR",
    help="Interface address; repeatable.",
)
@_json_option
def discover(timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    """List the hosts announced on the LAN with zeroconf (no host needed)."""
    from paglets.mesh.discovery import browse  # noqa: PLC0415 - zeroconf is heavy

    found: list[Announcement] = asyncio.run(browse(timeout, interfaces))
    if as_json:
        click.echo(json.dumps([a.properties() for a in found], indent=2))
        return
    rows = [["NAME", "URL", "MESH VERSION", "PROTOCOL"]]
    rows += [[a.name, a.url, a.mesh_version, str(a.protocol_version)] for a in found]
    click.echo(_table(rows))


def main() -> None:
    """Entry point of the ``paglets-mesh`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
