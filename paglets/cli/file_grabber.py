"""``paglets-file-grabber``: move one file between hosts, carried by a paglet.

::

    paglets-file-grabber push ./data.bin --remote beta --dest /tmp/data.bin --dry
    paglets-file-grabber push ./data.bin --remote beta --dest /tmp/data.bin
    paglets-file-grabber pull /tmp/report.csv --remote beta --dest ./report.csv --force

``push`` sends SRC from the local host (``--url``, ``$PAGLETS_URL``) to the
host ``--remote``; ``pull`` brings SRC from ``--remote`` to the local host. A
relative SRC (push) or ``--dest`` (pull) is taken from the current directory.
The paglet is `examples.file_grabber.FileGrabber`; each host checks the paths
it reads or writes against its own file roots (``paglets-host --file-root``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from paglets._version import __version__
from paglets.cli._connect import json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table, progress

if TYPE_CHECKING:
    from paglets.transport.client import AsyncHostClient, AsyncPagletProxy

PROG: Final = "paglets-file-grabber"
GRABBER: Final = "examples.file_grabber:FileGrabber"
POLL: Final = 0.05


@dataclass(frozen=True, slots=True)
class Plan:
    """One transfer: from which host and path to which, and what is known of the file."""

    direction: str
    source_host: str
    source: str
    dest_host: str
    dest: str
    size: int
    sha256: str
    replaces: bool

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "direction": self.direction,
            "source_host": self.source_host,
            "source": self.source,
            "dest_host": self.dest_host,
            "dest": self.dest,
            "size": self.size,
            "sha256": self.sha256,
            "replaces": self.replaces,
        }


async def _remote(local: AsyncHostClient, remote: str) -> AsyncHostClient:
    from paglets.cli._connect import no_host  # noqa: PLC0415
    from paglets.core.errors import HostUnavailableError  # noqa: PLC0415

    client = await local.at(remote)
    try:
        await client.health()
    except HostUnavailableError as exc:
        await client.close()
        raise no_host(client.url, exc, f", host {remote!r}") from None
    return client


async def _grabber(client: AsyncHostClient) -> AsyncPagletProxy:
    return await client.create(GRABBER)


async def _dispose(proxy: AsyncPagletProxy) -> None:
    from paglets.core.errors import PagletError  # noqa: PLC0415

    with contextlib.suppress(PagletError):  # already gone: nothing to clean up
        await proxy.dispose()


async def _plan(
    direction: str, src_client: AsyncHostClient, dst_client: AsyncHostClient, opts: Options
) -> Plan:
    source_name = (await src_client.host_info()).name
    dest_name = (await dst_client.host_info()).name
    probe = await _grabber(dst_client)
    try:
        dest = await probe.send("check_dest", {"dest": opts.dest, "force": opts.force})
    finally:
        await _dispose(probe)
    reader = await _grabber(src_client)
    try:
        src = await reader.send("check_source", {"src": opts.src})
    finally:
        await _dispose(reader)
    return Plan(
        direction,
        source_name,
        src["path"],
        dest_name,
        dest["path"],
        int(src["size"]),
        str(src["sha256"]),
        bool(dest["exists"]),
    )


async def _carry(src_client: AsyncHostClient, plan: Plan, opts: Options) -> dict[str, Any]:
    grabber = await _grabber(src_client)
    try:
        args = {"src": plan.source, "dest": plan.dest, "force": opts.force, "to": plan.dest_host}
        await grabber.send("send", args)
        deadline = time.monotonic() + opts.timeout
        with progress(f"carrying {plan.size} bytes to {plan.dest_host}", None):
            while True:
                result: dict[str, Any] = await grabber.send("result")
                if result["host"] == plan.dest_host and (result["path"] or result["error"]):
                    return result
                if time.monotonic() > deadline:
                    from paglets.core.errors import PagletTimeoutError  # noqa: PLC0415

                    raise PagletTimeoutError(
                        f"the file did not land on {plan.dest_host} within {opts.timeout:g} s;"
                        " raise --timeout"
                    )
                await asyncio.sleep(POLL)
    finally:
        await _dispose(grabber)


@dataclass(frozen=True, slots=True)
class Options:
    direction: str
    src: str
    remote: str
    dest: str
    dry: bool
    force: bool
    url: str | None
    timeout: float


async def _run(opts: Options) -> tuple[Plan, dict[str, Any] | None, float]:
    from paglets.cli._connect import connect  # noqa: PLC0415
    from paglets.core.errors import RequestError  # noqa: PLC0415

    async with connect(opts.url) as local:
        remote = await _remote(local, opts.remote)
        async with remote:
            pair = (local, remote) if opts.direction == "push" else (remote, local)
            plan = await _plan(opts.direction, *pair, opts)
            if opts.dry:
                return plan, None, 0.0
            started = time.monotonic()
            result = await _carry(pair[0], plan, opts)
            if result["error"]:
                raise RequestError(f"host {plan.dest_host}: {result['error']}")
            return plan, result, time.monotonic() - started


def _show(plan: Plan, result: dict[str, Any] | None, seconds: float, *, as_json: bool) -> None:
    if as_json:
        out = {**plan.to_dict(), "dry": result is None}
        if result is not None:
            out |= {"written": result["path"], "seconds": round(seconds, 3)}
        print_json(out)
        return
    verb = "would copy" if result is None else "copied"
    rows = [
        ("from", f"{plan.source_host}:{plan.source}"),
        ("to", f"{plan.dest_host}:{plan.dest}"),
        ("size", f"{plan.size} bytes"),
        ("sha256", plan.sha256),
        ("existing file", "replaced" if plan.replaces else "none"),
    ]
    if result is not None:
        rate = plan.size / seconds / 2**20 if seconds > 0 else 0.0
        rows.append(("time", f"{seconds:.2f} s ({rate:.1f} MiB/s), sha256 verified"))
    click.echo(f"{verb} ({'dry run: nothing changed' if result is None else plan.direction}):")
    print_table(("", ""), rows, indent=2)


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _transfer(direction: str, *, as_json: bool, **kwargs: Any) -> None:
    opts = Options(direction=direction, **kwargs)
    if direction == "push":
        opts = dataclasses.replace(opts, src=_absolute(opts.src))
    else:
        opts = dataclasses.replace(opts, dest=_absolute(opts.dest))
    plan, result, seconds = asyncio.run(_run(opts))
    _show(plan, result, seconds, as_json=as_json)


def _transfer_options(func: Any) -> Any:
    for option in reversed(
        (
            click.argument("src"),
            click.option(
                "--remote", required=True, metavar="HOST", help="The other host, by name or URL."
            ),
            click.option(
                "--dest",
                required=True,
                metavar="PATH",
                help="Where the file lands (an absolute path on the receiving host).",
            ),
            click.option("--dry", is_flag=True, help="Say what would happen; change nothing."),
            click.option("--force", is_flag=True, help="Replace a file already at --dest."),
            click.option(
                "--timeout",
                type=click.FloatRange(min=1),
                default=600.0,
                show_default=True,
                metavar="SECONDS",
                help="How long the file may take to land.",
            ),
            url_option,
            json_option,
        )
    ):
        func = option(func)
    return func


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-file-grabber push ./data.bin --remote beta --dest /tmp/data.bin --dry",
        "paglets-file-grabber push ./data.bin --remote beta --dest /tmp/data.bin",
        "paglets-file-grabber pull /tmp/out.csv --remote beta --dest ./out.csv --force",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Carry one file between hosts in a paglet, sha256 verified.

    Each host reads and writes only inside its file roots: the temp directory,
    its files directory and every paglets-host --file-root.
    """


@command.command(
    epilog=examples(
        "paglets-file-grabber push ./data.bin --remote beta --dest /tmp/data.bin --dry",
        "paglets-file-grabber push /tmp/a.iso --remote http://10.0.0.2:8765 --dest /tmp/a.iso",
    )
)
@_transfer_options
def push(**kwargs: Any) -> None:
    """Send SRC from the local host to host --remote, writing it at --dest there."""
    _transfer("push", **kwargs)


@command.command(
    epilog=examples(
        "paglets-file-grabber pull /tmp/out.csv --remote beta --dest ./out.csv",
        "paglets-file-grabber pull /tmp/out.csv --remote beta --dest /tmp/out.csv --force",
    )
)
@_transfer_options
def pull(**kwargs: Any) -> None:
    """Fetch SRC from host --remote, writing it at --dest on the local host."""
    _transfer("pull", **kwargs)


def main() -> None:
    """Entry point of the ``paglets-file-grabber`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
