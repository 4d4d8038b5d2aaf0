"""``paglets-mesh-benchmark``: time a paglet's hop over every directed pair of hosts.

::

    paglets-mesh-benchmark                             # every online host, 64 KiB payload
    paglets-mesh-benchmark --payload-size 4MiB --repeats 3
    paglets-mesh-benchmark --hosts alpha,beta --json

The paglets are `examples.mesh_benchmark.Starter` (on the local host) and
`examples.mesh_benchmark.Traveler`. Prints a Markdown matrix of hop latency and
payload throughput (from a row's host to a column's), each host's clock offset
from the local host and message round trip to it, and the total time.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import click

from paglets._version import __version__
from paglets.cli._connect import json_option, url_option
from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_json, print_table, progress
from paglets.cli._tour import hosts_option, timeout_option
from paglets.cli._units import BYTES

if TYPE_CHECKING:
    from collections.abc import Sequence

PROG: Final = "paglets-mesh-benchmark"
STARTER: Final = "examples.mesh_benchmark:Starter"
POLL: Final = 0.1
MIB: Final = float(1 << 20)


@dataclass(frozen=True, slots=True)
class Pair:
    """The hops from ``source`` to ``target``: latencies in seconds, clocks corrected."""

    source: str
    target: str
    latencies: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    def to_dict(self, payload: int) -> dict[str, Any]:
        """As JSON: milliseconds and MiB/s."""
        return {
            "source": self.source,
            "target": self.target,
            "samples": len(self.latencies),
            "latency_ms": round(self.median * 1000, 3),
            "latency_ms_min": round(min(self.latencies) * 1000, 3),
            "throughput_mib_s": round(payload / MIB / self.median, 3) if self.median > 0 else None,
        }


@dataclass(frozen=True, slots=True)
class Clock:
    """One host's clock offset from the entry host, from its fastest round trip."""

    host: str
    offset: float  # seconds the entry host's clock is ahead
    rtts: tuple[float, ...]

    @property
    def uncertainty(self) -> float:
        """How far the offset may be off: half the fastest round trip."""
        return min(self.rtts) / 2

    @property
    def correction(self) -> float:
        """The offset applied to this host's times: none while within its uncertainty."""
        return self.offset if abs(self.offset) > self.uncertainty else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As JSON, in milliseconds."""
        return {
            "host": self.host,
            "offset_ms": round(self.offset * 1000, 3),
            "uncertainty_ms": round(self.uncertainty * 1000, 3),
            "corrected": self.correction != 0.0,
            "rtt_ms_min": round(min(self.rtts) * 1000, 3),
            "rtt_ms_median": round(statistics.median(self.rtts) * 1000, 3),
            "samples": len(self.rtts),
        }


def clocks(samples: Sequence[dict[str, Any]]) -> dict[str, Clock]:
    """Each host's `Clock`: the offset of its sample with the shortest round trip."""
    by_host: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        by_host.setdefault(str(sample["host"]), []).append(sample)
    out = {}
    for host, items in by_host.items():
        best = min(items, key=lambda s: float(s["rtt"]))
        out[host] = Clock(host, float(best["offset"]), tuple(float(s["rtt"]) for s in items))
    return out


def pairs(hops: Sequence[dict[str, Any]], offsets: dict[str, Clock]) -> list[Pair]:
    """The hops by directed pair, each latency measured on the entry host's clock."""

    def offset(host: str) -> float:
        return offsets[host].correction if host in offsets else 0.0

    by_pair: dict[tuple[str, str], list[float]] = {}
    for hop in hops:
        source, target = str(hop["source"]), str(hop["target"])
        latency = (hop["arrived"] + offset(target)) - (hop["departed"] + offset(source))
        by_pair.setdefault((source, target), []).append(latency)
    return [Pair(s, t, tuple(v)) for (s, t), v in by_pair.items()]


async def _benchmark(opts: dict[str, Any]) -> dict[str, Any]:
    from paglets.cli._connect import connect  # noqa: PLC0415
    from paglets.cli._tour import tour_hosts  # noqa: PLC0415
    from paglets.core.errors import PagletError, PagletTimeoutError, RequestError  # noqa: PLC0415

    async with connect(opts["url"]) as client:
        entry, hosts = await tour_hosts(client, opts["hosts"])
        if len(hosts) < 2:  # noqa: PLR2004
            raise RequestError(f"a benchmark needs two or more online hosts; found {hosts}")
        state = {"hosts": hosts, "payload_size": opts["payload_size"], "repeats": opts["repeats"]}
        started = time.monotonic()
        starter = await client.create(STARTER, state)
        try:
            total = len(hosts) * (len(hosts) - 1) * opts["repeats"]
            seen = 0
            with progress(f"{total} hops", total) as advance:
                while True:
                    result: dict[str, Any] = await starter.send("result")
                    advance(result["hops_done"] - seen)
                    seen = result["hops_done"]
                    if result["error"]:
                        raise RequestError(result["error"])
                    if result["done"]:
                        result["total_seconds"] = time.monotonic() - started
                        result["entry"] = entry
                        return result
                    if time.monotonic() - started > opts["timeout"]:
                        raise PagletTimeoutError(
                            f"{seen} of {total} hops within {opts['timeout']:g} s; raise --timeout"
                        )
                    await asyncio.sleep(POLL)
        finally:
            with contextlib.suppress(PagletError):
                await starter.dispose()


