"""The relay benchmark: direct, through the hub, and through nginx, in one run on loopback.

::

    uv run python bench/relay.py            # 64 MiB moves, 256 MiB moves under way
    uv run python bench/relay.py --quick    # smaller, a smoke test
    uv run python bench/relay.py --moves 5  # five big moves per way (default 3)

Starts a hub (``--public-url``), a host that joined it directly (``--peer``) and
a connect-mode host (``--connect-to``), each its own ``paglets-host`` process;
and, when nginx is installed (found as the relay tests find it), a second hub
behind a real nginx terminating TLS at ``/paglets/`` (the docs' drop-in, a test
CA's certificate) with a connect-mode host of its own that connects through
nginx. For each way in, it measures: a message round trip to a paglet there (a
client at the hub, or at nginx); a dispatch of 64 MiB from the hub; and, for
each of ``--moves`` moves of 256 MiB from the hub to the same host, the round
trip while it is under way against one measured just before it (and in the
move's first and second half: the paglet's process writes and sends its
envelope, then the target lands and checks it), the hub's RSS growth during
it, and its rate with the CPU the hub's and the host's processes took
meanwhile (% of one core; on a machine of few cores, what the round trip
competes with). A single move's figures swing widely from run to run on a
small shared machine, so the table gives their median over the moves, with the
least and the most in brackets. Prints a Markdown table on stdout (progress on
stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from foundation import cpu_seconds

from paglets import HostClient, PagletProxy

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-relay-key-0123456789"
TRAVELER = "examples.travel:Traveler"
MiB = 1 << 20


@dataclass(frozen=True)
class Way:
    """One way to a host: the client's URL (a hub, or nginx), the host's name, the hub."""

    title: str
    url: str
    target: str
    hub_pid: int
    host_pid: int
    context: ssl.SSLContext | None = None

    def client(self) -> HostClient:
        return HostClient(self.url, KEY, ssl=self.context)


@dataclass(frozen=True)
class Sizes:
    """How much each measure moves and sends."""

    move: int  # bytes, the dispatch timed on its own
    big: int  # bytes, the move the round trips run during
    count: int  # round trips timed on their own (a third of it just before each big move)
    moves: int  # big moves, each with its round trips just before and during it


@dataclass(frozen=True)
class BigMove:
    """What one big move showed: round trips just before and during it, and its cost."""

    before: float  # ms, the median round trip just before the move
    during: float  # ms, the median round trip while it was under way
    halves: tuple[float, float]  # ms, the same in its first / second half
    rss: float  # MiB, the hub's RSS growth
    rate: float  # MiB/s, the move's rate while round trips ran
    hub_cpu: float  # % of one core, the hub's process
    host_cpu: float  # % of one core, the target host's process

    @property
    def ratio(self) -> float:
        return self.during / self.before


@dataclass
class Figures:
    """What was measured on one way."""

    rtt: float = float("nan")  # ms
    rate: float = float("nan")  # MiB/s
    moves: list[BigMove] = field(default_factory=list)

    def median(self, of: Callable[[BigMove], float]) -> float:
        """The median over the big moves of ``of(move)``."""
        return statistics.median(of(m) for m in self.moves) if self.moves else float("nan")

    def spread(self, of: Callable[[BigMove], float], digits: int = 2) -> str:
        """``median (least-most)`` over the big moves, or the one move's figure."""
        values = [of(m) for m in self.moves]
        if len(values) < 2:  # one move has no spread
            return f"{self.median(of):.{digits}f}"
        return f"{self.median(of):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    ready = tmp / f"{name}.ready"
    argv = [sys.executable, "-m", "paglets.cli.host", "--name", name, "--ready-file", str(ready)]
    argv += ["--state-dir", str(tmp / "state"), "--log-level", "warning", "--no-transfer-fsync"]
    env = {**os.environ, "PAGLETS_API_KEY": KEY}
    with (tmp / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(argv + list(args), stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"{name} did not start:\n{(tmp / f'{name}.log').read_text()}")
        time.sleep(0.05)
    return process, json.loads(ready.read_text())["url"]


def _round_trip(traveler: PagletProxy) -> float:
    """Seconds one message to ``traveler`` takes, there and back."""
    start = time.perf_counter()
    traveler.send("increment")
    return time.perf_counter() - start


def _rtt(way: Way, count: int) -> float:
    """The median round trip (ms) of ``count`` messages to a traveler on the way's host."""
    with way.client() as client, client.at(way.target) as there:
        traveler = there.create(TRAVELER)
        traveler.send("increment")
        times = [_round_trip(traveler) for _ in range(count)]
        traveler.dispose()
    return statistics.median(times) * 1000


def _move(way: Way, size: int, started: threading.Event | None = None) -> float:
    """Seconds to dispatch a traveler carrying ``size`` bytes from the hub to the host."""
    with way.client() as client:
        traveler = client.create(TRAVELER)
        traveler.send("payload", {"size": size})
        if started is not None:
            started.set()
        start = time.perf_counter()
        traveler.dispatch(way.target)
        elapsed = time.perf_counter() - start
        traveler.dispose()
    return elapsed


def _during_big_move(way: Way, big: int, count: int) -> BigMove:
    """Round trips just before and while ``big`` bytes move to the host; the hub's RSS; the
    CPU the hub's and the host's processes (their threads, not their children) took."""
    hub_process, host_process = psutil.Process(way.hub_pid), psutil.Process(way.host_pid)
    started, done = threading.Event(), threading.Event()
    took: list[float] = []

    def big_move() -> None:
        try:
            took.append(_move(way, big, started))
        finally:
            started.set()
            done.set()

    busy: list[float] = []
    at: list[float] = []  # when each of them started, from the move's start
    with way.client() as client, client.at(way.target) as there:
        traveler = there.create(TRAVELER)
        traveler.send("increment")
        before = [_round_trip(traveler) for _ in range(count)]
        thread = threading.Thread(target=big_move)
        thread.start()
        started.wait()  # the payload is made: the move starts now
        rss_before = hub_process.memory_info().rss
        peak = rss_before
        cpu_before = [cpu_seconds([hub_process]), cpu_seconds([host_process])]
        wall = time.perf_counter()
        while not done.is_set():
            at.append(time.perf_counter() - wall)
            busy.append(_round_trip(traveler))
            peak = max(peak, hub_process.memory_info().rss)
            time.sleep(0.005)
        wall = time.perf_counter() - wall
        cpu = [
            cpu_seconds([hub_process]) - cpu_before[0],
            cpu_seconds([host_process]) - cpu_before[1],
        ]
        traveler.dispose()
    thread.join()
    first = [b for a, b in zip(at, busy, strict=True) if a < wall / 2]
    return BigMove(
        before=_median_ms(before),
        during=_median_ms(busy),
        halves=(_median_ms(first), _median_ms(busy[len(first) :])),
        rss=(peak - rss_before) / MiB,
        rate=big / MiB / took[0] if took else float("nan"),
        hub_cpu=100 * cpu[0] / wall,
        host_cpu=100 * cpu[1] / wall,
    )


def _median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000 if times else float("nan")


def _measure(way: Way, sizes: Sizes) -> Figures:
    print(f"{way.title}: round trips", file=sys.stderr)
    figures = Figures(rtt=_rtt(way, sizes.count))
    print(f"{way.title}: a {sizes.move // MiB} MiB dispatch", file=sys.stderr)
    figures.rate = sizes.move / MiB / _move(way, sizes.move)
    for n in range(sizes.moves):
        print(
            f"{way.title}: round trips during a {sizes.big // MiB} MiB move "
            f"({n + 1} of {sizes.moves})",
            file=sys.stderr,
        )
        figures.moves.append(_during_big_move(way, sizes.big, sizes.count // 3))
    return figures


def _wait_online(way: Way, names: set[str]) -> None:
    with way.client() as client:
        deadline = time.monotonic() + 60
        while {h.name for h in client.hosts() if h.online} < names:
            if time.monotonic() > deadline:
                sys.exit(f"not all of {names} online: {client.hosts()}")
            time.sleep(0.1)


def _behind_nginx(tmp: Path, stack: list[object]) -> Way | str:
    """A second hub behind nginx with a connect-mode host of its own; or why not."""
    sys.path.insert(0, str(ROOT))
    import pytest  # noqa: PLC0415 - the relay tests' nginx helper speaks pytest
    import trustme  # noqa: PLC0415 - a test CA, as the relay tests use

    from tests.nginxproc import Nginx  # noqa: PLC0415

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = {k: tmp / f"{k}.pem" for k in ("cert", "key", "ca")}
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    hub_port = _free_port()
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir()
    try:
        nginx = Nginx(
            nginx_dir,
            port=_free_port(),
            hub_port=hub_port,
            cert=files["cert"],
            key=files["key"],
            upgrades=True,
        )
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        return str(exc).splitlines()[0]
    stack.append(nginx)
    trust = ("--ca-file", str(files["ca"]))
    hub, _ = _start(tmp, "hub2", "--port", str(hub_port), "--public-url", nginx.url, *trust)
    stack.append(hub)
    relayed, _ = _start(tmp, "relayed2", "--connect-to", nginx.url, *trust)
    stack.append(relayed)
    context = ssl.create_default_context(cafile=str(files["ca"]))
    way = Way("via nginx", nginx.url, "relayed2", hub.pid, relayed.pid, context)
    _wait_online(way, {"relayed2"})
    return way


def _table(columns: list[tuple[str, Figures]], sizes: Sizes, note: str) -> str:
    direct = columns[0][1]
    big = f"{sizes.big // MiB} MiB move"
    rows: list[tuple[str, list[str]]] = [
        ("message round trip (ms)", [f"{f.rtt:.2f}" for _, f in columns]),
        ("ratio to direct", [f"{f.rtt / direct.rtt:.2f}" for _, f in columns]),
        (
            f"{sizes.move // MiB} MiB dispatch from the hub (MiB/s)",
            [f"{f.rate:.0f}" for _, f in columns],
        ),
        ("ratio to direct", [f"{f.rate / direct.rate:.2f}" for _, f in columns]),
        (
            f"round trip just before a {big} (ms)",
            [f.spread(lambda m: m.before) for _, f in columns],
        ),
        (
            f"round trip during a {big} to the same host (ms)",
            [f.spread(lambda m: m.during) for _, f in columns],
        ),
        ("during / just before, per move", [f.spread(lambda m: m.ratio) for _, f in columns]),
        (
            "round trip during its first / second half (ms)",
            [
                f"{f.median(lambda m: m.halves[0]):.2f} / {f.median(lambda m: m.halves[1]):.2f}"
                for _, f in columns
            ],
        ),
        (
            "hub RSS growth during that move, the most (MiB)",
            [f"{max((m.rss for m in f.moves), default=float('nan')):.1f}" for _, f in columns],
        ),
        (f"that {big}'s rate (MiB/s)", [f.spread(lambda m: m.rate, 0) for _, f in columns]),
        (
            "hub / host process CPU during that move (% of a core)",
            [
                f"{f.median(lambda m: m.hub_cpu):.0f} / {f.median(lambda m: m.host_cpu):.0f}"
                for _, f in columns
            ],
        ),
    ]
    lines = [
        "| measure | " + " | ".join(title for title, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    if note:
        lines.append(f"\nno nginx column: {note}")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and counts")
    parser.add_argument(
        "--moves",
        type=int,
        default=3,
        metavar="N",
        help="big moves per way, each with round trips just before and during it (default 3)",
    )
    args = parser.parse_args()
    if args.moves < 1:
        parser.error(f"--moves must be at least 1, not {args.moves}")
    quick = args.quick
    sizes = (
        Sizes(8 * MiB, 32 * MiB, 60, 1) if quick else Sizes(64 * MiB, 256 * MiB, 300, args.moves)
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        port = _free_port()
        hub_url = f"http://127.0.0.1:{port}"
        hub, _ = _start(tmp, "hub", "--port", str(port), "--public-url", hub_url)
        stack: list[object] = [hub]
        try:
            direct = _start(tmp, "direct", "--port", "0", "--peer", hub_url)[0]
            stack.append(direct)
            relayed = _start(tmp, "relayed", "--connect-to", hub_url)[0]
            stack.append(relayed)
            ways = [
                Way("direct", hub_url, "direct", hub.pid, direct.pid),
                Way("via hub", hub_url, "relayed", hub.pid, relayed.pid),
            ]
            _wait_online(ways[0], {"direct", "relayed"})
            nginx = _behind_nginx(tmp, stack)
            note = nginx if isinstance(nginx, str) else ""
            if not isinstance(nginx, str):
                ways.append(nginx)
            columns = [(way.title, _measure(way, sizes)) for way in ways]
        finally:
            for part in reversed(stack):
                if isinstance(part, subprocess.Popen):
                    part.terminate()
                    part.wait(30)
                else:
                    part.close()  # type: ignore[attr-defined]
    print(_table(columns, sizes, note))


if __name__ == "__main__":
    main()
