"""``paglets-user-info``: what paglets told the person, from every host of the mesh.

::

    paglets-user-info list                          # every host's notices, oldest first
    paglets-user-info list --severity warning --since 1h --json
    paglets-user-info list --job build-42           # one job's notices and stream lines
    paglets-user-info follow                        # new ones as they come, until Ctrl-C
    paglets-user-info follow --job build-42 --count 1   # wait for the next one of a job

Each host is asked in parallel within ``--timeout`` seconds; a host that is
offline or slow is shown as such and never stalls the others.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table

if TYPE_CHECKING:
    from paglets.cli._across import HostAnswer
    from paglets.transport.client import AsyncHostClient

PROG = "paglets-user-info"
PATH = "/v1/user-info"
SEVERITIES = ("debug", "info", "warning", "error")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
POLL = 10.0  # seconds each long poll of `follow` may wait on a host


def parse_since(value: str | None) -> float | None:
    """``--since``: ``30s``, ``10m``, ``2h``, ``1d`` ago, or a Unix time."""
    if value is None:
        return None
    unit = _UNITS.get(value[-1:])
    try:
        if unit is not None:
            return time.time() - float(value[:-1]) * unit
        return float(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: use 30s, 10m, 2h, 1d or a Unix time", param_hint="--since"
        ) from None


def _filters(severity: str, job: str | None, since: str | None) -> dict[str, str]:
    params = {"severity": severity}
    if job is not None:
        params["job"] = job
    start = parse_since(since)
    if start is not None:
        params["since"] = f"{max(0.0, start):.3f}"
    return params


def filter_options(fn: Any) -> Any:
    """The options ``list`` and ``follow`` share."""
    for option in reversed(
        (
            url_option,
            click.option(
                "--severity",
                type=click.Choice(SEVERITIES),
                default="debug",
                show_default=True,
                help="The lowest severity shown.",
            ),
            click.option("--job", metavar="ID", help="Only notices about this job."),
            click.option(
                "--since", metavar="WHEN", help="Only notices since: 10m, 2h, 1d, or a Unix time."
            ),
            click.option(
                "--host",
                "hosts",
                multiple=True,
                metavar="NAME",
                help="Ask only this host; repeatable.  [default: every host]",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0.1, max=60),
                default=3.0,
                show_default=True,
                help="Seconds each host has to answer.",
            ),
            json_option,
        )
    ):
        fn = option(fn)
    return fn


def _time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _host_rows(answers: list[HostAnswer]) -> None:
    for answer in answers:
        if answer.status != "ok":
            click.echo(f"{answer.name}: {answer.status} ({answer.error})", err=True)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-user-info list                       # every host's notices",
        "paglets-user-info list --severity warning --since 1h --json",
        "paglets-user-info list --job build-42        # one job's notices and lines",
        "paglets-user-info follow                     # new ones as they come",
        "paglets-user-info follow --job build-42 --count 1",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Notices from paglets to you, collected across the mesh."""


@command.command(
    name="list",
    epilog=examples(
        "paglets-user-info list --severity error",
        "paglets-user-info list --host beta --since 10m --json",
    ),
)
@filter_options
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="The newest N of each host.",
)
def list_(
    *,
    url: str | None,
    severity: str,
    job: str | None,
    since: str | None,
    hosts: tuple[str, ...],
    timeout: float,
    as_json: bool,
    limit: int,
) -> None:
    """List the notices every host keeps, oldest first."""
    params = {**_filters(severity, job, since), "limit": str(limit)}
    answers = asyncio.run(_list(url, params, timeout, hosts))
    notices = sorted(
        (n for a in answers if a.status == "ok" for n in a.data["notices"]),
        key=lambda n: (n["at"], n["host"], n["seq"]),
    )
    if as_json:
        print_json({"hosts": [a.to_dict() for a in answers], "notices": notices})
        return
    from rich.markup import escape  # noqa: PLC0415 - a paglet's text is never markup

    print_table(
        ("TIME", "HOST", "SEVERITY", "JOB", "TITLE", "MESSAGE"),
        [
            tuple(
                escape(cell)
                for cell in (
                    _time(n["at"]),
                    n["host"],
                    n["severity"],
                    n["job"] or "-",
                    n["title"] if n["kind"] == "notice" else f"[{n['stream']}]",
                    n["message"],
                )
            )
            for n in notices
        ],
    )
    _host_rows(answers)


