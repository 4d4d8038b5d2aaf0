"""``paglets-compute-slots``: the compute-slot schedulers of the mesh, from the command line.

::

    paglets-compute-slots status              # this host: totals, free, load, jobs
    paglets-compute-slots hosts               # every host that serves compute slots
    paglets-compute-slots queue               # pending jobs, in the order they start
    paglets-compute-slots why 4f2a…           # can it ever run, and what blocks it now
    paglets-compute-slots ps | top            # running jobs: progress; usage
    paglets-compute-slots history             # ended jobs: elapsed, CPU time, efficiency
    paglets-compute-slots rm 4f2a…            # cancel a job

Every command takes ``--url URL|NAME`` (the host to ask; see
`paglets.cli._connect`) and ``--json``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table

if TYPE_CHECKING:
    from paglets.services.compute.contract import HostSlots, JobInfo, WhyReply
    from paglets.transport.client import AsyncHostClient

PROG = "paglets-compute-slots"
ASK_TIMEOUT = 10.0


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:  # noqa: PLR2004
        return f"{seconds:.0f}s"
    if seconds < 3600:  # noqa: PLR2004
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _size(value: float) -> str:
    from paglets.services.compute.explain import size  # noqa: PLC0415 - lazy, --help fast

    return size(value)


def _slots(client: AsyncHostClient, where: str | None = None) -> Any:
    from paglets.services.compute.contract import COMPUTE_SLOTS  # noqa: PLC0415

    return client.service(COMPUTE_SLOTS, where=where, timeout=ASK_TIMEOUT)


async def _jobs(url: str | None, which: str, limit: int) -> list[JobInfo]:
    from paglets.services.compute.contract import JobsRequest  # noqa: PLC0415

    async with connect(url) as client:
        reply = await _slots(client).jobs(JobsRequest(which, limit))
        return list(reply.jobs)


async def _mesh(client: AsyncHostClient) -> tuple[list[HostSlots], list[str]]:
    """Every online host's figures that serves compute slots, and those offline."""
    from paglets.core.errors import PagletError  # noqa: PLC0415
    from paglets.services.compute.contract import COMPUTE_SLOTS, StatusRequest  # noqa: PLC0415

    rows = [s for s in await client.services(mesh=True) if s.contract == COMPUTE_SLOTS.name]
    lost = [s.host for s in rows if not s.online]

    async def ask(host: str) -> HostSlots | None:
        try:
            reply: HostSlots = await _slots(client, host).status(StatusRequest())
        except PagletError:
            lost.append(host)
            return None
        return reply

    found = await asyncio.gather(*(ask(s.host) for s in rows if s.online))
    return [h for h in found if h is not None], sorted(set(lost))


def _dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-compute-slots status             # this host's slots",
        "paglets-compute-slots hosts              # every host's, across the mesh",
        "paglets-compute-slots queue --url beta   # host beta's pending jobs",
        "paglets-compute-slots why 4f2a0c1e9b7d   # why that job is not running",
        "paglets-compute-slots history --json     # ended jobs, as JSON",
        "paglets-compute-slots rm 4f2a0c1e9b7d    # cancel a job",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Compute slots: jobs admitted by cores, RAM, temp storage and load, and why not."""


@command.command(
    epilog=examples("paglets-compute-slots status", "paglets-compute-slots status --json")
)
@url_option
@json_option
def status(url: str | None, as_json: bool) -> None:
    """Show the host's totals, free figures, load and job counts."""
    from paglets.services.compute.contract import StatusRequest  # noqa: PLC0415

    async def run() -> HostSlots:
        async with connect(url) as client:
            reply: HostSlots = await _slots(client).status(StatusRequest())
            return reply

    slots = asyncio.run(run())
    if as_json:
        print_json(_dict(slots))
        return
    _host_table([slots], [])


def _host_table(hosts: list[HostSlots], lost: list[str]) -> None:
    rows = [
        (
            h.host,
            f"{h.free_cores}/{h.cores}",
            f"{_size(h.free_ram)}/{_size(h.ram)}",
            f"{_size(h.free_tmp)}/{_size(h.tmp)}",
            f"{h.load_per_cpu:.2f}",
            f"{h.max_load_per_cpu:.2f}",
            str(h.running),
            str(h.pending),
            "LoadGate" if h.load_per_cpu > h.max_load_per_cpu else "online",
        )
        for h in hosts
    ]
    rows += [(name, "-", "-", "-", "-", "-", "-", "-", "HostLost") for name in lost]
    headers = ("HOST", "CPU FREE", "RAM FREE", "TMP FREE", "LOAD/CPU", "GATE", "RUN", "WAIT")
    print_table((*headers, "STATUS"), rows)


@command.command(
    epilog=examples("paglets-compute-slots hosts", "paglets-compute-slots hosts --json")
)
@url_option
@json_option
def hosts(url: str | None, as_json: bool) -> None:
    """Show every host of the mesh that serves compute slots; offline ones as HostLost."""

    async def run() -> tuple[list[HostSlots], list[str]]:
        async with connect(url) as client:
            return await _mesh(client)

    found, lost = asyncio.run(run())
    if as_json:
        print_json({"hosts": [_dict(h) for h in found], "lost": lost})
        return
    _host_table(found, lost)


