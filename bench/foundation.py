"""The foundation benchmark: what a paglet costs, against baselines from the same run.

::

    uv run python bench/foundation.py            # the full run (about half a minute)
    uv run python bench/foundation.py --quick    # reduced counts, a smoke test

Every server under test runs as its own process (``python -m paglets.cli.host``,
and ``bench/_echo_server.py`` for the baselines), so the client here never
shares an event loop with what it measures. Prints a Markdown table on stdout
(progress on stderr); ``bench/README.md`` says what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import psutil

from paglets import AsyncHostClient, AsyncPagletProxy, __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
COUNTER = "examples.counter:Counter"
THEN = "2b5e92f"
"""The code that had landed when the faster-core work (issue 20) was asked for:
messages over HTTP only, no proxy channel. Its host runs beside ours in (g), for
the figure the issue set against that code ("3x today's sync throughput with 16
concurrent senders")."""
PRELOAD = "examples.counter"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
IDLE_WINDOW = 3.0
RTT_BLOCKS = 8
CREATE_BLOCKS = 6
RATE_ROUNDS = 4
ONEWAY_WINDOW = 1000  # one-way messages waiting for their acceptance at once
TARGET_CREATE = 0.010  # (a) median, seconds
TARGET_RTT_RATIO = 1.5  # (b) over bare aiohttp
TARGET_HEALTH_P90 = 0.100  # (e) "responsive": /health p90, seconds
MS = 1000.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Counts:
    """How much of everything one run does."""

    create: int  # timed create->first reply, per host
    rtt: int  # timed sequential round trips
    warmup: int  # untimed round trips before any timed series
    messages: int  # messages per throughput series
    held: int  # paglets held at once in (e)
    health: int  # timed /health calls
    batch: int = 10  # creations in flight at once in (e)


FULL = Counts(create=60, rtt=2000, warmup=200, messages=4000, held=100, health=300)
QUICK = Counts(create=6, rtt=100, warmup=20, messages=300, held=10, health=30)


# -- processes under test ------------------------------------------------------


@dataclass
class Server:
    """One server process started by this script, known by its ready file."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path
    url: str = ""
    pid: int = 0
    descendants: list[int] = field(default_factory=list)

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)


@contextlib.asynccontextmanager
async def running(
    name: str, argv: Sequence[str], workdir: Path, *, poll: float = 0.02, cwd: Path = ROOT
) -> AsyncIterator[Server]:
    """Start ``argv`` (which must honour ``--ready-file``) in ``cwd``, yield it, always stop it.

    The ready file is looked for every ``poll`` seconds.
    """
    ready = workdir / f"{name}.ready"
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            "--ready-file",
            str(ready),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    server = Server(name, proc, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; its log:\n{_tail(log)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), poll)
        info = json.loads(ready.read_text())
        server.url, server.pid = info["url"], int(info["pid"])
        yield server
    finally:
        await _stop(server)


async def _stop(server: Server) -> None:
    """SIGTERM, wait, and check the server left no process behind."""
    proc = server.proc
    with contextlib.suppress(psutil.Error):
        server.descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            print(f"warning: {server.name} ignored SIGTERM; killing it", file=sys.stderr)
            proc.kill()
            await proc.wait()
    if proc.returncode not in (0, -signal.SIGTERM):
        print(f"warning: {server.name} exited {proc.returncode}", file=sys.stderr)
    deadline = time.monotonic() + STOP_TIMEOUT
    left = _alive(server.descendants)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        left = _alive(server.descendants)
    for pid in left:
        print(f"warning: {server.name} left pid {pid} behind; killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def host_argv(
    workdir: Path, name: str, preload: tuple[str, ...], profile: Path | None
) -> list[str]:
    runner = [sys.executable]
    if profile is not None:
        runner += ["-m", "cProfile", "-o", str(profile / f"host-{name}.pstats")]
    argv = [*runner, "-m", "paglets.cli.host", "--name", name, "--port", "0"]
    argv += ["--state-dir", str(workdir / "state"), "--log-level", "warning"]
    for module in preload:
        argv += ["--preload", module]
    return argv


def build_then(rev: str, workdir: Path) -> Path | None:
    """A checkout of ``rev`` with its own virtualenv, made by git and uv in ``workdir``;
    ``None`` when it cannot be made (no git history with ``rev``, or no uv)."""
    uv = shutil.which("uv")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=False
    )
    if uv is None or archive.returncode != 0:
        return None
    tree = workdir / f"then-{rev}"
    tree.mkdir()
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    subprocess.run([uv, "sync", "--frozen", "--quiet", "--project", str(tree)], check=True)
    return tree


@contextlib.asynccontextmanager
async def then_host(rev: str, workdir: Path) -> AsyncIterator[Server | None]:
    """A host of the code at ``rev`` (`build_then`), yielded running; else ``None``."""
    tree = await asyncio.to_thread(build_then, rev, workdir)
    if tree is None:
        print(f"(g) skipped: no git history with {rev}, or no uv to build it", file=sys.stderr)
        yield None
        return
    argv = [str(tree / ".venv" / "bin" / "python"), "-m", "paglets.cli.host", "--name", "then"]
    argv += ["--port", "0", "--state-dir", str(workdir / "then-state"), "--log-level", "warning"]
    async with running("bench-then", argv, workdir, cwd=tree) as server:
        yield server


def echo_argv() -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "_echo_server.py")]


# -- measuring -----------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """Latency samples in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        if len(self.samples) < 2:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=10, method="inclusive")[8]

    def ms(self, digits: int = 2) -> str:
        return f"{self.median * MS:.{digits}f} / {self.p90 * MS:.{digits}f} ms"


