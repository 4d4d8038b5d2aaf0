"""``paglets-sysinfo``: disks, load, memory and processes of every host, at once.

::

    paglets-sysinfo summary                 # one row per host of the mesh
    paglets-sysinfo df --host beta          # beta's file systems
    paglets-sysinfo load --json             # as JSON, host by host
    paglets-sysinfo ps --name python --user ana --limit 5

The host the command talks to (``--url``) lists the mesh; each host's
``server-info.v1`` service (`paglets.builtins.serverinfo`) is then called at
its own URL (`paglets.cli._across`), all hosts in parallel, each bounded by
``--timeout``: a host known to be offline, one that does not answer in time and
one without the service each get a row saying so, and never hold up the others.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table
from paglets.cli._units import format_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from paglets.builtins.serverinfo import Disk, LoadReply
    from paglets.cli._across import HostAnswer
    from paglets.transport.client import AsyncHostClient

PROG: Final = "paglets-sysinfo"
CONTRACT: Final = "server-info.v1"
DEFAULT_TIMEOUT: Final = 2.0
MAX_TIMEOUT: Final = 600.0


async def gather(
    url: str | None, op: str, request: object, *, timeout: float, hosts: Sequence[str] = ()
) -> list[HostAnswer]:
    """Call ``op`` of server-info on every host (or ``hosts``), in parallel, ``timeout`` each.

    A name in ``hosts`` the mesh does not know gets an ``unavailable`` answer.

    Raises:
        HostUnavailableError: no host answers at ``url`` (naming it, and how to start one).
    """
    from paglets.builtins.serverinfo import SERVER_INFO  # noqa: PLC0415
    from paglets.cli._across import HostAnswer, ask_all  # noqa: PLC0415

    async def ask(other: AsyncHostClient) -> object:
        # where= the host asked: its own service, never one elsewhere that advertises it
        return await other.service(SERVER_INFO, where=other.url, timeout=timeout).call(op, request)

    async with connect(url) as client:
        answers = await ask_all(client, ask, timeout=timeout, names=hosts)
    known = {a.name for a in answers}
    unknown = [n for n in dict.fromkeys(hosts) if n not in known]
    return answers + [
        HostAnswer(n, "", "unavailable", error="no such host in the mesh") for n in unknown
    ]


def _to_dict(answer: HostAnswer) -> dict[str, Any]:
    """One host's JSON form: ``host``, ``status``, ``error`` and the reply's JSON form."""
    from paglets.wire.state_json import state_to_json  # noqa: PLC0415

    reply = None if answer.data is None else state_to_json(answer.data)
    return {"host": answer.name, "status": answer.status, "error": answer.error, "reply": reply}


# -- the command -----------------------------------------------------------------------

timeout_option: Final = click.option(
    "--timeout",
    type=click.FloatRange(min=0.05, max=MAX_TIMEOUT),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds each host has to answer; a slower one shows as 'timeout'.",
)
host_option: Final = click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME",
    help="Only this host; repeatable.  [default: every host of the mesh]",
)


def _run(
    url: str | None, op: str, request: object, timeout: float, hosts: Sequence[str]
) -> list[HostAnswer]:
    answers = asyncio.run(gather(url, op, request, timeout=timeout, hosts=hosts))
    return sorted(answers, key=lambda a: a.name)


def _show(
    answers: list[HostAnswer],
    as_json: bool,
    headers: Sequence[str],
    rows_of: Callable[[Any], list[list[str]]],
) -> None:
    """Print JSON, or a table with one row per host that did not answer."""
    if as_json:
        print_json([_to_dict(a) for a in answers])
        return
    rows: list[list[str]] = []
    for answer in answers:
        if answer.status == "ok":
            rows += [[answer.name, *row] for row in rows_of(answer.data)]
        else:
            blank = ["-"] * (len(headers) - 2)
            rows.append([answer.name, answer.status.upper(), *blank])
    print_table(headers, rows)
    for answer in answers:
        if answer.status != "ok":
            click.echo(f"{answer.name}: {answer.status}: {answer.error}", err=True)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-sysinfo summary                    # every host of the mesh, one row each",
        "paglets-sysinfo df --host beta             # beta's file systems",
        "paglets-sysinfo load --json                # as JSON",
        "paglets-sysinfo ps --name python --limit 5",
        "paglets-sysinfo summary --url http://10.0.0.2:8765 --timeout 5",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Disks, load, memory and processes of the hosts of a mesh (server-info service)."""


