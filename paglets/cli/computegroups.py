"""``paglets-compute-groups``: job groups and their result collectors.

::

    paglets-compute-groups list              # the groups whose collectors run here
    paglets-compute-groups show GROUP        # a group's members: host, phase, result
    paglets-analysis-jobs --tasks 3 --target-runtime 3   # submits one (see that command)

Every command takes ``--url URL|NAME`` and ``--json``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table

if TYPE_CHECKING:
    from paglets.transport.client import AsyncHostClient

PROG = "paglets-compute-groups"


async def group_status(client: AsyncHostClient, group: str) -> dict[str, Any]:
    """The collector ``group``'s answer to ``group.status``."""
    from paglets.services.compute.group import STATUS  # noqa: PLC0415 - --help fast

    answer: dict[str, Any] = await client.proxy(group).send(STATUS)
    return answer


def print_members(status: dict[str, Any]) -> None:
    """A group's members as a table."""
    print_table(
        ("AGENT", "HOST", "NAME", "PHASE", "RESULT OR FAILURE"),
        [
            (
                m["agent_id"][:12],
                m["host"],
                m["name"],
                m["phase"],
                m["failure"] or json.dumps(m["result"]),
            )
            for m in status["members"]
        ],
    )


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-compute-groups list            # groups collected on this host",
        "paglets-compute-groups show 9c1e…      # one group's members and results",
        "paglets-compute-groups list --json",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Job groups: each member's result or failure, gathered by the group's collector."""


@command.command(name="list", epilog=examples("paglets-compute-groups list --url beta"))
@url_option
@json_option
def list_groups(url: str | None, as_json: bool) -> None:
    """List the groups whose collectors are on the host."""
    from paglets.services.compute.group import COLLECTOR  # noqa: PLC0415

    async def run() -> list[dict[str, Any]]:
        async with connect(url) as client:
            found = [p for p in await client.list() if p.class_path == COLLECTOR]
            return [await group_status(client, p.agent_id) for p in found]

    groups = asyncio.run(run())
    if as_json:
        print_json(groups)
        return
    print_table(
        ("GROUP", "NAME", "TOTAL", "DONE", "FAILED", "COMPLETE"),
        [
            (
                g["group"],
                g["name"],
                str(g["total"]),
                str(g["done"]),
                str(g["failed"]),
                "yes" if g["completed_at"] else "no",
            )
            for g in groups
        ],
    )


@command.command(epilog=examples("paglets-compute-groups show 9c1e0d2a… --json"))
@click.argument("group")
@url_option
@json_option
def show(group: str, url: str | None, as_json: bool) -> None:
    """Show the members of GROUP (its collector's agent id) and their results."""
    from paglets.core.ids import IdKind, check_id  # noqa: PLC0415

    async def run() -> dict[str, Any]:
        async with connect(url) as client:
            return await group_status(client, check_id(group, IdKind.AGENT))

    status = asyncio.run(run())
    if as_json:
        print_json(status)
        return
    print_members(status)


def main() -> None:
    """Entry point of the ``paglets-compute-groups`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
