"""``paglets-artifacts``: blobs a host keeps, checked by sha256.

::

    paglets-artifacts put ./results.tar                 # upload, as "results.tar"
    paglets-artifacts put ./results.tar run-7.tar --url beta
    paglets-artifacts list                              # this host's artifacts
    paglets-artifacts list --mesh --json                # every host's
    paglets-artifacts get run-7.tar ./back.tar --url beta
    paglets-artifacts copy run-7.tar --url beta --to gamma   # beta streams it to gamma
    paglets-artifacts rm run-7.tar --url beta

Uploads and downloads stream (never read whole into memory) with a progress
bar on a terminal; both sides check the sha256. A download is written next to
its destination and renamed only once its sha256 is right.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from paglets.cli._across import HostAnswer
    from paglets.transport.client import AsyncHostClient

PROG = "paglets-artifacts"
PATH = "/v1/artifacts"
CHUNK = 1 << 20


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":  # noqa: PLR2004
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


class _Bytes:
    """A byte-counting progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, description: str, total: int) -> None:
        self.description, self.total = description, total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if sys.stderr.isatty():
            from rich.console import Console  # noqa: PLC0415 - rich only when drawing
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self.advance

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    size = path.stat().st_size
    with _Bytes(f"sha256 {path.name}", size) as advance, path.open("rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
            advance(len(chunk))
    return hasher.hexdigest()


def _info_row(a: dict[str, Any]) -> tuple[str, ...]:
    import time  # noqa: PLC0415

    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["created"]))
    return (a["host"], a["name"], _size(a["size"]), a["sha256"][:16], created)


HEADERS = ("HOST", "NAME", "SIZE", "SHA256", "CREATED")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-artifacts put ./results.tar              # upload to the local host",
        "paglets-artifacts list --mesh                    # every host's artifacts",
        "paglets-artifacts get results.tar ./back.tar --url beta",
        "paglets-artifacts copy results.tar --url beta --to gamma",
        "paglets-artifacts rm results.tar",
    ),
)
@click.version_option(__version__, prog_name=PROG)
def command() -> None:
    """Put, get, copy and remove the artifacts hosts keep."""


@command.command(
    name="list",
    epilog=examples("paglets-artifacts list --url beta", "paglets-artifacts list --mesh --json"),
)
@url_option
@click.option("--mesh", is_flag=True, help="Every host of the mesh, in parallel.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=60),
    default=3.0,
    show_default=True,
    help="Seconds each host has to answer (with --mesh).",
)
@json_option
def list_(url: str | None, mesh: bool, timeout: float, as_json: bool) -> None:
    """List the artifacts of a host (or every host), with sizes and quotas."""
    answers = asyncio.run(_list(url, mesh=mesh, timeout=timeout))
    if as_json:
        print_json(
            {
                "hosts": [
                    {**a.to_dict(), **({k: a.data[k] for k in ("quota", "used")} if a.data else {})}
                    for a in answers
                ],
                "artifacts": [x for a in answers if a.data for x in a.data["artifacts"]],
            }
        )
        return
    print_table(HEADERS, [_info_row(x) for a in answers if a.data for x in a.data["artifacts"]])
    for a in answers:
        if a.data:
            click.echo(
                f"{a.name}: {_size(a.data['used'])} used of {_size(a.data['quota'])}", err=True
            )
        else:
            click.echo(f"{a.name}: {a.status} ({a.error})", err=True)


async def _list(url: str | None, *, mesh: bool, timeout: float) -> list[HostAnswer]:
    from paglets.cli._across import HostAnswer, ask_all  # noqa: PLC0415 - after --help

    async def ask(client: AsyncHostClient) -> Any:
        return await client.request("GET", PATH, timeout=timeout)

    async with connect(url) as client:
        if mesh:
            return await ask_all(client, ask, timeout=timeout)
        data = await ask(client)
        return [HostAnswer(data["host"], client.url, "ok", data)]


