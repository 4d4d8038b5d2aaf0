"""How long a host takes to start, against a bare aiohttp server started in the same run.

::

    uv run python bench/start.py            # 12 starts of each (about half a minute)
    uv run python bench/start.py --quick    # 3 of each, a smoke test

Each start is a new process with an empty state directory, timed from just
before its exec: for the host (``python -m paglets.cli.host``) until its
``--ready-file`` exists and until the reply to its first ``create`` +
``send("get")``; for the baseline (``bench/_echo_server.py``, a bare aiohttp
server) until its ready file exists and until the answer to its first
``POST /echo``. Host and baseline starts alternate (which goes first
alternates too), so that drift in the machine's load hits both alike; the
table shows medians. Prints a Markdown table on stdout, progress on stderr.

Both are measured twice: **with bytecode caches** (``PYTHONPYCACHEPREFIX`` in
a temporary directory, filled by one untimed start of each: how an installed
host restarts) and **as the environment is** (with
``PYTHONDONTWRITEBYTECODE=1``, as on the machines this was written on, every
start compiles each imported module that has no bytecode beside it from source:
``./run`` compiles the environment's packages and paglets' own modules, so that
none; the footnote says whether paglets' are).

Rows (e) to (i) say where a start goes: the interpreter's own start, bare
aiohttp's import and paglets-host's imports beyond it, each timed alone in a new
interpreter between the starts (from just before its exec until the import is
done), and by difference what the host does after its imports (its options and
launch file, the start of its services, the bind) and what the bare server does
after its import. In a real start the zygote boots beside the host's imports
(``paglets-host`` launches it first): on a busy machine it takes CPU from them,
and row (h) holds that too, as the imports alone are timed without it.
The host loads aiohttp's CA certificates only when a TLS connection of its own
needs them (`paglets.transport.cacerts`; none here), which the bare server loads
as it imports aiohttp: row (g) can be below zero.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from foundation import (
    COUNTER,
    FIGURE_HEAD,
    MS,
    ROOT,
    TARGET_CREATE,
    Table,
    echo_argv,
    echo_sender,
    host_argv,
    machine,
    running,
)

from paglets import AsyncHostClient

TARGET_READY_RATIO = 1.3  # host start -> ready over bare aiohttp start -> first answer
POLL = 0.001  # how often the ready file is looked for, seconds
BYTECODE_ENV = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
IMPORTS = {  # what each start imports before it serves, as the phase rows time it
    "python": "",
    "aiohttp": "from aiohttp import web",
    # paglets-host's own, as it imports them: paglets.cli.host (which installs the dataclass
    # code cache first), then, the collector off, aiohttp without its CA certificates
    # (paglets.transport.cacerts: loaded at a first TLS connection) and the host's modules
    "host": "import gc, paglets.cli.host\n"
    "gc.disable()\n"
    "from paglets.transport.cacerts import import_aiohttp\n"
    "import_aiohttp()\n"
    "import paglets.host, paglets.runtime.warmup",
}
PROBE = "import time\n{}\nprint(time.time())"


@dataclass(frozen=True)
class Start:
    """One start, in seconds from just before the exec."""

    ready: float  # the ready file exists
    answered: float  # the first request was answered (the host: create + first reply)


def time_imports(what: str) -> float:
    """Seconds from just before a new interpreter's exec until ``what`` is imported in it."""
    began = time.time()
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(IMPORTS[what])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[-1]) - began


async def start_host(workdir: Path, i: int) -> Start:
    """Start a host on an empty state directory; time its ready file and first create."""
    argv = host_argv(workdir / f"host-{i}", "start", (), None)
    began = time.perf_counter()
    async with running(f"host-{i}", argv, workdir, poll=POLL) as host:
        ready = time.perf_counter() - began
        async with AsyncHostClient(host.url) as client:
            proxy = await client.create(COUNTER)
            await proxy.send("get")
            answered = time.perf_counter() - began
            await proxy.dispose()
    return Start(ready, answered)


async def start_echo(workdir: Path, i: int) -> Start:
    """Start the bare aiohttp server; time its ready file and its first answer."""
    began = time.perf_counter()
    async with running(f"echo-{i}", echo_argv(), workdir, poll=POLL) as echo:
        ready = time.perf_counter() - began
        async with AsyncHostClient(echo.url) as client:
            await echo_sender(client)()
            answered = time.perf_counter() - began
    return Start(ready, answered)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * MS:.0f} ms"


@dataclass
class Starts:
    """The starts of one section, and the phase probes taken between them."""

    hosts: list[Start]
    echoes: list[Start]
    imports: dict[str, list[float]]


async def measure(starts: int, *, cached: bool) -> Starts:
    """``starts`` starts of the host and of the baseline, alternating; and the phase probes."""
    hosts: list[Start] = []
    echoes: list[Start] = []
    imports: dict[str, list[float]] = {what: [] for what in IMPORTS}
    saved = {name: os.environ.get(name) for name in BYTECODE_ENV}
    with tempfile.TemporaryDirectory(prefix="paglets-bench-start-") as tmp:
        workdir = Path(tmp)
        if cached:  # the servers inherit this environment
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        try:
            if cached:
                print("filling the bytecode caches", file=sys.stderr)
                await start_host(workdir, -1)
                await start_echo(workdir, -1)
            for i in range(starts):
                print(f"start {i + 1}/{starts}", file=sys.stderr)
                if i % 2:
                    echoes.append(await start_echo(workdir, i))
                    hosts.append(await start_host(workdir, i))
                else:
                    hosts.append(await start_host(workdir, i))
                    echoes.append(await start_echo(workdir, i))
                for what in IMPORTS:
                    imports[what].append(await asyncio.to_thread(time_imports, what))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return Starts(hosts, echoes, imports)


