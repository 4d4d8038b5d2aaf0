"""The mobility benchmark: what moving a paglet costs, against baselines from the same run.

::

    uv run python bench/mobility.py            # the full run (under a minute)
    uv run python bench/mobility.py --quick    # reduced counts and sizes, a smoke test

Two ``paglets-host`` processes on loopback, A and B (B started with ``--peer``
A), run once with the default ``--transfer-fsync`` and once with
``--no-transfer-fsync``; a bare aiohttp sink (``bench/_sink_server.py``) runs
beside them as the baseline. Last, two in-process `paglets.Host` objects in this
process measure the same-host move (a file link, no HTTP). Prints a Markdown
table on stdout (progress on stderr), then where the time of one move goes;
``bench/README.md`` says what each row means. Servers are started, stopped and
checked for leftover processes with ``foundation.py``'s ``running``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import aiohttp
import psutil
from foundation import (
    FIGURE_HEAD,
    MIB,
    MS,
    ROOT,
    STOP_TIMEOUT,
    Series,
    Table,
    cpu_seconds,
    machine,
    md_row,
    mib,
    running,
)

from paglets import AsyncHostClient, Host
from paglets.core.events import EventKind

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from foundation import Server

    from paglets import AsyncPagletProxy

TRAVELER = "examples.travel:Traveler"
KIB = 1024
MB = 1_000_000  # MB/s here are 10^6 bytes per second
CHUNK = MIB  # the client streams baseline bodies in 1 MiB chunks, as a host does
HOP_BODY = KIB  # baseline of the empty hop: a streamed POST of about an empty envelope
HOP_BLOCKS = 4
PROBE_INTERVAL = 0.002
FILE_TIME_LAG = 0.004  # file times come from a clock up to a tick behind (4 ms at HZ=250)
JOIN_TIMEOUT = 30.0
TARGET_HOP = 0.015  # median, seconds
HOP_PAUSE = 0.1  # seconds between the hops "apart": the hosts finish tidying up the last one
TARGET_MOVE = 500 * MB  # bytes/s, 64 MiB end to end
TARGET_MOVE_SIZE = 64 * MIB
TARGET_RSS_RATIO = 2.0  # peak extra RSS of a host over the state size
TARGET_SAME_HOST = 1000 * MB  # bytes/s, 64 MiB
MID_ROUND_SIZES = (0, MIB, 2 * MIB, 4 * MIB)  # (e): one move of each per round, in random order
MID_PROBED = 2 * MIB  # (e): the size whose phases are shown, beside the empty move
MID_SEED = 20  # (e): the shuffles and the bootstrap, the same in every run
BOOTSTRAP = 2000  # (e): resamples of the rounds for each interval
TARGET_MID_RATIO = 3.0  # (e) per MiB beyond the empty hop, over a bare POST's
MODES = (("fsync", "--transfer-fsync"), ("no fsync", "--no-transfer-fsync"))


@dataclass(frozen=True)
class Counts:
    """How much of everything one run does."""

    hops: int  # timed hops A<->B of an empty paglet, per mode
    creates: int  # timed create->first reply on B, per mode (what a start costs)
    reps: dict[int, int]  # state size -> timed moves A->B (the median is reported)
    probed: tuple[int, ...]  # sizes moved once more with the probe (time split, RSS)
    rss_size: int  # the probed size whose peak RSS is reported
    same_host: tuple[int, ...]  # sizes of the same-host move
    same_host_reps: int
    mid_rounds: int = 60  # (e) rounds of 4 moves and 4 POSTs each
    mid_probed: int = 5  # (e) probed moves of MID_PROBED, and of an empty state


FULL = Counts(
    hops=40,
    creates=20,
    reps={64 * KIB: 3, MIB: 3, 16 * MIB: 3, 64 * MIB: 5, 256 * MIB: 1},
    probed=(64 * MIB, 256 * MIB),
    rss_size=256 * MIB,
    same_host=(16 * MIB, 64 * MIB),
    same_host_reps=3,
)
QUICK = Counts(
    hops=6,
    creates=4,
    reps={64 * KIB: 1, MIB: 1, 16 * MIB: 1, 64 * MIB: 1},
    probed=(64 * MIB,),
    rss_size=64 * MIB,
    same_host=(16 * MIB, 64 * MIB),
    same_host_reps=1,
    mid_rounds=4,
    mid_probed=1,
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def size_name(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MB:,.0f} MB/s"


# -- processes under test ------------------------------------------------------


def host_argv(workdir: Path, name: str, flag: str, peer: str | None) -> list[str]:
    argv = [sys.executable, "-m", "paglets.cli.host", "--name", name, "--port", "0"]
    argv += ["--state-dir", str(workdir / f"{name}-state"), "--log-level", "warning", flag]
    if peer is not None:
        argv += ["--peer", peer]
    return argv


def sink_argv(workdir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "_sink_server.py"), "--dir", str(workdir)]


async def joined(clients: Sequence[AsyncHostClient]) -> None:
    """Wait until every client's host lists all of them online."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while True:
        views = [await c.hosts(online=True) for c in clients]
        if all(len(view) == len(clients) for view in views):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hosts did not form one mesh: {views}")
        await asyncio.sleep(0.05)