@command.command(
    epilog=examples("paglets-sysinfo summary", "paglets-sysinfo summary --json --timeout 1")
)
@url_option
@json_option
@timeout_option
@host_option
def summary(url: str | None, as_json: bool, timeout: float, hosts: tuple[str, ...]) -> None:
    """One row per host: CPUs and usage, load, memory, swap, fullest disk, processes."""
    from paglets.builtins.serverinfo import SummaryRequest  # noqa: PLC0415

    def rows(reply: Any) -> list[list[str]]:
        load: LoadReply = reply.load
        fullest = max(reply.disks, key=lambda d: d.percent, default=None)
        disk = "-" if fullest is None else f"{fullest.mount} {fullest.percent:.0f}%"
        return [
            [
                "ok",
                str(load.cpu_count),
                f"{load.cpu_percent:.0f}%",
                f"{load.load_1:.2f} {load.load_5:.2f} {load.load_15:.2f}",
                _used(load.memory.total - load.memory.available, load.memory.total),
                _used(load.swap.used, load.swap.total),
                disk,
                str(reply.processes),
            ]
        ]

    headers = ("HOST", "STATUS", "CPUS", "CPU", "LOAD 1/5/15", "MEMORY", "SWAP", "FULLEST DISK")
    answers = _run(url, "summary", SummaryRequest(), timeout, hosts)
    _show(answers, as_json, (*headers, "PROCESSES"), rows)


@command.command(epilog=examples("paglets-sysinfo df", "paglets-sysinfo df --host beta --all"))
@url_option
@json_option
@timeout_option
@host_option
@click.option("--all", "all_", is_flag=True, help="Pseudo and duplicate file systems too.")
def df(url: str | None, as_json: bool, timeout: float, hosts: tuple[str, ...], all_: bool) -> None:
    """The mounted file systems of each host: size, used, free."""
    from paglets.builtins.serverinfo import DfRequest  # noqa: PLC0415

    def rows(reply: Any) -> list[list[str]]:
        disks: list[Disk] = reply.disks
        return [
            [
                d.mount,
                d.device,
                d.fstype,
                format_bytes(d.total),
                format_bytes(d.used),
                format_bytes(d.free),
                f"{d.percent:.0f}%",
            ]
            for d in disks
        ]

    headers = ("HOST", "MOUNT", "DEVICE", "TYPE", "SIZE", "USED", "FREE", "USE")
    _show(_run(url, "df", DfRequest(all=all_), timeout, hosts), as_json, headers, rows)


@command.command(epilog=examples("paglets-sysinfo load", "paglets-sysinfo load --host alpha"))
@url_option
@json_option
@timeout_option
@host_option
def load(url: str | None, as_json: bool, timeout: float, hosts: tuple[str, ...]) -> None:
    """CPUs, CPU usage, load averages, memory and swap of each host."""
    from paglets.builtins.serverinfo import LoadRequest  # noqa: PLC0415

    def rows(reply: Any) -> list[list[str]]:
        return [
            [
                "ok",
                str(reply.cpu_count),
                f"{reply.cpu_percent:.0f}%",
                f"{reply.load_1:.2f}",
                f"{reply.load_5:.2f}",
                f"{reply.load_15:.2f}",
                format_bytes(reply.memory.total),
                format_bytes(reply.memory.available),
                _used(reply.swap.used, reply.swap.total),
                _uptime(reply.uptime),
            ]
        ]

    headers = ("HOST", "STATUS", "CPUS", "CPU", "LOAD 1", "LOAD 5", "LOAD 15", "MEMORY")
    answers = _run(url, "load", LoadRequest(), timeout, hosts)
    _show(answers, as_json, (*headers, "AVAILABLE", "SWAP", "UP"), rows)


@command.command(
    epilog=examples(
        "paglets-sysinfo ps --name python",
        "paglets-sysinfo ps --user ana --limit 50 --host beta",
    )
)
@url_option
@json_option
@timeout_option
@host_option
@click.option("--name", default="", help="Processes whose name holds this text (any case).")
@click.option("--user", default="", help="Processes of this user.")
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=20,
    show_default=True,
    help="Processes per host at most, the largest memory first.",
)
def ps(  # noqa: PLR0917 - one per option
    url: str | None,
    as_json: bool,
    timeout: float,
    hosts: tuple[str, ...],
    name: str,
    user: str,
    limit: int,
) -> None:
    """Processes of each host by name or user: pid, user, status, memory, CPU time."""
    from paglets.builtins.serverinfo import PsRequest  # noqa: PLC0415

    def rows(reply: Any) -> list[list[str]]:
        return [
            [
                str(p.pid),
                p.name,
                p.user,
                p.status,
                format_bytes(p.rss),
                f"{p.cpu_seconds:.1f} s",
            ]
            for p in reply.processes
        ]

    answers = _run(url, "ps", PsRequest(name, user, limit), timeout, hosts)
    headers = ("HOST", "PID", "NAME", "USER", "STATUS", "MEMORY", "CPU TIME")
    _show(answers, as_json, headers, rows)
    if not as_json:
        for answer in answers:
            if answer.status == "ok" and answer.data.matched > len(answer.data.processes):
                shown, matched = len(answer.data.processes), answer.data.matched
                click.echo(f"{answer.name}: {shown} of {matched} shown (--limit)", err=True)


def _used(used: int, total: int) -> str:
    if total <= 0:
        return "-"
    return f"{format_bytes(used)} / {format_bytes(total)}"


def _uptime(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m"


def main() -> None:
    """Entry point of the ``paglets-sysinfo`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