async def run(starts: int) -> Table:
    table = Table(head=FIGURE_HEAD)
    for cached, section in ((True, "1"), (False, "2")):
        print("with bytecode caches" if cached else "as the environment is", file=sys.stderr)
        add_rows(table, section, await measure(starts, cached=cached))
    return table


def add_rows(table: Table, section: str, measured: Starts) -> None:
    hosts, echoes = measured.hosts, measured.echoes
    echo_answer = statistics.median(s.answered for s in echoes)
    baseline = f"{echo_answer * MS:.0f} ms (bare aiohttp: start -> first answer)"
    ready = statistics.median(s.ready for s in hosts)
    table.add(
        f"{section}(a)",
        "host start -> ready file",
        median_ms([s.ready for s in hosts]),
        baseline=baseline,
        ratio=ready / echo_answer,
        target=f"<= {TARGET_READY_RATIO}x",
        met=ready <= TARGET_READY_RATIO * echo_answer,
    )
    first = statistics.median(s.answered for s in hosts)
    table.add(
        f"{section}(b)",
        "host start -> first create's reply",
        median_ms([s.answered for s in hosts]),
        baseline=baseline,
        ratio=first / echo_answer,
    )
    after = [s.answered - s.ready for s in hosts]
    table.add(
        f"{section}(c)",
        "ready file -> first create's reply (create + send)",
        f"{statistics.median(after) * MS:.1f} / max {max(after) * MS:.1f} ms",
        target=f"median <= {TARGET_CREATE * MS:.0f} ms",
        met=statistics.median(after) <= TARGET_CREATE,
    )
    table.add(
        f"{section}(d)",
        "bare aiohttp start -> ready file (for reference)",
        median_ms([s.ready for s in echoes]),
    )
    add_phases(table, section, measured)


def add_phases(table: Table, section: str, measured: Starts) -> None:
    """Where a start goes: the imports of each, timed alone, and what the host does after."""
    python, aiohttp, host = (statistics.median(measured.imports[what]) for what in IMPORTS)
    ready = statistics.median(s.ready for s in measured.hosts)
    echo = statistics.median(s.answered for s in measured.echoes)
    rows = (
        ("(e)", "phase: the interpreter's start (python -c '')", python, ""),
        ("(f)", "phase: bare aiohttp's import (from aiohttp import web)", aiohttp - python, ""),
        (
            "(g)",
            "phase: paglets-host's imports beyond aiohttp's",
            host - aiohttp,
            "paglets.cli.host, paglets.host, paglets.runtime.warmup (collector off as in main)",
        ),
        (
            "(h)",
            "phase: the rest of the host's start (ready - its imports alone)",
            ready - host,
            "options, launch file, start, bind; and its imports slowed by the zygote's boot",
        ),
        ("(i)", "phase: bare aiohttp's bind and first answer", echo - aiohttp, ""),
    )
    for row, figure, seconds, note in rows:
        table.add(f"{section}{row}", figure, f"{seconds * MS:.0f} ms", baseline=note)


def compiled() -> str:
    """Whether paglets' own modules have bytecode beside them (``./run`` compiles them)."""
    sources = list((ROOT / "paglets").rglob("*.py"))
    have = sum(1 for source in sources if _pyc(source).exists())
    return f"compiled ({have}/{len(sources)})" if have else "not compiled"


def code_cache() -> str:
    """Whether the hosts find a dataclass code cache (``paglets.runtime.dataclasscode``)."""
    from paglets.runtime.dataclasscode import default_path  # noqa: PLC0415

    path = default_path()
    return f"at {path}" if path.exists() else "absent (filled by the first start)"


def _pyc(source: Path) -> Path:
    tag = sys.implementation.cache_tag
    return source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"


def main() -> None:
    parser = argparse.ArgumentParser(description="Host start against a bare aiohttp start.")
    parser.add_argument("--quick", action="store_true", help="3 starts of each: a smoke test")
    parser.add_argument("--starts", type=int, default=12, help="starts of each (default 12)")
    args = parser.parse_args()
    starts = 3 if args.quick else args.starts
    began, load = time.perf_counter(), os.getloadavg()
    table = asyncio.run(run(starts))
    print(f"## paglets start benchmark{' (--quick)' if args.quick else ''}\n")
    print(f"Machine: {machine()}.\n")
    print(table.markdown())
    print(
        f"\nMedians of {starts} starts of each, alternating; every start a new process "
        "with an empty state directory, timed from just before its exec. Rows 1: with "
        "bytecode caches (filled by one untimed start of each); rows 2: as the environment "
        f"is (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; "
        f"paglets' own modules {compiled()}; dataclass code cache {code_cache()}). "
        "Rows (e)-(i): each import timed alone in a new interpreter between the starts "
        "(medians), the rest by difference. Run took "
        f"{time.perf_counter() - began:.0f} s; load average before it {load[0]:.2f}, "
        f"after it {os.getloadavg()[0]:.2f}."
    )


if __name__ == "__main__":
    main()