# -- the baselines -------------------------------------------------------------


async def post(http: aiohttp.ClientSession, url: str, body: memoryview) -> float:
    """Seconds to POST ``body`` streamed in 1 MiB chunks, up to the server's answer."""

    async def chunks() -> AsyncIterator[memoryview]:
        for start in range(0, len(body), CHUNK):
            yield body[start : start + CHUNK]

    start = time.perf_counter()
    async with http.post(url, data=chunks()) as resp:
        answer = await resp.json()
    took = time.perf_counter() - start
    if resp.status != 200 or answer.get("bytes") != len(body):
        raise RuntimeError(f"the sink at {url} answered {resp.status} {answer!r}")
    return took


def file_round_trip(path: Path, body: memoryview, sync: bool) -> float:
    """Seconds to write ``body`` to a new file (and fsync it), then read it all back."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for at in range(0, len(body), CHUNK):
            os.write(fd, body[at : at + CHUNK])
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    copy = bytearray(len(body))
    with path.open("rb") as f:
        f.readinto(copy)
    took = time.perf_counter() - start
    path.unlink()
    if copy != body:
        raise RuntimeError(f"{path} did not read back what was written")
    return took


# -- watching a move -----------------------------------------------------------


class Probe:
    """A thread that samples RSS and watches the spool and inbox while a move runs.

    Every `PROBE_INTERVAL` it reads the RSS of each host process and the sum
    of its descendants' RSS (the descendant list is refreshed every 10th
    sample), and notes the wall-clock time at which the envelope's files first
    appear in (or leave) the source's spool and the target's inbox: the middle
    of the interval in which it must have happened, between the look that first
    saw it and the one before, narrowed for a file renamed into place
    (``*.out``, ``*.in``) by its ctime, the time of the rename.
    """

    def __init__(self, pids: dict[str, int], spool: Path, inbox: Path) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.spool, self.inbox = spool, inbox
        self.before: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.marks: dict[str, float] = {}
        self._looked = 0.0
        self._started = 0.0
        self._kids: dict[str, list[psutil.Process]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mobility-probe", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._first.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self, name: str) -> tuple[int, int]:
        """Peak RSS minus RSS before, and RSS before, in bytes."""
        return self.peak[name] - self.before[name], self.before[name]

    def _run(self) -> None:
        try:
            n = 0
            while True:
                if n % 10 == 0:
                    for name, proc in self.procs.items():
                        with contextlib.suppress(psutil.Error):
                            self._kids[name] = proc.children(recursive=True)
                self._sample()
                self._look()
                if n == 0:
                    self._first.set()
                n += 1
                if self._stop.wait(PROBE_INTERVAL):
                    self._sample()
                    return
        finally:
            self._first.set()  # never leave __enter__ waiting

    def _sample(self) -> None:
        for name, proc in self.procs.items():
            figures = {name: _rss(proc), f"{name}'s children": sum(map(_rss, self._kids[name]))}
            for key, value in figures.items():
                self.before.setdefault(key, value)
                self.peak[key] = max(self.peak.get(key, 0), value)

    def _look(self) -> None:
        # What is first seen now happened since the last look. For a file renamed
        # into place, its ctime (the rename) narrows that down: file times lag the
        # clock by up to a tick, and a listing racing the rename may miss the file.
        now = time.time()
        since, self._looked = self._looked or now, now
        self._started = self._started or now
        out, inbox = _names(self.spool), _names(self.inbox)
        seen = {
            "spool_tmp": [n for n in out if n.endswith(".tmp")],
            "spool_out": [self.spool / n for n in out if n.endswith(".out")],
            "inbox_tmp": [n for n in inbox if n.endswith((".tmp", ".tmp-link"))],
            "inbox_in": [self.inbox / n for n in inbox if n.endswith(".in")],
        }
        gone = {
            "inbox_gone": "inbox_in" in self.marks and not seen["inbox_in"],
            "spool_gone": "spool_out" in self.marks and not seen["spool_out"],
        }
        for mark, present in [*seen.items(), *gone.items()]:
            if not present or mark in self.marks:
                continue
            lo, hi = since, now
            if isinstance(present, list) and isinstance(present[0], Path):
                with contextlib.suppress(OSError):
                    ctime = present[0].stat().st_ctime
                    if self._started - FILE_TIME_LAG <= ctime <= now:
                        lo = max(lo, ctime) if ctime + FILE_TIME_LAG >= since else ctime
                        hi = min(now, ctime + FILE_TIME_LAG)
            self.marks[mark] = (lo + hi) / 2


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


def _names(directory: Path) -> list[str]:
    try:
        return [entry.name for entry in directory.iterdir()]
    except FileNotFoundError:
        return []


# The marks of one move, each with the phase it ends, in the order they happen when
# the envelope (4 MiB or more) is streamed while the child writes it. A smaller one,
# or one moved within a process, is whole in the spool before the target sees it:
# then `spool_out` comes before `inbox_tmp`, and each phase is timed from the mark
# before it in time (`phases`).
PHASES = (
    ("spool_tmp", "request → the child starts writing its envelope (API call, IPC, hook)"),
    ("inbox_tmp", "→ target checks the header and starts its file (source POSTs; large: early)"),
    ("spool_out", "→ the child's envelope is whole in the spool (large: streamed meanwhile)"),
    ("inbox_in", "→ the envelope is whole in the target's inbox (streamed or linked; fsync)"),
    ("received", "target journals the commit (`transfer.received`)"),
    ("inbox_gone", "target starts the paglet: fork, unpack, on_arrival; journals `started`"),
    ("sent", "answer back to the source (`transfer.sent`)"),
    ("spool_gone", "source drops its envelope (then journals `done`)"),
    ("t1", "source replies to the child, the child to the client; first reply on B"),
)


def phases(marks: dict[str, float]) -> dict[str, tuple[float, bool]]:
    """Seconds of each phase since the mark before it in time, and whether it spans
    phases whose marks were missed."""
    seen = sorted((marks[m], i, m) for i, (m, _) in enumerate(PHASES) if m in marks)
    missed = [i for i, (m, _) in enumerate(PHASES) if m not in marks]
    out, last = {}, marks["t0"]
    for when, i, mark in seen:
        spans = [j for j in missed if j < i]  # phases listed before it, never seen
        missed = [j for j in missed if j > i]
        out[mark] = (when - last, bool(spans))
        last = when
    return out


async def event_times(
    clients: Sequence[AsyncHostClient], agent_id: str, kind: EventKind
) -> list[float]:
    stamps = []
    for client in clients:
        events, _ = await client.events(0, 1000, agent_id=agent_id)
        stamps += [e.timestamp for e in events if e.kind == kind]
    return sorted(stamps)


@dataclass
class Breakdown:
    """Columns of the time-split table: a heading and the phases of one move."""

    columns: list[tuple[str, dict[str, tuple[float, bool]], float]] = field(default_factory=list)

    def add(self, heading: str, marks: dict[str, float]) -> None:
        self.columns.append((heading, phases(marks), marks["t1"] - marks["t0"]))

    def add_split(self, heading: str, split: dict[str, tuple[float, bool]], total: float) -> None:
        self.columns.append((heading, split, total))

    def markdown(self) -> str:
        head = ("phase (ms)", *(c[0] for c in self.columns))
        lines = [md_row(head), md_row(tuple("---" for _ in head))]
        for mark, label in PHASES:
            cells = [label]
            for _, split, _total in self.columns:
                seconds, merged = split.get(mark, (math.nan, False))
                cell = "-" if math.isnan(seconds) else f"{seconds * MS:.1f}"
                cells.append(f"{cell}†" if merged else cell)
            lines.append(md_row(tuple(cells)))
        lines.append(
            md_row(
                (
                    "**total** (dispatch, then a first reply on B)",
                    *(f"{c[2] * MS:.1f}" for c in self.columns),
                )
            )
        )
        return "\n".join(lines)


# -- the report ----------------------------------------------------------------


# -- one move ------------------------------------------------------------------


async def move_once(
    ca: AsyncHostClient, cb: AsyncHostClient, size: int, probe: Probe | None = None
) -> tuple[float, dict[str, float]]:
    """Create a Traveler on A holding ``size`` bytes, time its dispatch to B, check it.

    Returns the seconds ``dispatch()`` took, and the wall-clock marks of the
    move (``t0``, ``t1``, and with a probe what it saw and the hosts' events).
    """
    proxy = await ca.create(TRAVELER)
    if await proxy.send("payload", {"size": size}) != size:
        raise RuntimeError(f"the traveler did not take a payload of {size} bytes")
    digest = await proxy.send("digest")
    with probe if probe is not None else contextlib.nullcontext():
        wall, start = time.time(), time.perf_counter()
        await proxy.dispatch("beta")
        await proxy.send("where")  # end to end: until the paglet answers on the target
        took = time.perf_counter() - start
    if await proxy.send("where") != "beta" or await proxy.send("digest") != digest:
        raise RuntimeError(f"the traveler of {size} bytes did not arrive whole on beta")
    marks = {"t0": wall, "t1": wall + took}
    if probe is not None:
        marks |= probe.marks
        for key, kind in (
            ("received", EventKind.TRANSFER_RECEIVED),
            ("sent", EventKind.TRANSFER_SENT),
        ):
            stamps = await event_times((ca, cb), proxy.agent_id, kind)
            if stamps:
                marks[key] = stamps[-1]
    await proxy.dispose()
    return took, marks


# -- two host processes --------------------------------------------------------


@dataclass
class Pair:
    """Host A and B of one mode, their clients, and the baseline sink."""

    mode: str
    fsync: bool
    a: Server
    b: Server
    ca: AsyncHostClient
    cb: AsyncHostClient
    http: aiohttp.ClientSession
    sink: str
    workdir: Path

    def probe(self) -> Probe:
        return Probe(
            {"A": self.a.pid, "B": self.b.pid},
            self.workdir / "alpha-state" / "alpha" / "transfers" / "out",
            self.workdir / "beta-state" / "beta" / "transfers" / "in",
        )


async def bench_hops(
    pair: Pair, body: memoryview, counts: Counts, table: Table
) -> tuple[dict[str, tuple[float, bool]], float] | None:
    """(a) an empty Traveler hops A->B->A..., against a small streamed POST, in blocks."""
    proxy = await pair.ca.create(TRAVELER)
    await proxy.send("where")
    names = ("alpha", "beta")
    start = time.perf_counter()
    await proxy.dispatch("beta")
    first = time.perf_counter() - start
    hops: list[float] = []
    windows: list[tuple[float, float]] = []
    base: list[float] = []
    block = -(-counts.hops // HOP_BLOCKS)
    cpu = {"hosts": 0.0, "processes": 0.0}
    for _ in range(HOP_BLOCKS):  # alternate, so drift in the machine hits both alike
        before = cpu_of((pair.a.pid, pair.b.pid))
        for _ in range(block):
            target = names[len(hops) % 2]
            wall, start = time.time(), time.perf_counter()
            await proxy.dispatch(target)
            await proxy.send("where")  # a hop ends when the paglet answers on the target
            hops.append(time.perf_counter() - start)
            windows.append((wall, wall + hops[-1]))
        after = cpu_of((pair.a.pid, pair.b.pid))
        for key in cpu:
            cpu[key] += after[key] - before[key]
        base += [await post(pair.http, f"{pair.sink}/sink", body[:HOP_BODY]) for _ in range(block)]
    where = await proxy.send("where")
    if where != names[(len(hops) - 1) % 2]:
        raise RuntimeError(f"the traveler is at {where} after {len(hops)} hops")
    clients = (pair.ca, pair.cb)
    received = await event_times(clients, proxy.agent_id, EventKind.TRANSFER_RECEIVED)
    sent = await event_times(clients, proxy.agent_id, EventKind.TRANSFER_SENT)
    apart = await hops_apart(proxy, names, len(hops), counts.hops)
    await proxy.dispose()
    ours, bare, idle = Series(tuple(hops)), Series(tuple(base)), Series(tuple(apart))
    baseline = f"{bare.ms(2)} (streamed POST of {size_name(HOP_BODY)}, bare aiohttp)"

    def hop_row(how: str, series: Series) -> None:
        table.add(
            "(a)",
            f"hop A↔B of an empty Traveler, {how}, {pair.mode}: "
            f"median / p90 of {len(series.samples)}",
            series.ms(1),
            baseline=baseline,
            ratio=series.median / bare.median,
            target="median ≤ 15 ms",
            met=series.median <= TARGET_HOP,
        )

    hop_row("back to back", ours)
    per_hop = {key: seconds / len(hops) * MS for key, seconds in cpu.items()}
    table.add(
        "(a)",
        f"CPU per back-to-back hop, {pair.mode}: hosts A and B + their zygotes and "
        "paglet processes",
        f"{per_hop['hosts'] + per_hop['processes']:.1f} ms "
        f"({per_hop['hosts']:.1f} + {per_hop['processes']:.1f})",
    )
    hop_row(f"{HOP_PAUSE * MS:.0f} ms apart", idle)
    table.add("(a)", f"first hop after the hosts start, {pair.mode}", f"{first * MS:.1f} ms")
    creates = []
    for _ in range(counts.creates):
        start = time.perf_counter()
        proxy = await pair.cb.create(TRAVELER)
        await proxy.send("where")
        creates.append(time.perf_counter() - start)
        await proxy.dispose()
    made = Series(tuple(creates))
    table.add(
        "(a)",
        f"create→first reply of a Traveler on B, {pair.mode}: median / p90 of {len(creates)} "
        "(a hop starts a paglet too)",
        made.ms(1),
    )
    return _hop_split(windows, received, sent)


async def hops_apart(
    proxy: AsyncPagletProxy, names: tuple[str, str], done: int, count: int
) -> list[float]:
    """``count`` more hops, each `HOP_PAUSE` after the one before, on hosts done with it."""
    apart: list[float] = []
    for _ in range(count):
        await asyncio.sleep(HOP_PAUSE)
        target = names[(done + len(apart)) % 2]
        start = time.perf_counter()
        await proxy.dispatch(target)
        await proxy.send("where")
        apart.append(time.perf_counter() - start)
    return apart


def cpu_of(hosts: Sequence[int]) -> dict[str, float]:
    """CPU seconds used so far by the host processes, and by all their descendants.

    A descendant's time counts while it runs and, once reaped, in its parent's
    ``children_*`` times (a paglet's process is reaped by the zygote).
    """
    procs = []
    for pid in hosts:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    descendants = []
    for host in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants += host.children(recursive=True)
    return {
        "hosts": cpu_seconds(procs),
        "processes": cpu_seconds(descendants, reaped=True),
    }


def _hop_split(
    windows: list[tuple[float, float]], received: list[float], sent: list[float]
) -> tuple[dict[str, tuple[float, bool]], float] | None:
    """Median phases of the hops, from the hosts' event timestamps alone."""
    per: dict[str, list[float]] = {"received": [], "sent": [], "t1": []}
    for t0, t1 in windows:
        got = [t for t in received if t0 <= t <= t1]
        gone = [t for t in sent if t0 <= t <= t1]
        if len(got) == 1 and len(gone) == 1:
            per["received"].append(got[0] - t0)
            per["sent"].append(gone[0] - got[0])
            per["t1"].append(t1 - gone[0])
    if not per["t1"]:
        return None
    split = {k: (statistics.median(v), k == "received") for k, v in per.items()}
    return split, statistics.median(t1 - t0 for t0, t1 in windows)


async def bench_throughput(pair: Pair, body: memoryview, counts: Counts, table: Table) -> None:
    """(b) dispatch A->B per state size, each followed by the two baseline POSTs."""
    for size, reps in counts.reps.items():
        moves, sink, to_file = [], [], []
        for _ in range(reps):
            moves.append((await move_once(pair.ca, pair.cb, size))[0])
            sink.append(await post(pair.http, f"{pair.sink}/sink", body[:size]))
            url = f"{pair.sink}/file?fsync={int(pair.fsync)}"
            to_file.append(await post(pair.http, url, body[:size]))
        ours, bare, written = (statistics.median(s) for s in (moves, sink, to_file))
        at_target = size == TARGET_MOVE_SIZE
        table.add(
            "(b)",
            f"dispatch A→B, {size_name(size)} state, {pair.mode}: median of {reps}",
            f"{rate(size, ours)} ({ours * MS:.1f} ms)",
            baseline=(
                f"{rate(size, bare)} (streamed POST, discarded); "
                f"{rate(size, written)} (to a file{', fsync' if pair.fsync else ''})"
            ),
            ratio=bare / ours,
            target="≥ 500 MB/s" if at_target else "",
            met=size / ours >= TARGET_MOVE if at_target else None,
        )


@dataclass(frozen=True)
class Slope:
    """Seconds per MiB: the median over rounds of each round's Theil-Sen slope.

    ``q1`` / ``q3`` are the quartiles of the rounds' slopes, ``lo`` / ``hi`` a
    95 % bootstrap interval of the median (rounds resampled).
    """

    median: float
    q1: float
    q3: float
    lo: float
    hi: float

    def ms(self) -> str:
        return (
            f"{self.median * MS:.2f} ms/MiB (95% CI {self.lo * MS:.2f}-{self.hi * MS:.2f}; "
            f"IQR {self.q1 * MS:.2f}-{self.q3 * MS:.2f})"
        )


def theil_sen(points: Sequence[tuple[float, float]]) -> float:
    """The median of the slopes between every two points of different x."""
    slopes = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(points)
        for x2, y2 in points[i + 1 :]
        if x2 != x1
    ]
    return statistics.median(slopes)


def least_squares(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope (unbiased on values quantized to clock ticks)."""
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _median_ci(values: Sequence[float], rng: random.Random) -> tuple[float, float]:
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP))
    return meds[int(0.025 * BOOTSTRAP)], meds[int(0.975 * BOOTSTRAP) - 1]


def slope(rounds: Sequence[dict[int, float]], rng: random.Random) -> Slope:
    """`Slope` of per-round times by size in bytes (x in MiB)."""
    per_round = [theil_sen([(size / MIB, t) for size, t in r.items()]) for r in rounds]
    q1, _, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
    lo, hi = _median_ci(per_round, rng)
    return Slope(statistics.median(per_round), q1, q3, lo, hi)


def ratio_ci(
    ours: Sequence[dict[int, float]], bare: Sequence[dict[int, float]], rng: random.Random
) -> tuple[float, float, float]:
    """Median-slope ratio ours / bare with a 95 % bootstrap interval (rounds resampled)."""
    a = [theil_sen([(s / MIB, t) for s, t in r.items()]) for r in ours]
    b = [theil_sen([(s / MIB, t) for s, t in r.items()]) for r in bare]
    pairs = list(zip(a, b, strict=True))
    ratios = []
    for _ in range(BOOTSTRAP):
        pick = rng.choices(pairs, k=len(pairs))
        den = statistics.median(p[1] for p in pick)
        ratios.append(statistics.median(p[0] for p in pick) / den if den > 0 else math.inf)
    ratios.sort()
    est = statistics.median(a) / statistics.median(b)
    return est, ratios[int(0.025 * BOOTSTRAP)], ratios[int(0.975 * BOOTSTRAP) - 1]


async def bench_mid(
    pair: Pair, body: memoryview, counts: Counts, table: Table, breakdown: Breakdown
) -> None:
    """(e) what each MiB of a 1-4 MiB state adds to a move, against what it adds to a POST.

    Each round moves a Traveler of every `MID_ROUND_SIZES` state A→B and POSTs a
    body of every size (1 KiB for 0) to the bare sink, the eight in a random
    order. A round's cost per MiB is the Theil-Sen slope of its four moves'
    times over their sizes (so the same round's empty move is the intercept),
    likewise for the POSTs; the figure is the median over rounds, with quartiles
    and a bootstrap interval, and its ratio to the POSTs' slope (paired by round).
    CPU per MiB of each host process is the least-squares slope over all moves.
    """
    rng = random.Random(MID_SEED)
    url = f"{pair.sink}/sink"
    hosts = (psutil.Process(pair.a.pid), psutil.Process(pair.b.pid))  # not their children
    for size in MID_ROUND_SIZES:  # warm up: each path once, untimed
        await move_once(pair.ca, pair.cb, size)
        await post(pair.http, url, body[: size or HOP_BODY])
    moves: list[dict[int, float]] = []
    posts: list[dict[int, float]] = []
    cpu: list[list[tuple[float, float]]] = [[], []]
    for _ in range(counts.mid_rounds):
        jobs = [(kind, size) for kind in ("move", "post") for size in MID_ROUND_SIZES]
        rng.shuffle(jobs)
        moved: dict[int, float] = {}
        posted: dict[int, float] = {}
        for kind, size in jobs:
            if kind == "post":
                posted[size] = await post(pair.http, url, body[: size or HOP_BODY])
                continue
            before = [cpu_seconds([host]) for host in hosts]
            moved[size] = (await move_once(pair.ca, pair.cb, size))[0]
            after = [cpu_seconds([host]) for host in hosts]
            for i in range(2):
                cpu[i].append((size / MIB, after[i] - before[i]))
        moves.append(moved)
        posts.append(posted)
    ours, bare = slope(moves, rng), slope(posts, rng)
    ratio, ratio_lo, ratio_hi = ratio_ci(moves, posts, rng)
    empty = statistics.median(r[0] for r in moves)
    sizes = ", ".join(
        f"{size_name(s)} {statistics.median((r[s] - r[0]) / (s / MIB) for r in moves) * MS:.2f}"
        for s in MID_ROUND_SIZES
        if s
    )
    table.add(
        "(e)",
        f"per MiB of a 1-4 MiB state beyond the empty move, {pair.mode}: median over "
        f"{counts.mid_rounds} rounds of each round's Theil-Sen slope (empty move "
        f"{empty * MS:.1f} ms; per size vs the round's empty move, ms/MiB: {sizes})",
        ours.ms(),
        baseline=f"{bare.ms()} (bare aiohttp POST beyond {size_name(HOP_BODY)})",
        ratio=ratio,
        target=f"≤ {TARGET_MID_RATIO:g}x",
        met=ratio <= TARGET_MID_RATIO,
    )
    table.add(
        "(e)",
        f"ratio of the slopes, {pair.mode}: 95% bootstrap interval (rounds resampled)",
        f"{ratio_lo:.2f}x-{ratio_hi:.2f}x",
    )
    table.add(
        "(e)",
        f"CPU per MiB of the host processes, {pair.mode}: least squares over "
        f"{len(cpu[0])} moves (A sends, B receives; children not counted)",
        f"A {least_squares(cpu[0]) * MS:.2f} ms/MiB, B {least_squares(cpu[1]) * MS:.2f} ms/MiB",
    )
    for size in (0, MID_PROBED):
        splits: list[dict[str, tuple[float, bool]]] = []
        totals = []
        for _ in range(counts.mid_probed):
            took, marks = await move_once(pair.ca, pair.cb, size, pair.probe())
            splits.append(phases(marks))
            totals.append(took)
        merged = {
            mark: (
                statistics.median(s[mark][0] for s in splits if mark in s),
                any(s[mark][1] for s in splits if mark in s),
            )
            for mark, _ in PHASES
            if any(mark in s for s in splits)
        }
        breakdown.add_split(
            f"{pair.mode}, {size_name(size) if size else 'empty'} (median of {counts.mid_probed})",
            merged,
            statistics.median(totals),
        )


async def bench_probed(pair: Pair, counts: Counts, table: Table, breakdown: Breakdown) -> None:
    """(c) one more move per probed size, watched: peak RSS, and where the time goes."""
    for size in counts.probed:
        probe = pair.probe()
        took, marks = await move_once(pair.ca, pair.cb, size, probe)
        breakdown.add(f"{pair.mode}, {size_name(size)}", marks)
        _log(f"  (c) probed move of {size_name(size)}, {pair.mode}: {took * MS:.0f} ms")
        if size != counts.rss_size:
            continue
        for name in ("A", "B"):
            extra, before = probe.growth(name)
            table.add(
                "(c)",
                f"peak extra RSS of host {name} during the {size_name(size)} move, {pair.mode}",
                f"{mib(extra)} (before: {mib(before)})",
                baseline=f"{size_name(size)} (the state)",
                ratio=extra / size,
                target="≤ 2x the state",
                met=extra <= TARGET_RSS_RATIO * size,
            )
        for name in ("A", "B"):
            extra, before = probe.growth(f"{name}'s children")
            table.add(
                "(c)",
                f"peak extra RSS of host {name}'s descendants (sum of RSS), {pair.mode}",
                f"{mib(extra)} (before: {mib(before)})",
                baseline=f"{size_name(size)} (the state)",
                ratio=extra / size,
            )


async def bench_mode(  # noqa: PLR0917 - one caller
    mode: str,
    flag: str,
    workdir: Path,
    sink: str,
    body: memoryview,
    counts: Counts,
    table: Table,
    breakdown: Breakdown,
    *,
    only_mid: bool = False,
) -> None:
    """(a) to (c) and (e) on two host processes started with ``flag``."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    slug = mode.replace(" ", "-")
    async with contextlib.AsyncExitStack() as stack:
        argv = host_argv(workdir, "alpha", flag, None)
        a = await stack.enter_async_context(running(f"alpha-{slug}", argv, workdir))
        argv = host_argv(workdir, "beta", flag, a.url)
        b = await stack.enter_async_context(running(f"beta-{slug}", argv, workdir))
        ca = await stack.enter_async_context(AsyncHostClient(a.url))
        cb = await stack.enter_async_context(AsyncHostClient(b.url))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await joined((ca, cb))
        fsync = flag == "--transfer-fsync"
        pair = Pair(mode, fsync, a, b, ca, cb, http, sink, workdir)
        _log(f"(e) mid-size moves, {mode}")
        await bench_mid(pair, body, counts, table, breakdown)
        if only_mid:
            return
        _log(f"(a) hops of an empty paglet, {mode}")
        split = await bench_hops(pair, body, counts, table)
        if split is not None:
            breakdown.add_split(f"{mode}, empty hop (median)", *split)
        _log(f"(b) throughput A→B, {mode}")
        await bench_throughput(pair, body, counts, table)
        _log(f"(c) probed moves, {mode}")
        await bench_probed(pair, counts, table, breakdown)


# -- two hosts in this process -------------------------------------------------


@contextlib.asynccontextmanager
async def in_process(host: Host) -> AsyncIterator[Host]:
    """Start ``host`` in this process, yield it, stop it within `STOP_TIMEOUT`."""
    await host.start()
    try:
        yield host
    finally:
        try:
            await asyncio.wait_for(host.stop(), STOP_TIMEOUT)
        except TimeoutError:
            _log(f"warning: in-process host {host.name} did not stop in {STOP_TIMEOUT:g} s")


async def bench_same_host(
    workdir: Path, fsync: bool, counts: Counts, table: Table, breakdown: Breakdown
) -> None:
    """(d) dispatch between two in-process hosts: the envelope is linked, not sent."""
    mode = "fsync" if fsync else "no fsync"
    state = workdir / f"same-host-{mode.replace(' ', '-')}"
    async with (
        in_process(Host(name="alpha", state_dir=state, transfer_fsync=fsync)) as a,
        in_process(Host(name="beta", state_dir=state, peers=(a.url,), transfer_fsync=fsync)) as b,
        AsyncHostClient(a.url) as ca,
        AsyncHostClient(b.url) as cb,
    ):
        deadline = time.monotonic() + JOIN_TIMEOUT
        while min(len(h.mesh.hosts(online=True)) for h in (a, b)) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the in-process hosts did not form one mesh")
            await asyncio.sleep(0.05)
        for size in counts.same_host:
            reps = counts.same_host_reps
            moves = [(await move_once(ca, cb, size))[0] for _ in range(reps)]
            body = memoryview(bytes(range(256)) * (size // 256))
            base = [
                await asyncio.to_thread(file_round_trip, state / f"baseline-{i}", body, fsync)
                for i in range(reps)
            ]
            del body
            ours, files = statistics.median(moves), statistics.median(base)
            at_target = size == TARGET_MOVE_SIZE
            table.add(
                "(d)",
                f"same-host move (2 hosts, 1 process), {size_name(size)}, {mode}: median of {reps}",
                f"{rate(size, ours)} ({ours * MS:.1f} ms)",
                baseline=(
                    f"{rate(size, files)} (write a file{', fsync' if fsync else ''}, read it back)"
                ),
                ratio=files / ours,
                target="≥ 1 GB/s" if at_target else "",
                met=size / ours >= TARGET_SAME_HOST if at_target else None,
            )
        size = max(counts.same_host)
        probe = Probe({}, a.config.home / "transfers" / "out", b.config.home / "transfers" / "in")
        _took, marks = await move_once(ca, cb, size, probe)
        breakdown.add(f"same host, {mode}, {size_name(size)}", marks)


# -- the run -------------------------------------------------------------------


async def run(counts: Counts, *, only_mid: bool = False) -> tuple[Table, Breakdown]:
    table, breakdown = Table(FIGURE_HEAD), Breakdown()
    with tempfile.TemporaryDirectory(prefix="paglets-bench-mobility-") as tmp:
        workdir = Path(tmp)
        async with running("sink", sink_argv(workdir / "sink"), workdir) as sink:
            largest = max(MID_ROUND_SIZES) if only_mid else max(counts.reps)
            body = memoryview(bytes(range(256)) * (largest // 256))
            for mode, flag in MODES:
                here = workdir / mode.replace(" ", "-")
                await bench_mode(
                    mode, flag, here, sink.url, body, counts, table, breakdown, only_mid=only_mid
                )
            del body  # before the in-process hosts start their zygotes
        for fsync in () if only_mid else (True, False):
            _log(f"(d) same-host move, {'fsync' if fsync else 'no fsync'}")
            await bench_same_host(workdir, fsync, counts, table, breakdown)
    return table, breakdown


async def run_until_signalled(counts: Counts, *, only_mid: bool = False) -> tuple[Table, Breakdown]:
    """:func:`run`, cancelled (so its servers get stopped) on SIGTERM as on Ctrl-C."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("not running in a task")
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(counts, only_mid=only_mid)


def leftovers() -> int:
    """Kill and count what this process started and left behind (in-process hosts' too)."""
    left = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            _log(
                f"warning: pid {proc.pid} ({' '.join(proc.cmdline())[:80]}) left behind; killing it"
            )
            proc.kill()
    return len(left)


def main() -> None:
    parser = argparse.ArgumentParser(description="The paglets mobility benchmark.")
    parser.add_argument("--quick", action="store_true", help="reduced counts: a smoke test")
    parser.add_argument(
        "--only-mid", action="store_true", help="only (e), the 1-4 MiB moves against POSTs"
    )
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    started, load = time.perf_counter(), os.getloadavg()
    try:
        table, breakdown = asyncio.run(run_until_signalled(counts, only_mid=args.only_mid))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every server this run started has been stopped", file=sys.stderr)
        sys.exit(130)
    left = leftovers()
    print(f"## paglets mobility benchmark{' (--quick)' if args.quick else ''}\n")
    print(f"Machine: {machine()}.\n")
    print(table.markdown())
    print(
        "\nMB/s are 10^6 bytes per second, of the paglet's state size, over the whole "
        "move: from the client's `dispatch()` request until the paglet, started on B, "
        "answered a first message there. Ratios are measured / baseline. Hosts A and B "
        "and the sink were "
        "each their own process on loopback; the same-host rows ran two hosts in this "
        f"process. Run took {time.perf_counter() - started:.0f} s; load average before it "
        f"{load[0]:.2f}, after it {os.getloadavg()[0]:.2f}; processes left behind: {left}."
    )
    print("\n### Where the time of one move goes\n")
    print(breakdown.markdown())
    print(
        "\nFrom the wall clock: the client's call, a thread in the benchmark that lists "
        f"the source's spool and the target's inbox every {PROBE_INTERVAL * MS:g} ms, and "
        "the hosts' event timestamps. † spans the phases above it whose marks were "
        "missed (too short to be seen); the empty hop uses the events alone, and its "
        "column holds medians over the hops, which need not add up to the total."
    )


if __name__ == "__main__":
    main()