async def _list(
    url: str | None, params: dict[str, str], timeout: float, hosts: tuple[str, ...]
) -> list[HostAnswer]:
    from paglets.cli._across import ask_all  # noqa: PLC0415 - after --help

    async def ask(client: AsyncHostClient) -> Any:
        return await client.request("GET", PATH, params=params, timeout=timeout)

    async with connect(url) as client:
        return await ask_all(client, ask, timeout=timeout, names=hosts)


@command.command(
    epilog=examples(
        "paglets-user-info follow",
        "paglets-user-info follow --severity warning --json    # JSON lines",
        "paglets-user-info follow --job build-42 --count 1 --for 600",
    ),
)
@filter_options
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help="Stop after this many new notices.  [default: never]",
)
@click.option(
    "--for",
    "duration",
    type=click.FloatRange(min=0.1),
    help="Stop after this many seconds.  [default: never]",
)
def follow(
    *,
    url: str | None,
    severity: str,
    job: str | None,
    since: str | None,
    hosts: tuple[str, ...],
    timeout: float,
    as_json: bool,
    count: int | None,
    duration: float | None,
) -> None:
    """Print new notices from every host as they come (long polling, bounded waits)."""
    params = _filters(severity, job, since)
    asyncio.run(_follow(url, params, timeout, hosts, as_json, count, duration))


async def _follow(  # noqa: PLR0917 - the command's options
    url: str | None,
    params: dict[str, str],
    timeout: float,
    hosts: tuple[str, ...],
    as_json: bool,
    count: int | None,
    duration: float | None,
) -> None:
    from paglets.cli._across import ask_all  # noqa: PLC0415 - after --help

    async def last(client: AsyncHostClient) -> Any:
        return await client.request("GET", PATH, params={"limit": "1"}, timeout=timeout)

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with connect(url) as client:
        answers = await ask_all(client, last, timeout=timeout, names=hosts)
        _host_rows(answers)
        tasks = [
            asyncio.create_task(
                _poll(client.sibling(a.url), a.name, a.data["last"], params, timeout, queue)
            )
            for a in answers
            if a.status == "ok"
        ]
        click.echo(f"following {len(tasks)} host(s); Ctrl-C to stop", err=True)
        shown = 0
        try:
            async with asyncio.timeout(duration):
                while count is None or shown < count:
                    notice = await queue.get()
                    shown += 1
                    _print_notice(notice, as_json=as_json)
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _poll(  # noqa: PLR0917 - one host's loop
    client: AsyncHostClient,
    name: str,
    after: int,
    params: dict[str, str],
    timeout: float,
    queue: asyncio.Queue[dict[str, Any]],
) -> None:
    """Long-poll one host for notices after ``after``, forever; a host that stops
    answering is said so once, and asked again every few seconds."""
    from paglets.core.errors import PagletError  # noqa: PLC0415

    failing = False
    while True:
        query = {**params, "after": str(after), "wait": str(POLL)}
        try:
            data = await client.request("GET", PATH, params=query, timeout=POLL + timeout)
        except PagletError as exc:
            if not failing:
                click.echo(f"{name}: not answering ({exc}); trying again", err=True)
            failing = True
            await asyncio.sleep(min(POLL, 2 * timeout))
            continue
        if failing:
            click.echo(f"{name}: answering again", err=True)
        failing = False
        notices = data["notices"]
        for notice in notices:
            await queue.put(notice)
        # past the last one shown (more may wait past a full answer), else past all seen
        after = max(after, int(notices[-1]["seq"]) if notices else int(data["last"]))


def _print_notice(notice: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        import json  # noqa: PLC0415

        click.echo(json.dumps(notice))
    else:
        what = notice["title"] if notice["kind"] == "notice" else f"[{notice['stream']}]"
        job = f" ({notice['job']})" if notice["job"] else ""
        click.echo(
            f"{_time(notice['at'])} {notice['host']} {notice['severity']}{job} "
            f"{what}: {notice['message']}"
        )
    sys.stdout.flush()


def main() -> None:
    """Entry point of the ``paglets-user-info`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