@command.command(
    epilog=examples(
        "paglets-artifacts put ./results.tar",
        "paglets-artifacts put ./results.tar run-7.tar --url beta --json",
    )
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("name", required=False)
@url_option
@json_option
def put(file: Path, name: str | None, url: str | None, as_json: bool) -> None:
    """Upload FILE as the artifact NAME (default: the file's name), replacing one of that name."""
    info = asyncio.run(_put(file, name or file.name, url))
    if as_json:
        print_json(info)
    else:
        print_table(HEADERS, [_info_row(info)])


async def _put(file: Path, name: str, url: str | None) -> Any:
    from paglets.artifacts.model import check_name  # noqa: PLC0415

    check_name(name)  # before anything is read or sent
    sha256 = await asyncio.to_thread(_sha256, file)
    size = (await asyncio.to_thread(file.stat)).st_size
    async with connect(url) as client:
        with _Bytes(f"put {name}", size) as advance:
            return await client.send_body(
                "PUT",
                f"{PATH}/{name}",
                _read(file, size, advance),
                params={"size": str(size), "sha256": sha256},
            )


async def _read(file: Path, size: int, advance: Callable[[int], None]) -> AsyncIterator[bytes]:
    """``file`` in chunks, read in a worker thread; no more than ``size`` bytes."""
    with file.open("rb") as handle:
        left = size
        while left > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            advance(len(chunk))
            yield chunk


@command.command(
    epilog=examples(
        "paglets-artifacts get results.tar",
        "paglets-artifacts get results.tar ./back.tar --url beta",
        "paglets-artifacts get results.tar - --url beta | tar t",
    )
)
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(dir_okay=True, path_type=Path))
@url_option
@json_option
def get(name: str, dest: Path | None, url: str | None, as_json: bool) -> None:
    """Download the artifact NAME to DEST (default: ./NAME; a directory: into it; -: stdout)."""
    to_stdout = dest is not None and str(dest) == "-"
    target = Path(name) if dest is None else dest
    if not to_stdout and target.is_dir():
        target /= name
    info = asyncio.run(_get(name, None if to_stdout else target, url))
    if as_json:
        print_json(info)
    elif not to_stdout:
        click.echo(f"{target}: {_size(info['size'])}, sha256 {info['sha256']}", err=True)


async def _get(name: str, target: Path | None, url: str | None) -> dict[str, Any]:
    from paglets.artifacts.model import check_name  # noqa: PLC0415
    from paglets.core.errors import ChecksumMismatchError  # noqa: PLC0415

    check_name(name)
    async with connect(url) as client, client.stream_body(f"{PATH}/{name}") as resp:
        size = int(resp.headers["Content-Length"])
        sha256 = resp.headers["X-Paglets-Sha256"]
        hasher = hashlib.sha256()
        with _open_target(target) as (out, commit), _Bytes(f"get {name}", size) as advance:
            async for chunk in resp.content.iter_chunked(CHUNK):
                hasher.update(chunk)
                await asyncio.to_thread(out.write, chunk)
                advance(len(chunk))
            if hasher.hexdigest() != sha256:
                raise ChecksumMismatchError(
                    f"artifact {name!r} from {client.url} arrived with sha256 "
                    f"{hasher.hexdigest()}, not its {sha256}; nothing was written: try again"
                )
            commit()
    return {"name": name, "size": size, "sha256": sha256, "path": str(target or "-")}


class _open_target:  # noqa: N801 - used as a context manager, like open()
    """stdout, or ``target`` written as ``.target.part`` and renamed by ``commit``;
    the part file is removed unless committed."""

    def __init__(self, target: Path | None) -> None:
        self.target = target
        self.part = None if target is None else target.with_name(f".{target.name}.part")
        self.done = False

    def __enter__(self) -> tuple[Any, Callable[[], None]]:
        if self.part is None:
            self.out: Any = sys.stdout.buffer
        else:
            self.out = self.part.open("wb")
        return self.out, self.commit

    def commit(self) -> None:
        self.out.flush()
        if self.part is not None and self.target is not None:
            os.fsync(self.out.fileno())
            self.out.close()
            self.part.replace(self.target)
        self.done = True

    def __exit__(self, *exc: object) -> None:
        if self.part is not None:
            self.out.close()
            if not self.done:
                self.part.unlink(missing_ok=True)


@command.command(
    epilog=examples("paglets-artifacts rm results.tar", "paglets-artifacts rm run-7.tar --url beta")
)
@click.argument("name")
@url_option
@json_option
def rm(name: str, url: str | None, as_json: bool) -> None:
    """Remove the artifact NAME."""

    async def run() -> Any:
        async with connect(url) as client:
            return await client.request("DELETE", f"{PATH}/{name}")

    answer = asyncio.run(run())
    if as_json:
        print_json(answer)
    else:
        click.echo(f"removed {name} ({_size(answer['removed']['size'])})")


@command.command(
    epilog=examples(
        "paglets-artifacts copy results.tar --to beta",
        "paglets-artifacts copy results.tar --url beta --to gamma --as results-gamma.tar",
    )
)
@click.argument("name")
@click.option(
    "--to", "to", required=True, metavar="HOST", help="The host to copy to (name or URL)."
)
@click.option("--as", "as_name", metavar="NAME", help="Its name there.  [default: NAME]")
@url_option
@json_option
def copy(name: str, to: str, as_name: str | None, url: str | None, as_json: bool) -> None:
    """Copy the artifact NAME from the host (--url) to another: host to host, not through here."""

    async def run() -> Any:
        async with connect(url) as client:
            body = {"to": to, "as": as_name}
            return await client.request("POST", f"{PATH}/{name}/copy", body)

    answer = asyncio.run(run())["artifact"]
    if as_json:
        print_json(answer)
    else:
        print_table(HEADERS, [_info_row(answer)])


def main() -> None:
    """Entry point of the ``paglets-artifacts`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
