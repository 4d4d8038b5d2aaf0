"""``paglets-disk-survey``: a paglet visits hosts and reports their disk space in one table.

::

    paglets-disk-survey                          # every online host, its temp directory
    paglets-disk-survey --root /srv/data --top 3 # the largest directories under /srv/data
    paglets-disk-survey --hosts alpha,beta --json

The paglet is `examples.disk_survey.Surveyor`. ``--root`` must lie inside each
host's file roots (``paglets-host --file-root``); without it each host surveys
its temp directory. The walk under the root is bounded in entries and time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import click

from paglets._version import __version__
from paglets.cli._connect import json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table
from paglets.cli._tour import hosts_option, timeout_option

PROG: Final = "paglets-disk-survey"
SURVEYOR: Final = "examples.disk_survey:Surveyor"
UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(size: float) -> str:
    """``size`` bytes in the largest binary unit that keeps it at or above 1."""
    for unit in UNITS[:-1]:
        if size < 1024:  # noqa: PLR2004
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} {UNITS[-1]}"


async def _survey(opts: dict[str, Any]) -> dict[str, Any]:
    from paglets.cli._connect import connect  # noqa: PLC0415
    from paglets.cli._tour import itinerary, run_tour, tour_hosts  # noqa: PLC0415

    async with connect(opts["url"]) as client:
        home, hosts = await tour_hosts(client, opts["hosts"])
        state = {
            **itinerary(home, hosts, "survey"),
            "root": opts["root"] or "",
            "top": opts["top"],
            "depth": opts["depth"],
            "max_entries": opts["max_entries"],
            "time_limit": opts["time_limit"],
        }
        return await run_tour(
            client, SURVEYOR, state, hosts=len(hosts), what="surveying", timeout=opts["timeout"]
        )


def _largest(usage: dict[str, Any]) -> str:
    return ", ".join(f"{d['path']} {human(d['bytes'])}" for d in usage["largest"]) or "-"


def _note(usage: dict[str, Any]) -> str:
    if usage["error"]:
        return str(usage["error"])
    return f"cut short: {usage['truncated']}" if usage["truncated"] else ""


def _row(usage: dict[str, Any]) -> tuple[str, ...]:
    if not usage["total"]:
        return (usage["host"], usage["root"] or "-", "-", "-", "-", "-", "-", "-", _note(usage))
    percent = 100 * usage["used"] / usage["total"]
    return (
        usage["host"],
        usage["root"],
        human(usage["total"]),
        human(usage["used"]),
        f"{percent:.0f}%",
        human(usage["free"]),
        human(usage["under_root"]),
        _largest(usage),
        _note(usage),
    )


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-disk-survey",
        "paglets-disk-survey --root /srv/data --top 3 --depth 1",
        "paglets-disk-survey --hosts alpha,beta --json",
    ),
)
@click.option(
    "--root",
    metavar="PATH",
    help="The directory to walk on every host, inside its file roots.  [default: each "
    "host's temp directory]",
)
@click.option(
    "--top",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    metavar="N",
    help="Largest directories shown per host.",
)
@click.option(
    "--depth",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    metavar="N",
    help="Levels of directories below the root that are ranked.",
)
@click.option(
    "--max-entries",
    type=click.IntRange(1, 10_000_000),
    default=100_000,
    show_default=True,
    metavar="N",
    help="Files and directories walked on one host.",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(0.1, 300),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Time spent walking on one host.",
)
@hosts_option
@timeout_option
@url_option
@json_option
@click.version_option(__version__, prog_name=PROG)
def command(as_json: bool, **opts: Any) -> None:
    """Each host's disk size, use and free space, and its largest directories under a root."""
    if opts["root"] is not None:  # a relative root: from the current directory
        opts["root"] = str(Path(opts["root"]).expanduser().absolute())
    result = asyncio.run(_survey(opts))
    if as_json:
        print_json(result["found"])
        return
    headers = ("HOST", "ROOT", "DISK", "USED", "USE%", "FREE", "UNDER ROOT", "LARGEST", "NOTE")
    print_table(headers, [_row(usage) for usage in result["found"]])


def main() -> None:
    """Entry point of the ``paglets-disk-survey`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
