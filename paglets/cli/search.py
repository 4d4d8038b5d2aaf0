"""``paglets-search``: a paglet visits hosts and brings back matching lines or file names.

::

    paglets-search grep 'ERROR|Traceback' /tmp/logs          # every online host
    paglets-search grep TODO /srv/code --hosts alpha,beta --max-per-host 20
    paglets-search find '*.ckpt' /tmp --json

The paglet is `examples.search.Searcher`. PATH is searched on every host, inside
that host's file roots (``paglets-host --file-root``); a relative PATH is taken
from the current directory. Output is bounded per host and in total.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from paglets._version import __version__
from paglets.cli._connect import json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table
from paglets.cli._tour import hosts_option, timeout_option

if TYPE_CHECKING:
    from collections.abc import Callable

PROG: Final = "paglets-search"
SEARCHER: Final = "examples.search:Searcher"


def _bounds(func: Callable[..., Any]) -> Callable[..., Any]:
    options = (
        click.option(
            "--max-per-host",
            type=click.IntRange(1, 10_000),
            default=100,
            show_default=True,
            metavar="N",
            help="Matches kept from one host.",
        ),
        click.option(
            "--max-total",
            type=click.IntRange(1, 100_000),
            default=1000,
            show_default=True,
            metavar="N",
            help="Matches kept in all; the tour stops searching there.",
        ),
        click.option(
            "--max-files",
            type=click.IntRange(1, 1_000_000),
            default=10_000,
            show_default=True,
            metavar="N",
            help="Files looked at on one host.",
        ),
        click.option(
            "--time-limit",
            type=click.FloatRange(0.1, 300),
            default=10.0,
            show_default=True,
            metavar="SECONDS",
            help="Time spent searching on one host.",
        ),
        hosts_option,
        timeout_option,
        url_option,
        json_option,
    )
    for option in reversed(options):
        func = option(func)
    return func


async def _search(mode: str, pattern: str, path: str, opts: dict[str, Any]) -> dict[str, Any]:
    from paglets.cli._connect import connect  # noqa: PLC0415
    from paglets.cli._tour import itinerary, run_tour, tour_hosts  # noqa: PLC0415

    async with connect(opts["url"]) as client:
        home, hosts = await tour_hosts(client, opts["hosts"])
        state = {
            **itinerary(home, hosts, mode),
            "mode": mode,
            "pattern": pattern,
            "path": path,
            "per_host": opts["max_per_host"],
            "total": opts["max_total"],
            "max_files": opts["max_files"],
            "time_limit": opts["time_limit"],
        }
        what = f"{mode} {pattern!r} in {path}"
        return await run_tour(
            client, SEARCHER, state, hosts=len(hosts), what=what, timeout=opts["timeout"]
        )


def _show(result: dict[str, Any], *, as_json: bool) -> None:
    found = result["found"]
    if as_json:
        print_json(found)
        return
    for host in found:
        for match in host["matches"]:
            click.echo(f"{host['host']}:{match}")
    if found and any(host["matches"] for host in found):
        click.echo()
    print_table(
        ("HOST", "FILES", "MATCHES", "SECONDS", "NOTE"),
        [
            (
                h["host"],
                str(h["files"]),
                str(len(h["matches"])),
                f"{h['seconds']:.2f}",
                h["error"] or (f"cut short: {h['truncated']}" if h["truncated"] else ""),
            )
            for h in found
        ],
    )


def _run(mode: str, pattern: str, path: str, opts: dict[str, Any]) -> None:
    from examples.search import check_pattern  # noqa: PLC0415

    check_pattern(mode, pattern)  # a bad pattern fails here, before any host is visited
    as_json = opts.pop("as_json")
    result = asyncio.run(_search(mode, pattern, str(Path(path).expanduser().absolute()), opts))
    _show(result, as_json=as_json)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-search grep 'ERROR|Traceback' /tmp/logs",
        "paglets-search grep TODO /srv/code --hosts alpha,beta --max-per-host 20",
        "paglets-search find '*.ckpt' /tmp --json",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Search the hosts of the mesh with a paglet that visits each in turn.

    Each host searches only inside its file roots: the temp directory, its
    files directory and every paglets-host --file-root.
    """


@command.command(
    epilog=examples(
        "paglets-search grep 'ERROR|Traceback' /tmp/logs",
        "paglets-search grep '^def ' /srv/code --hosts beta --max-total 50",
    )
)
@click.argument("pattern")
@click.argument("path")
@_bounds
def grep(pattern: str, path: str, **opts: Any) -> None:
    """Lines matching the regular expression PATTERN in the files under PATH."""
    _run("grep", pattern, path, opts)


@command.command(
    epilog=examples("paglets-search find '*.log' /tmp", "paglets-search find core /tmp --json")
)
@click.argument("name")
@click.argument("path")
@_bounds
def find(name: str, path: str, **opts: Any) -> None:
    """Files and directories under PATH whose name matches the glob NAME."""
    _run("find", name, path, opts)


def main() -> None:
    """Entry point of the ``paglets-search`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
