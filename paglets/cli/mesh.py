"""``paglets-mesh``: look at the mesh from the command line.

::

    paglets-mesh hosts                       # the mesh as the local host sees it,
                                             # with each host's identity fingerprint
    paglets-mesh hosts --url beta --json     # as host "beta" sees it, as JSON
    paglets-mesh resolve beta                # the URL of host "beta"
    paglets-mesh discover --timeout 3        # hosts announced on the LAN (zeroconf)

``--url`` takes a URL or a host name; a name is resolved through the local
host (``$PAGLETS_URL``, else ``http://127.0.0.1:8765``). See `paglets.cli._connect`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table

if TYPE_CHECKING:
    from paglets.mesh.discovery import Announcement
    from paglets.wire.mesh import HostRecord

PROG = "paglets-mesh"


async def _hosts(url: str | None) -> list[HostRecord]:
    async with connect(url) as client:
        return await client.hosts()


def _ago(timestamp: float) -> str:
    age = max(0.0, time.time() - timestamp)
    if age < 60:  # noqa: PLR2004
        return f"{age:.1f} s ago"
    if age < 3600:  # noqa: PLR2004
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.1f} h ago"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-mesh hosts                    # as the local host sees the mesh",
        "paglets-mesh hosts --url beta --json  # as host beta sees it, as JSON",
        "paglets-mesh resolve beta             # the URL of host beta",
        "paglets-mesh discover --timeout 3     # hosts announced on the LAN",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Look at the hosts of a paglets mesh."""


@command.command(
    epilog=examples("paglets-mesh hosts", "paglets-mesh hosts --url http://10.0.0.2:8765 --json")
)
@url_option
@json_option
def hosts(url: str | None, as_json: bool) -> None:
    """List the hosts of the mesh with their status."""
    from paglets.wire.mesh import fingerprint  # noqa: PLC0415 - lazy like the others

    records = asyncio.run(_hosts(url))
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    print_table(
        (
            "NAME",
            "URL",
            "STATUS",
            "MESH VERSION",
            "COMMIT",
            "UPDATE",
            "LAST SEEN",
            "PAGLETS",
            "TAGS",
            "CODE BY VALUE",
            "IDENTITY",
        ),
        [
            (
                r.name,
                r.url,
                "online" if r.online else "offline",
                r.mesh_version,
                (r.commit or "-")[:12],
                _update(r),
                _ago(r.last_seen),
                str(r.paglets),
                ",".join(r.tags),
                "trusted" if r.trusts_code else "refused",
                fingerprint(r.public_key),
            )
            for r in records
        ],
    )
    for r in records:
        if r.update is not None and r.update.reason:
            click.echo(f"{r.name}: {_update(r)}: {r.update.reason}")


def _update(record: HostRecord) -> str:
    """A host's auto-update state in a table cell: ``-`` when idle."""
    update = record.update
    if update is None:
        return "-"
    return f"{update.state.value} {(update.commit or '-')[:12]}"


@command.command(
    epilog=examples("paglets-mesh resolve beta", "paglets-mesh resolve beta --url gamma")
)
@click.argument("name")
@url_option
def resolve(name: str, url: str | None) -> None:
    """Print the URL of the host called NAME."""

    async def run() -> str:
        async with connect(url) as client:
            return await client.resolve(name)

    click.echo(asyncio.run(run()))


@command.command(epilog=examples("paglets-mesh discover", "paglets-mesh discover --json"))
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
@json_option
def discover(timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    """List the hosts announced on the LAN with zeroconf (no host needed)."""
    from paglets.mesh.discovery import browse  # noqa: PLC0415 - zeroconf is heavy

    found: list[Announcement] = asyncio.run(browse(timeout, interfaces))
    if as_json:
        print_json([a.properties() for a in found])
        return
    print_table(
        ("NAME", "URL", "MESH VERSION", "PROTOCOL"),
        [(a.name, a.url, a.mesh_version, str(a.protocol_version)) for a in found],
    )


def main() -> None:
    """Entry point of the ``paglets-mesh`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
