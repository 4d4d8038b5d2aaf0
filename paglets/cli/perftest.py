"""``paglets-perf-test``: CPU, memory and disk checks on every host of the mesh.

::

    paglets-perf-test                                   # every online host, default sizes
    paglets-perf-test --cpu-seconds 2 --memory-mib 256 --disk-mib 256
    paglets-perf-test --url beta --json

A parent `examples.perftest.PerfTest` paglet is created on the entry host; it
clones a worker to every online host of its mesh and protocol version, each
worker runs the checks and reports back, and this command prints one table per
host and a summary. The parent is disposed of at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import click

from paglets._version import __version__
from paglets.cli._connect import connect, json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table, progress

PROG = "paglets-perf-test"
PARENT = "examples.perftest:PerfTest"
POLL = 0.1


async def perf_test(url: str | None, sizes: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run the checks on every host; what the parent gathered, plus hosts that never answered."""
    async with connect(url) as client:
        parent = await client.create(PARENT, {"sizes": sizes})
        try:
            hosts: list[str] = await parent.send("start", timeout=60)
            deadline = time.monotonic() + timeout
            with progress(f"checking {len(hosts)} hosts", len(hosts)) as advance:
                seen = 0
                while True:
                    results: dict[str, Any] = await parent.send("results")
                    count = len(results["reports"])
                    advance(count - seen)
                    seen = count
                    if count == len(hosts) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(POLL)
        finally:
            with contextlib.suppress(Exception):
                await parent.dispose()
    reported = {r["host"] for r in results["reports"]}
    results["missing"] = sorted(set(hosts) - reported)
    return results


def _rate(value: float) -> str:
    return f"{value:,.0f} MiB/s"


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-perf-test                                  # every online host",
        "paglets-perf-test --cpu-seconds 2 --memory-mib 256 --disk-mib 256",
        "paglets-perf-test --url beta --json",
    ),
)
@click.option(
    "--cpu-seconds",
    type=click.FloatRange(0.01, 30.0),
    default=1.0,
    show_default=True,
    help="Seconds of sha256 hashing on one core.",
)
@click.option(
    "--memory-mib",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="MiB to allocate, write and read.",
)
@click.option(
    "--disk-mib",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="MiB to write (with fsync) and read back on the host's state disk.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1.0, 3600.0),
    default=120.0,
    show_default=True,
    help="Seconds to wait for every host's report.",
)
@url_option
@json_option
@click.version_option(__version__, prog_name=PROG)
def command(  # noqa: PLR0917 - one per option
    cpu_seconds: float,
    memory_mib: int,
    disk_mib: int,
    timeout: float,
    url: str | None,
    as_json: bool,
) -> None:
    """Check the CPU, memory and disk of every online host of the mesh.

    Exits 1 when a host could not be checked (the output says which and why).
    """
    sizes = {"cpu_seconds": cpu_seconds, "memory_mib": memory_mib, "disk_mib": disk_mib}
    results = asyncio.run(perf_test(url, sizes, timeout))
    reports = sorted(results["reports"], key=lambda r: r["host"])
    if as_json:
        print_json(results)
    else:
        for r in reports:
            click.echo(f"{r['host']} ({r['cpus']} CPUs, {r['seconds']:.2f} s)")
            print_table(
                ("CHECK", "SIZE", "RESULT"),
                [
                    ("cpu", f"{cpu_seconds:g} s", f"sha256 {_rate(r['cpu_mib_s'])}"),
                    ("memory write", f"{r['memory_mib']} MiB", _rate(r["memory_write_mib_s"])),
                    ("memory read", f"{r['memory_mib']} MiB", _rate(r["memory_read_mib_s"])),
                    ("peak RSS", "", f"{r['peak_rss_mib']:.0f} MiB"),
                    ("disk write+fsync", f"{r['disk_mib']} MiB", _rate(r["disk_write_mib_s"])),
                    ("disk read", f"{r['disk_mib']} MiB", _rate(r["disk_read_mib_s"])),
                ],
                indent=2,
            )
            if r["error"]:
                click.echo(f"  error: {r['error']}")
        click.echo("summary")
        print_table(
            ("HOST", "CPU", "MEMORY WRITE", "DISK WRITE", "DISK READ", "STATUS"),
            [
                (
                    r["host"],
                    _rate(r["cpu_mib_s"]),
                    _rate(r["memory_write_mib_s"]),
                    _rate(r["disk_write_mib_s"]),
                    _rate(r["disk_read_mib_s"]),
                    r["error"] or "ok",
                )
                for r in reports
            ]
            + [
                (h, "-", "-", "-", "-", f"no report within {timeout:g} s")
                for h in results["missing"]
            ]
            + [(h, "-", "-", "-", "-", why) for h, why in sorted(results["failed"].items())],
            indent=2,
        )
    if results["missing"] or results["failed"] or any(r["error"] for r in reports):
        raise click.ClickException("not every host could be checked (see above)")


def main() -> None:
    """Entry point of the ``paglets-perf-test`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