async def latency(call: Callable[[], Awaitable[object]], n: int) -> Series:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return Series(tuple(samples))


async def burst(senders: Sequence[Callable[[], Awaitable[object]]], total: int) -> float:
    """Seconds ``senders``, running at once, take until ``total`` messages are answered."""
    left = total

    async def work(send: Callable[[], Awaitable[object]]) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    start = time.perf_counter()
    await asyncio.gather(*(work(s) for s in senders))
    return time.perf_counter() - start


async def rates(
    series: Sequence[Sequence[Callable[[], Awaitable[object]]]], total: int, warmup: int
) -> list[float]:
    """Messages per second of each group of concurrent senders, in alternating rounds."""
    for senders in series:
        per_sender = max(1, warmup // len(senders))
        await asyncio.gather(*(_repeat(s, per_sender) for s in senders))
    spent = [0.0] * len(series)
    per_round = -(-total // RATE_ROUNDS)
    for _ in range(RATE_ROUNDS):  # alternate, so drift in the machine hits all alike
        for i, senders in enumerate(series):
            spent[i] += await burst(senders, per_round)
    return [per_round * RATE_ROUNDS / t for t in spent]


async def _repeat(call: Callable[[], Awaitable[object]], n: int) -> None:
    for _ in range(n):
        await call()


def get_sender(proxy: AsyncPagletProxy) -> Callable[[], Awaitable[object]]:
    return lambda: proxy.send("get")


def echo_sender(client: AsyncHostClient) -> Callable[[], Awaitable[object]]:
    """Posts what ``proxy.send("get")`` posts, through the same client code path."""

    def send() -> Awaitable[object]:
        body = {
            "kind": "get",
            "args": {},
            "priority": 0,
            "message_id": uuid.uuid4().hex,
            "sender": None,
            "mode": "sync",
            "timeout": None,
        }
        return client.request("POST", "/echo", body)

    return send


async def oneway_rate(proxy: AsyncPagletProxy, n: int) -> float:
    """One-way messages per second into one paglet, from the first sent to the last handled.

    1,000 senders each send their share one after another, so at most 1,000
    are waiting for their acceptance at once, well within the mailbox's bound
    (a sender past it gets ``MailboxFullError``, 429).
    """
    senders = ONEWAY_WINDOW

    async def share(count: int) -> None:
        for _ in range(count):
            await proxy.send_oneway("get")

    start = time.perf_counter()
    await asyncio.gather(*(share(n // senders + (i < n % senders)) for i in range(senders)))
    await proxy.send("get")  # queued behind all of them: they were handled
    return n / (time.perf_counter() - start)


async def create_first_reply(client: AsyncHostClient, n: int) -> list[float]:
    """``n`` times create->first reply, each paglet disposed outside the timed part."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        proxy = await client.create(COUNTER)
        await proxy.send("get")
        samples.append(time.perf_counter() - start)
        await proxy.dispose()
    return samples


async def client_create(client: AsyncHostClient) -> AsyncPagletProxy:
    """Create a counter and wait for its first reply."""
    proxy = await client.create(COUNTER)
    await proxy.send("get")
    return proxy


async def create_many(client: AsyncHostClient, n: int, batch: int) -> list[AsyncPagletProxy]:
    gate = asyncio.Semaphore(batch)

    async def one() -> AsyncPagletProxy:
        async with gate:
            return await client_create(client)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def dispose_many(proxies: Sequence[AsyncPagletProxy], batch: int) -> None:
    gate = asyncio.Semaphore(batch)

    async def one(proxy: AsyncPagletProxy) -> None:
        async with gate:
            await proxy.dispose()

    await asyncio.gather(*(one(p) for p in proxies))


def memory(pid: int) -> tuple[int, int]:
    """RSS and USS of ``pid`` in bytes."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss, info.uss


def cpu_seconds(procs: Sequence[psutil.Process], *, reaped: bool = False) -> float:
    """CPU seconds (user + system) used so far by ``procs``; processes gone count 0.

    With ``reaped``, also what their children used that they have reaped
    (``children_*`` times: a paglet's process is reaped by its zygote).
    """
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
            if reaped:
                total += times.children_user + times.children_system
    return total


# -- the report ----------------------------------------------------------------


FOUNDATION_HEAD = ("", "measure", "paglets", "baseline (same run)", "ratio", "target", "")
FIGURE_HEAD = ("", "figure", "measured", "baseline (same run)", "ratio", "target", "met?")


@dataclass
class Table:
    """The benchmark's table: one row per figure, grouped by section ``(a)``, ``(b)``, ..."""

    head: tuple[str, ...] = FOUNDATION_HEAD
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add(
        self,
        section: str,
        figure: str,
        measured: str,
        *,
        baseline: str = "",
        ratio: float | None = None,
        target: str = "",
        met: bool | None = None,
    ) -> None:
        times = "" if ratio is None else f"{ratio:.2f}x"
        verdict = "" if met is None else ("met" if met else "**missed**")
        self.rows.append((section, figure, measured, baseline, times, target, verdict))
        print(f"  {section} {figure}: {measured}  {baseline}  {times}".rstrip(), file=sys.stderr)

    def markdown(self) -> str:
        lines = [md_row(self.head), md_row(tuple("---" for _ in self.head))]
        lines += [md_row(row) for row in sorted(self.rows, key=lambda row: row[0])]
        return "\n".join(lines)


def md_row(cells: tuple[str, ...]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{psutil.cpu_count()} logical / {psutil.cpu_count(logical=False)} physical cores "
        f"({cpu}), {mib(psutil.virtual_memory().total)} RAM; "
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.release()}; paglets {__version__}, "
        f"aiohttp {aiohttp.__version__}, psutil {psutil.__version__}"
    )


# -- the run -------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    """What (e) compares with: one idle paglet on the host, and the zygote."""

    proxy: AsyncPagletProxy
    pid: int
    zygote: psutil.Process
    host_rss: int
    health: Series
    rtt: Series


async def bench_create(hosts: dict[str, AsyncHostClient], counts: Counts, table: Table) -> None:
    """(a) create->first reply: the first on each host, then alternating blocks."""
    cold = {how: (await create_first_reply(client, 1))[0] for how, client in hosts.items()}
    samples: dict[str, list[float]] = {how: [] for how in hosts}
    block = -(-counts.create // CREATE_BLOCKS)
    for _ in range(CREATE_BLOCKS):  # alternate, so drift in the machine hits both alike
        for how, client in hosts.items():
            samples[how] += await create_first_reply(client, block)
    for how in hosts:
        series = Series(tuple(samples[how]))
        table.add(
            "(a)",
            f"create→first reply, {how}, median / p90 of {len(series.samples)}",
            series.ms(),
            target="median ≤ 10 ms",
            met=series.median <= TARGET_CREATE,
        )
    for how in hosts:
        table.add("(a)", f"first create→first reply after start, {how}", f"{cold[how] * MS:.2f} ms")


async def bench_messages(
    proxy: AsyncPagletProxy,
    bare: AsyncHostClient,
    hop: AsyncHostClient,
    counts: Counts,
    table: Table,
    *,
    then: AsyncHostClient | None = None,
) -> Series:
    """(b) against (c): round trips in alternating blocks, then throughput.

    ``proxy`` talks through the proxy channel; a second client sends the same
    messages to the same paglet as HTTP requests. With ``then`` (a client of the
    host of `THEN`), the same over HTTP to a paglet there, in the same blocks (g).
    """
    async with contextlib.AsyncExitStack() as stack:
        http_client = await stack.enter_async_context(
            AsyncHostClient(proxy.client.url, channel=False)
        )
        then_proxy = await client_create(then) if then is not None else None
        if then_proxy is not None:
            stack.push_async_callback(then_proxy.dispose)
        return await _bench_messages(
            proxy, http_client.proxy(proxy.agent_id), bare, hop, counts, table, then_proxy
        )


async def _bench_messages(  # noqa: PLR0917 - the two ways in, the two baselines, then's
    proxy: AsyncPagletProxy,
    http: AsyncPagletProxy,
    bare: AsyncHostClient,
    hop: AsyncHostClient,
    counts: Counts,
    table: Table,
    then: AsyncPagletProxy | None,
) -> Series:
    sends = {
        "ours": get_sender(proxy),
        "http": get_sender(http),
        "bare": echo_sender(bare),
        "hop": echo_sender(hop),
    }
    if then is not None:
        sends["then"] = get_sender(then)
    for send in sends.values():
        await _repeat(send, counts.warmup)
    block = -(-counts.rtt // RTT_BLOCKS)
    samples: dict[str, list[float]] = {name: [] for name in sends}
    for _ in range(RTT_BLOCKS):  # alternate, so drift in the machine hits all alike
        for name, send in sends.items():
            samples[name] += (await latency(send, block)).samples
    ours, over_http, base, hop_rtt = (
        Series(tuple(samples[k])) for k in ("ours", "http", "bare", "hop")
    )
    table.add(
        "(b)",
        f"round trip over HTTP, median / p90 of {len(over_http.samples)} (1 sender, keep-alive)",
        over_http.ms(3),
        baseline=f"{base.ms(3)} (bare aiohttp echo)",
        ratio=over_http.median / base.median,
        target="≤ 1.5x bare aiohttp",
        met=over_http.median / base.median <= TARGET_RTT_RATIO,
    )
    table.add(
        "(b)",
        "round trip through the proxy channel (1 sender)",
        ours.ms(3),
        baseline=f"{base.ms(3)} (bare aiohttp HTTP echo)",
        ratio=ours.median / base.median,
        target="≤ 1.0x bare aiohttp HTTP",
        met=ours.median <= base.median,
    )
    table.add(
        "(b)",
        "round trip, against the echo through one child process",
        ours.ms(3),
        baseline=f"{hop_rtt.ms(3)} (aiohttp + child hop)",
        ratio=ours.median / hop_rtt.median,
    )
    table.add(
        "(c)",
        "round trip of the echo through one child process (not paglets)",
        hop_rtt.ms(3),
        baseline=f"{base.ms(3)} (bare aiohttp echo)",
        ratio=hop_rtt.median / base.median,
    )
    if then is not None:
        then_rtt = Series(tuple(samples["then"]))
        table.add(
            "(g)",
            f"round trip over HTTP to a host of {THEN} (before this work)",
            then_rtt.ms(3),
            baseline=f"{base.ms(3)} (bare aiohttp echo)",
            ratio=then_rtt.median / base.median,
        )
    eight = [proxy, *[await client_create(proxy.client) for _ in range(7)]]
    one, http16, bare16, hop16, spread, *then16 = await rates(
        [
            [sends["ours"]] * 16,
            [sends["http"]] * 16,
            [sends["bare"]] * 16,
            [sends["hop"]] * 16,
            [get_sender(p) for p in eight for _ in range(2)],
            *([[sends["then"]] * 16] if then is not None else []),
        ],
        counts.messages,
        counts.warmup,
    )
    for figure in then16:
        table.add(
            "(g)",
            "messages/s through the channel, 1 paglet, 16 senders",
            f"{one:,.0f}",
            baseline=f"{figure:,.0f} (HTTP to a host of {THEN}, 16 senders)",
            ratio=one / figure,
            target=f"≥ 3x {THEN}'s",
            met=one >= 3 * figure,
        )
    await dispose_many(eight[1:], counts.batch)
    table.add(
        "(b)",
        "messages/s through the channel, 1 paglet, 16 senders",
        f"{one:,.0f}",
        baseline=f"{http16:,.0f} (the same over HTTP)",
        ratio=one / http16,
        target="≥ 3x over HTTP",
        met=one >= 3 * http16,
    )
    procs = await _client_host_child(proxy)
    before = [cpu_seconds([p]) for p in procs]
    oneway = await oneway_rate(proxy, counts.messages * 4)
    spent = [
        (cpu_seconds([p]) - b) / (counts.messages * 4) for p, b in zip(procs, before, strict=True)
    ]
    table.add(
        "(b)",
        "one-way messages/s into 1 paglet through the channel, until handled",
        f"{oneway:,.0f}",
        baseline=f"{bare16:,.0f} (bare, 16 senders)",
        ratio=oneway / bare16,
        target="≥ 10,000/s",
        met=oneway >= 10_000,
    )
    table.add(
        "(b)",
        "CPU per one-way message above: client / host / child",
        " / ".join(f"{t * 1e6:.0f}" for t in spent) + f" µs (sum {sum(spent) * 1e6:.0f} µs)",
    )
    for what, figure in (("HTTP, 1 paglet, 16 senders", http16), ("8 paglets x 2 senders", spread)):
        table.add(
            "(b)",
            f"messages/s, {what}",
            f"{figure:,.0f}",
            baseline=f"{bare16:,.0f} (bare, 16 senders)",
            ratio=figure / bare16,
        )
    table.add(
        "(c)",
        "messages/s of the echo through one child process, 16 senders",
        f"{hop16:,.0f}",
        baseline=f"{bare16:,.0f} (bare, 16 senders)",
        ratio=hop16 / bare16,
    )
    return ours


async def _client_host_child(proxy: AsyncPagletProxy) -> list[psutil.Process]:
    """This process, the host ``proxy`` talks to and its paglet's child."""
    host = await proxy.client.host_info()
    child = (await proxy.info()).pid
    if child is None:
        raise RuntimeError(f"paglet {proxy.agent_id} has no child process")
    return [psutil.Process(), psutil.Process(host.pid), psutil.Process(child)]


async def bench_memory(
    host: Server, proxy: AsyncPagletProxy, rtt: Series, counts: Counts, table: Table
) -> Idle:
    """(d) the host, one idle child and the zygote; pre-started children not counted."""
    health = await latency(proxy.client.health, counts.health)
    pid = (await proxy.info()).pid
    zygote = psutil.Process(pid).parent() if pid is not None else None
    if pid is None or zygote is None:
        raise RuntimeError(f"paglet {proxy.agent_id} has no child process")
    host_rss = host.process().memory_info().rss
    child_rss, child_uss = memory(pid)
    zygote_rss, zygote_uss = memory(zygote.pid)
    pooled = len(zygote.children()) - 1
    table.add("(d)", "host RSS (1 idle paglet)", mib(host_rss))
    table.add("(d)", "one idle child: RSS / USS", f"{mib(child_rss)} / {mib(child_uss)}")
    table.add(
        "(d)",
        f"zygote: RSS / USS (it has {pooled} pre-started children besides)",
        f"{mib(zygote_rss)} / {mib(zygote_uss)}",
    )
    return Idle(proxy, pid, zygote, host_rss, health, rtt)


async def bench_held(host: Server, idle: Idle, counts: Counts, table: Table) -> None:
    """(e) create many idle paglets, hold them, see that the host still answers."""
    client, n = idle.proxy.client, counts.held
    start = time.perf_counter()
    held = await create_many(client, n, counts.batch)
    took = time.perf_counter() - start
    table.add(
        "(e)",
        f"create {n} paglets, {counts.batch} at a time, each to its first reply",
        f"{took:.2f} s ({took / n * MS:.1f} ms per paglet)",
    )
    pids = [pid for p in held if (pid := (await p.info()).pid) is not None]
    uss = sum(memory(pid)[1] for pid in pids)
    host_rss = host.process().memory_info().rss
    table.add(
        "(e)",
        f"host RSS / children USS total, holding {n + 1}",
        f"{mib(host_rss)} / {mib(uss)} ({mib(uss / n)} each)",
        baseline=f"{mib(idle.host_rss)} (host RSS, 1 paglet)",
        ratio=host_rss / idle.host_rss,
    )
    health = await latency(client.health, counts.health)
    procs = [host.process(), idle.zygote, *(psutil.Process(p) for p in [idle.pid, *pids])]
    alive = sum(p.is_running() for p in procs[2:])
    table.add(
        "(e)",
        f"/health median / p90 of {counts.health}, holding {n + 1}",
        health.ms(),
        baseline=f"{idle.health.ms()} (1 paglet)",
        ratio=health.median / idle.health.median,
        target=f"{n} held, host responsive",
        met=alive == n + 1 and health.p90 <= TARGET_HEALTH_P90,
    )
    rtt = await latency(get_sender(held[-1]), max(100, counts.rtt // 4))
    table.add(
        "(e)",
        f"round trip median / p90 of {len(rtt.samples)}, holding {n + 1}",
        rtt.ms(3),
        baseline=f"{idle.rtt.ms(3)} (1 paglet)",
        ratio=rtt.median / idle.rtt.median,
    )
    # Idle on purpose: what do held paglets cost at rest (heartbeats, timers)?
    before, wall = cpu_seconds(procs), time.perf_counter()
    await asyncio.sleep(IDLE_WINDOW)
    at_rest = (cpu_seconds(procs) - before) / (time.perf_counter() - wall)
    table.add(
        "(e)",
        f"CPU at rest: host + zygote + {n + 1} children, over {IDLE_WINDOW:g} s",
        f"{at_rest * 100:.1f} % of one core",
    )
    start = time.perf_counter()
    await dispose_many(held, counts.batch)
    took = time.perf_counter() - start
    table.add("(e)", f"dispose {n}, {counts.batch} at a time", f"{took:.2f} s")


async def bench_floor(table: Table) -> None:
    """(f) one process-to-process round trip, across CPUs and on one CPU (`_pingpong.py`)."""
    script = Path(__file__).with_name("_pingpong.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    floor = json.loads(out)
    one = floor["one_cpu"]
    table.add("(f)", "socketpair round trip, both processes on one CPU", f"{one * 1e6:.0f} µs")
    if "two_cpus" in floor:
        two = floor["two_cpus"]
        table.add(
            "(f)",
            "socketpair round trip, each process on its own CPU",
            f"{two * 1e6:.0f} µs",
            baseline=f"one CPU {one * 1e6:.0f} µs",
            ratio=two / one,
        )


async def run(counts: Counts, profile: Path | None) -> Table:
    table = Table()
    print("(f) the machine's floor: a round trip between two processes", file=sys.stderr)
    await bench_floor(table)
    with tempfile.TemporaryDirectory(prefix="paglets-bench-") as tmp:
        workdir = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            argv = host_argv(workdir, "default", (), profile)
            host = await stack.enter_async_context(running("bench-default", argv, workdir))
            client = await stack.enter_async_context(AsyncHostClient(host.url))
            print(f"(a) on the default host and on one with --preload {PRELOAD}", file=sys.stderr)
            argv = host_argv(workdir, "preload", (PRELOAD,), profile)
            async with (
                running("bench-preload", argv, workdir) as preloaded,
                AsyncHostClient(preloaded.url) as preloaded_client,
            ):
                hosts = {"default host": client, f"--preload {PRELOAD}": preloaded_client}
                await bench_create(hosts, counts, table)
            print(
                f"(b), (c) and (g): the default host, two aiohttp echo servers, {THEN}'s host",
                file=sys.stderr,
            )
            echo = await stack.enter_async_context(running("bench-echo", echo_argv(), workdir))
            argv = [*echo_argv(), "--hop"]
            echo_hop = await stack.enter_async_context(running("bench-echo-hop", argv, workdir))
            bare = await stack.enter_async_context(AsyncHostClient(echo.url))
            hop = await stack.enter_async_context(AsyncHostClient(echo_hop.url))
            proxy = await client_create(client)
            then = await stack.enter_async_context(then_host(THEN, workdir))
            then_client = None
            if then is not None:
                then_client = await stack.enter_async_context(AsyncHostClient(then.url))
            rtt = await bench_messages(proxy, bare, hop, counts, table, then=then_client)
            print("(d) and (e) on the default host", file=sys.stderr)
            idle = await bench_memory(host, proxy, rtt, counts, table)
            await bench_held(host, idle, counts, table)
            await proxy.dispose()
    return table


async def run_until_signalled(counts: Counts, profile: Path | None) -> Table:
    """:func:`run`, cancelled (so its servers get stopped) on SIGTERM as on Ctrl-C."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("not running in a task")
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(counts, profile)


def main() -> None:
    parser = argparse.ArgumentParser(description="The paglets foundation benchmark.")
    parser.add_argument("--quick", action="store_true", help="reduced counts: a smoke test")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the hosts under cProfile and write host-*.pstats into DIR",
    )
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    started, load = time.perf_counter(), os.getloadavg()
    try:
        table = asyncio.run(run_until_signalled(counts, args.profile))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every server this run started has been stopped", file=sys.stderr)
        sys.exit(130)
    print(f"## paglets foundation benchmark{' (--quick)' if args.quick else ''}\n")
    print(f"Machine: {machine()}.\n")
    print(table.markdown())
    print(
        "\nEvery server ran as its own process. Baselines come from this run: bare aiohttp "
        "JSON echo servers (c), one plain and one that passes each body through a child "
        "process, driven through the same AsyncHostClient code path and warm-up, in "
        f"blocks alternating with the host. Run took {time.perf_counter() - started:.0f} s; "
        f"load average before it {load[0]:.2f}, after it {os.getloadavg()[0]:.2f}."
    )


if __name__ == "__main__":
    main()