@command.command(
    epilog=examples("paglets-compute-slots queue", "paglets-compute-slots queue --json")
)
@url_option
@json_option
def queue(url: str | None, as_json: bool) -> None:
    """Show pending jobs in the order they would start."""
    jobs = asyncio.run(_jobs(url, "pending", 10_000))
    if as_json:
        print_json([_dict(j) for j in jobs])
        return
    now = time.time()
    print_table(
        ("#", "JOB", "NAME", "SUBMITTER", "PRI", "CPU", "RAM", "TMP", "WAITING"),
        [
            (
                str(n),
                j.job_id,
                j.name,
                j.submitter,
                str(j.priority),
                str(j.cores),
                _size(j.ram),
                _size(j.tmp),
                _ago(now - j.submitted_at),
            )
            for n, j in enumerate(jobs, 1)
        ],
    )


@command.command(epilog=examples("paglets-compute-slots ps", "paglets-compute-slots ps --json"))
@url_option
@json_option
def ps(url: str | None, as_json: bool) -> None:
    """Show running jobs with their progress."""
    jobs = asyncio.run(_jobs(url, "running", 10_000))
    if as_json:
        print_json([_dict(j) for j in jobs])
        return
    now = time.time()
    print_table(
        ("JOB", "NAME", "SUBMITTER", "CPU", "CPUS", "ELAPSED", "PROGRESS", "TEXT"),
        [
            (
                j.job_id,
                j.name,
                j.submitter,
                str(j.cores),
                ",".join(map(str, j.cpus)) or "-",
                _ago(now - (j.started_at or now)),
                f"{j.progress:.0%}",
                j.progress_text,
            )
            for j in jobs
        ],
    )


@command.command(epilog=examples("paglets-compute-slots top", "paglets-compute-slots top --json"))
@url_option
@json_option
def top(url: str | None, as_json: bool) -> None:
    """Show running jobs' usage as last sampled (each second): CPU, RSS, temp bytes."""
    jobs = asyncio.run(_jobs(url, "running", 10_000))
    now = time.time()
    jobs.sort(key=lambda j: j.cpu_time / max(1e-3, now - (j.started_at or now)), reverse=True)
    if as_json:
        print_json([_dict(j) for j in jobs])
        return
    print_table(
        ("JOB", "NAME", "CORES USED", "RSS", "PEAK RSS", "RAM", "TMP USED", "TMP"),
        [
            (
                j.job_id,
                j.name,
                f"{j.cpu_time / max(1e-3, now - (j.started_at or now)):.2f}/{j.cores}",
                _size(j.rss),
                _size(j.peak_rss),
                _size(j.ram),
                _size(j.tmp_used),
                _size(j.tmp),
            )
            for j in jobs
        ],
    )


def _efficiency(used: float, asked: float) -> str:
    return f"{used / asked:.0%}" if asked > 0 else "-"


@command.command(
    epilog=examples("paglets-compute-slots history", "paglets-compute-slots history --limit 20")
)
@url_option
@json_option
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Jobs shown."
)
def history(url: str | None, as_json: bool, limit: int) -> None:
    """Show ended jobs, newest first: elapsed, CPU time, peak RSS and temp use against the ask."""
    jobs = asyncio.run(_jobs(url, "history", limit))
    if as_json:
        print_json([_dict(j) for j in jobs])
        return
    rows = []
    for j in jobs:
        elapsed = (j.ended_at or 0.0) - j.started_at if j.started_at else 0.0
        rows.append(
            (
                j.job_id,
                j.name,
                j.submitter,
                j.status,
                _ago(elapsed),
                f"{j.cpu_time:.1f}s",
                _efficiency(j.cpu_time, elapsed * j.cores),
                f"{_size(j.peak_rss)}/{_size(j.ram)}",
                f"{_size(j.peak_tmp)}/{_size(j.tmp)}",
                j.detail,
            )
        )
    headers = ("JOB", "NAME", "SUBMITTER", "STATUS", "ELAPSED", "CPU TIME", "CPU EFF")
    print_table((*headers, "PEAK RSS/RAM", "TMP/ASKED", "DETAIL"), rows)


@command.command(epilog=examples("paglets-compute-slots rm 4f2a0c1e9b7d"))
@click.argument("job")
@url_option
@json_option
def rm(job: str, url: str | None, as_json: bool) -> None:
    """Cancel JOB: a pending job leaves the queue, a running one is stopped."""
    from paglets.services.compute.contract import CancelRequest, check_job_id  # noqa: PLC0415

    async def run() -> Any:
        async with connect(url) as client:
            return await _slots(client).cancel(CancelRequest(check_job_id(job)))

    ack = asyncio.run(run())
    if as_json:
        print_json(_dict(ack))
        return
    if not ack.ok:
        raise click.ClickException(ack.detail)
    click.echo(ack.detail)


@command.command(
    epilog=examples(
        "paglets-compute-slots why 4f2a0c1e9b7d", "paglets-compute-slots why 4f2a0c1e9b7d --json"
    )
)
@click.argument("job")
@url_option
@json_option
def why(job: str, url: str | None, as_json: bool) -> None:
    """Say why JOB is not running: can it ever run, then what blocks it on each host now."""
    from paglets.services.compute.whyview import explain  # noqa: PLC0415

    async def run() -> tuple[WhyReply, list[HostSlots], list[str]]:
        from paglets.services.compute.contract import WhyRequest, check_job_id  # noqa: PLC0415

        async with connect(url) as client:
            reply: WhyReply = await _slots(client).why(WhyRequest(check_job_id(job)))
            found, lost = await _mesh(client)
            return reply, found, lost

    reply, found, lost = asyncio.run(run())
    answer = explain(reply, found, lost, time.time())
    if as_json:
        print_json(answer.to_dict())
        return
    click.echo("\n".join(answer.lines))


def main() -> None:
    """Entry point of the ``paglets-compute-slots`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
