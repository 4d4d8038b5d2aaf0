"""``paglets-mesh-info``: the mesh's resources, and which hosts can take more work.

::

    paglets-mesh-info summary                       # every host: load, memory, disk, paglets
    paglets-mesh-info targets --max-load-per-cpu 0.8 --min-free-memory 2GiB --tag gpu

Both read the snapshot the host asked (``--url``) keeps of every host, carried
with the gossip (`paglets.wire.resources.HostResources`): no other host is
asked, so the answer is immediate even when hosts are down. ``targets`` is the
selection ``self.context.targets(...)`` gives a paglet (`paglets.wire.targets`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table
from paglets.cli._units import BYTES, format_bytes

if TYPE_CHECKING:
    from paglets.wire.mesh import HostRecord
    from paglets.wire.resources import HostResources
    from paglets.wire.targets import Target

PROG: Final = "paglets-mesh-info"


def snapshot_dict(record: HostRecord) -> dict[str, Any]:
    """What ``summary --json`` prints of one host."""
    res = record.resources
    return {
        "name": record.name,
        "url": record.url,
        "online": record.online,
        "last_seen": record.last_seen,
        "mesh_version": record.mesh_version,
        "version": record.version,
        "commit": record.commit,
        "tags": list(record.tags),
        "properties": dict(record.properties),
        "services": list(record.services),
        "paglets": record.paglets,
        "load_per_cpu": None if res is None else round(res.load_per_cpu, 3),
        "resources": None if res is None else res.to_dict(),
    }


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-mesh-info summary                    # every host, as this host sees it",
        "paglets-mesh-info summary --url beta --json  # as host beta sees it, as JSON",
        "paglets-mesh-info targets --max-load-per-cpu 0.8 --min-free-memory 2GiB",
        "paglets-mesh-info targets --tag gpu --min-free-disk 50GiB --limit 3",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """The resources of the hosts of a mesh, from the gossiped snapshot."""


@command.command(epilog=examples("paglets-mesh-info summary", "paglets-mesh-info summary --json"))
@url_option
@json_option
def summary(url: str | None, as_json: bool) -> None:
    """Every host: status, versions, CPUs, load, memory, work-dir disk, paglets, tags."""

    async def run() -> list[HostRecord]:
        async with connect(url) as client:
            return await client.hosts()

    records = asyncio.run(run())
    if as_json:
        print_json([snapshot_dict(r) for r in records])
        return
    now = time.time()
    print_table(
        (
            "HOST",
            "STATUS",
            "VERSION",
            "CPUS",
            "LOAD/CPU",
            "LOAD 1/5/15",
            "MEMORY FREE",
            "DISK FREE",
            "ACTIVE",
            "INACTIVE",
            "TAGS",
        ),
        [
            [
                r.name,
                "online" if r.online else f"offline {max(0.0, now - r.last_seen):.0f} s",
                f"{r.version} ({r.mesh_version})",
                *_resources(r.resources),
                ",".join(r.tags) or "-",
            ]
            for r in records
        ],
    )


def _resources(res: HostResources | None) -> list[str]:
    if res is None:
        return ["-"] * 7
    return [
        str(res.cpu_count),
        f"{res.load_per_cpu:.2f}",
        f"{res.load_1:.2f} {res.load_5:.2f} {res.load_15:.2f}",
        f"{format_bytes(res.memory_available)} / {format_bytes(res.memory_total)}",
        f"{format_bytes(res.disk_free)} / {format_bytes(res.disk_total)}",
        str(res.paglets_active),
        str(res.paglets_inactive),
    ]


@command.command(
    epilog=examples(
        "paglets-mesh-info targets",
        "paglets-mesh-info targets --max-load-per-cpu 0.5 --min-free-memory 4GiB",
        "paglets-mesh-info targets --tag gpu --tag lab --min-free-disk 100GiB --json",
    )
)
@url_option
@json_option
@click.option(
    "--max-load-per-cpu",
    type=click.FloatRange(min=0),
    help="Most 1-minute load average per CPU (1.0: every CPU busy).",
)
@click.option("--min-free-memory", type=BYTES, help="Least available memory, e.g. 2GiB.")
@click.option("--min-free-disk", type=BYTES, help="Least free disk in the work dir, e.g. 10GiB.")
@click.option("--tag", "tags", multiple=True, help="A tag the host must carry; repeatable.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=16, show_default=True, help="Hosts at most."
)
def targets(  # noqa: PLR0917 - one per option
    url: str | None,
    as_json: bool,
    max_load_per_cpu: float | None,
    min_free_memory: int | None,
    min_free_disk: int | None,
    tags: tuple[str, ...],
    limit: int,
) -> None:
    """Hosts that meet every constraint, best first (least load per CPU, most memory)."""
    from paglets.wire.targets import TargetQuery  # noqa: PLC0415

    query = TargetQuery(max_load_per_cpu, min_free_memory, min_free_disk, tags, limit)

    async def run() -> list[Target]:
        async with connect(url) as client:
            return await client.targets(query)

    found = asyncio.run(run())
    if as_json:
        print_json([t.to_dict() for t in found])
        return
    print_table(
        ("RANK", "HOST", "CPUS", "LOAD/CPU", "MEMORY FREE", "DISK FREE", "ACTIVE", "TAGS"),
        [
            [
                str(t.rank),
                t.name,
                str(t.resources.cpu_count),
                f"{t.load_per_cpu:.2f}",
                format_bytes(t.resources.memory_available),
                format_bytes(t.resources.disk_free),
                str(t.resources.paglets_active),
                ",".join(t.tags) or "-",
            ]
            for t in found
        ],
    )
    if not found:
        click.echo("no online host meets these constraints", err=True)


def main() -> None:
    """Entry point of the ``paglets-mesh-info`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