def report(result: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's findings as JSON: every directed pair, every host's clock."""
    offsets = clocks(result["clocks"])
    payload = int(result["payload_size"])
    return {
        "entry": result["entry"],
        "hosts": result["hosts"],
        "payload_size": payload,
        "repeats": result["repeats"],
        "hops": len(result["hops"]),  # with the way from and back to the entry host
        "tour_seconds": round(result["seconds"], 3),
        "total_seconds": round(result["total_seconds"], 3),
        "pairs": [
            p.to_dict(payload)
            for p in pairs(result["hops"], offsets)
            if p.source in result["hosts"] and p.target in result["hosts"]
        ],
        "clocks": [
            offsets[h].to_dict()
            for h in dict.fromkeys([*result["hosts"], *offsets])
            if h in offsets
        ],
    }


def matrix(hosts: Sequence[str], cells: dict[tuple[str, str], str]) -> str:
    """A Markdown table: a row per source host, a column per target host."""
    lines = ["| from \\ to | " + " | ".join(hosts) + " |", "|---" * (len(hosts) + 1) + "|"]
    for source in hosts:
        row = [cells.get((source, target), "-") for target in hosts]
        lines.append(f"| **{source}** | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _show(data: dict[str, Any]) -> None:
    hosts = data["hosts"]
    by_pair = {(p["source"], p["target"]): p for p in data["pairs"]}
    latency = {k: f"{p['latency_ms']:.1f} ms" for k, p in by_pair.items()}
    rate = {
        k: "-" if p["throughput_mib_s"] is None else f"{p['throughput_mib_s']:.1f} MiB/s"
        for k, p in by_pair.items()
    }
    size = data["payload_size"]
    click.echo(f"Hop latency (median of {data['repeats']}; a row's host to a column's):\n")
    click.echo(matrix(hosts, latency))
    click.echo(f"\nPayload throughput ({size} bytes over the hop's time):\n")
    click.echo(matrix(hosts, rate))
    click.echo(f"\nClocks and messages (from each host to the entry host {data['entry']}):\n")
    print_table(
        ("HOST", "CLOCK OFFSET", "CORRECTED", "RTT MIN", "RTT MEDIAN", "SAMPLES"),
        [
            (
                c["host"],
                f"{c['offset_ms']:+.2f} ± {c['uncertainty_ms']:.2f} ms",
                "yes" if c["corrected"] else "no (within ±)",
                f"{c['rtt_ms_min']:.2f} ms",
                f"{c['rtt_ms_median']:.2f} ms",
                str(c["samples"]),
            )
            for c in data["clocks"]
        ],
        indent=2,
    )
    click.echo(
        f"\n{data['hops']} hops in {data['tour_seconds']:.2f} s; "
        f"{data['total_seconds']:.2f} s in all"
    )


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-mesh-benchmark",
        "paglets-mesh-benchmark --payload-size 4MiB --repeats 3",
        "paglets-mesh-benchmark --hosts alpha,beta --json",
    ),
)
@click.option(
    "--payload-size",
    type=BYTES,
    default="64KiB",
    show_default=True,
    metavar="SIZE",
    help="Bytes the traveler carries, e.g. 64K or 4MiB (at most 64MiB).",
)
@click.option(
    "--repeats",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    metavar="N",
    help="Times each directed pair is taken.",
)
@hosts_option
@timeout_option
@url_option
@json_option
@click.version_option(__version__, prog_name=PROG)
def command(as_json: bool, **opts: Any) -> None:
    """Time a paglet's hop between every directed pair of hosts of the mesh."""
    if opts["payload_size"] > 64 << 20:
        raise click.BadParameter("at most 64MiB", param_hint="--payload-size")
    data = report(asyncio.run(_benchmark(opts)))
    if as_json:
        print_json(data)
    else:
        _show(data)


def main() -> None:
    """Entry point of the ``paglets-mesh-benchmark`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
