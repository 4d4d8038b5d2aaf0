"""The durability benchmark: deactivation, activation and host restarts, against this run.

::

    uv run python bench/durability.py            # the full run (about a minute)
    uv run python bench/durability.py --quick    # reduced counts, a smoke test

Every host is its own ``paglets-host`` process on loopback (``--port 0``,
``--ready-file``, ``--state-dir`` in a temporary directory), so the client here
never shares an event loop with what it measures. Prints a Markdown table on
stdout (progress on stderr); ``bench/README.md`` says what each row means:

- (a) activation on message against create→first reply, alternating blocks;
- (b) deactivate→activate round trips, empty and with a 16 MiB state, on a host
  with ``--transfer-fsync`` (the default) and one with ``--no-transfer-fsync``,
  alternating, against writing and reading the same bytes as a plain file;
- (c) a host restart with 200 inactive paglets against a host start with an
  empty state directory, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from foundation import FIGURE_HEAD, MIB, MS, ROOT, Series, Table, machine, mib

from paglets import AsyncHostClient, AsyncPagletProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

COUNTER = "examples.counter:Counter"
TRAVELER = "examples.travel:Traveler"
MB = 1_000_000  # MB/s here are 10^6 bytes per second
READY_TIMEOUT = 60.0
READY_POLL = 0.002  # seconds between looks for the ready file: the start-time resolution
STOP_TIMEOUT = 30.0
BLOCKS = 6  # (a) alternates create and activation in this many blocks
BATCH = 10  # (c) creations and deactivations in flight at once
TARGET_ACTIVATE_RATIO = 2.0  # (a) activation on message over create→first reply
MODES = (("fsync", "--transfer-fsync"), ("no fsync", "--no-transfer-fsync"))


@dataclass(frozen=True)
class Counts:
    """How much of everything one run does."""

    create: int  # (a) timed create→first reply, and as many timed activations
    trips: int  # (b) timed round trips of the empty traveler, per mode
    big_trips: int  # (b) timed round trips of the 16 MiB traveler, per mode
    inactive: int  # (c) inactive paglets the restarted host holds
    restarts: int  # (c) timed starts, each of the empty and of the full host
    payload: int = 16 * MIB  # (b) the big traveler's state


FULL = Counts(create=30, trips=20, big_trips=8, inactive=200, restarts=3)
QUICK = Counts(create=5, trips=3, big_trips=2, inactive=20, restarts=1)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- host processes ------------------------------------------------------------


@dataclass
class Launched:
    """One host process started by this script, with when it started and was ready."""

    name: str
    proc: asyncio.subprocess.Process
    launched: float  # perf_counter just before the exec
    ready: float = 0.0  # perf_counter when its ready file appeared
    url: str = ""
    stopped: float = 0.0  # seconds from SIGTERM to its exit

    @property
    def start_time(self) -> float:
        return self.ready - self.launched


@dataclass
class Leftovers:
    """Descendants of hosts that outlived them (killed, and reported in the footer)."""

    pids: list[int] = field(default_factory=list)


LEFTOVERS = Leftovers()


@contextlib.asynccontextmanager
async def host(workdir: Path, name: str, state_dir: Path, *flags: str) -> AsyncIterator[Launched]:
    """Start a host, wait for its ready file, yield it, always stop it (SIGTERM)."""
    ready = workdir / f"{name}.ready"
    log = workdir / f"{name}.log"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "paglets.cli.host", "--name", name, "--port", "0"]
    argv += ["--ready-file", str(ready), "--state-dir", str(state_dir)]
    argv += ["--log-level", "warning", *flags]
    with log.open("ab") as out:
        launched = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    server = Launched(name, proc, launched)
    try:
        deadline = launched + READY_TIMEOUT
        while not ready.exists():
            if proc.returncode is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"{name} did not start; its log:\n{_tail(log)}")
            await asyncio.sleep(READY_POLL)
        server.ready = time.perf_counter()
        server.url = json.loads(ready.read_text())["url"]
        yield server
    finally:
        await _stop(server)


async def _stop(server: Launched) -> None:
    """SIGTERM, wait, time it, and check the host left no process behind."""
    proc = server.proc
    descendants: list[int] = []
    with contextlib.suppress(psutil.Error):
        descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    start = time.perf_counter()
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            _log(f"warning: {server.name} ignored SIGTERM; killing it")
            proc.kill()
            await proc.wait()
    server.stopped = time.perf_counter() - start
    if proc.returncode not in (0, -signal.SIGTERM):
        _log(f"warning: {server.name} exited {proc.returncode}")
    deadline = time.monotonic() + STOP_TIMEOUT
    left = _alive(descendants)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        left = _alive(descendants)
    for pid in left:
        _log(f"warning: {server.name} left pid {pid} behind; killing it")
        LEFTOVERS.pids.append(pid)
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


# -- measuring -----------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await call()
    return time.perf_counter() - start, result


def series(samples: Sequence[float]) -> Series:
    return Series(tuple(samples))


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MB:,.0f} MB/s" if seconds > 0 else "n/a"


def write_file(path: Path, body: bytes, sync: bool) -> float:
    """Seconds to replace ``path`` with ``body`` as a checkpoint is written.

    A temporary file in the same directory, written, fsynced (with ``sync``),
    renamed into place, and the directory fsynced (with ``sync``).
    """
    start = time.perf_counter()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as out:
        out.write(body)
        out.flush()
        if sync:
            os.fsync(out.fileno())
    Path(tmp).replace(path)
    if sync:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return time.perf_counter() - start


def read_file(path: Path) -> float:
    """Seconds to read ``path`` whole (from the page cache, as it was just written)."""
    start = time.perf_counter()
    path.read_bytes()
    return time.perf_counter() - start


async def in_batches(
    items: Sequence[Any], call: Callable[[Any], Awaitable[Any]], batch: int
) -> list[Any]:
    gate = asyncio.Semaphore(batch)

    async def one(item: Any) -> Any:
        async with gate:
            return await call(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def statuses(client: AsyncHostClient) -> dict[str, str]:
    return {info.agent_id: info.status for info in await client.list()}


async def expect_inactive(client: AsyncHostClient, proxies: Sequence[AsyncPagletProxy]) -> None:
    seen = await statuses(client)
    wrong = [p.agent_id for p in proxies if seen.get(p.agent_id) != "inactive"]
    if wrong:
        raise RuntimeError(f"{len(wrong)} paglets are not inactive after deactivate(): {wrong[:3]}")


# -- the report ----------------------------------------------------------------


def filesystem(path: Path) -> str:
    """The file system type and device ``path`` is on (fsync costs depend on it)."""
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = Path(part.mountpoint)
        if path.is_relative_to(mount) and (best is None or len(part.mountpoint) > len(best[0])):
            best = (part.mountpoint, part.fstype, part.device)
    if best is None:
        return "unknown file system"
    return f"{best[1]} ({best[2]} on {best[0]})"


# -- (a) activation on message -------------------------------------------------


async def create_first_reply(client: AsyncHostClient) -> tuple[float, AsyncPagletProxy]:
    start = time.perf_counter()
    proxy = await client.create(COUNTER)
    await proxy.send("increment")
    return time.perf_counter() - start, proxy


async def bench_activation(client: AsyncHostClient, counts: Counts, table: Table) -> Series:
    """Create→first reply, then the same paglets deactivated and woken by a message."""
    for _ in range(2):  # warm-up: the zygote imports the module, the pool warms up
        _took, proxy = await create_first_reply(client)
        await proxy.dispose()
    creates: list[float] = []
    deactivates: list[float] = []
    activations: list[float] = []
    blocks = min(BLOCKS, counts.create)
    per_block = -(-counts.create // blocks)
    for _ in range(blocks):  # alternate, so drift in the machine hits both alike
        proxies = []
        for _ in range(per_block):
            took, proxy = await create_first_reply(client)
            creates.append(took)
            proxies.append(proxy)
        deactivates += [(await timed(proxy.deactivate))[0] for proxy in proxies]
        await expect_inactive(client, proxies)
        for proxy in proxies:
            took, reply = await timed(lambda p=proxy: p.send("increment"))
            if reply != {"count": 2}:
                raise RuntimeError(f"{proxy.agent_id} lost its state: {reply!r}, not count 2")
            activations.append(took)
        for proxy in proxies:
            await proxy.dispose()
    create, deactivate, activate = series(creates), series(deactivates), series(activations)
    n = len(create.samples)
    table.add("(a)", f"create→first reply (Counter), median / p90 of {n}", create.ms())
    table.add(
        "(a)",
        f"activation on message: first `send` to an inactive Counter, median / p90 of {n}",
        activate.ms(),
        baseline=f"{create.ms()} (create→first reply)",
        ratio=activate.median / create.median,
        target="≤ 2x create→first reply",
        met=activate.median <= TARGET_ACTIVATE_RATIO * create.median,
    )
    table.add(
        "(a)",
        f"activation on message, p90 against create p90 (of {n})",
        f"{activate.p90 * MS:.2f} ms",
        baseline=f"{create.p90 * MS:.2f} ms",
        ratio=activate.p90 / create.p90,
    )
    table.add("(a)", f"deactivate() of a Counter, median / p90 of {n}", deactivate.ms())
    return create


# -- (b) deactivate→activate round trips ----------------------------------------


@dataclass
class Trips:
    """One mode's samples: (deactivate, activate) pairs and the plain-file baseline."""

    empty: list[tuple[float, float]] = field(default_factory=list)
    big: list[tuple[float, float]] = field(default_factory=list)
    checkpoint: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)


@dataclass
class Mode:
    name: str
    fsync: bool
    client: AsyncHostClient
    state_dir: Path
    empty: AsyncPagletProxy | None = None
    big: AsyncPagletProxy | None = None
    digest: str = ""
    trips: Trips = field(default_factory=Trips)


async def round_trip(proxy: AsyncPagletProxy) -> tuple[float, float]:
    off, _ = await timed(proxy.deactivate)
    on, _ = await timed(proxy.activate)
    return off, on


async def prepare(mode: Mode, counts: Counts) -> None:
    mode.empty = await mode.client.create(TRAVELER)
    await mode.empty.send("increment")
    mode.big = await mode.client.create(TRAVELER)
    size = await mode.big.send("payload", {"size": counts.payload})
    if size != counts.payload:
        raise RuntimeError(f"the traveler holds {size} bytes, not {counts.payload}")
    mode.digest = await mode.big.send("digest")
    expected = hashlib.sha256(bytes(range(256)) * (counts.payload // 256)).hexdigest()
    if mode.digest != expected:
        raise RuntimeError("the traveler's payload digest is not the expected one")


async def one_round(mode: Mode, rep: int, counts: Counts, body: bytes) -> None:
    """One round trip of each traveler (those still due), one checkpoint, one file."""
    if mode.empty is None or mode.big is None:
        raise RuntimeError("prepare() first")
    trips = mode.trips
    if rep < counts.trips:
        trips.empty.append(await round_trip(mode.empty))
        count = await mode.empty.send("increment")
        if count != rep + 2:
            raise RuntimeError(f"the empty traveler counts {count}, not {rep + 2}")
    if rep < counts.big_trips:
        trips.big.append(await round_trip(mode.big))
        digest = await mode.big.send("digest")
        if digest != mode.digest:
            raise RuntimeError("the 16 MiB traveler's digest changed across deactivate/activate")
        trips.checkpoint.append((await timed(mode.big.checkpoint))[0])
        path = mode.state_dir / "baseline.bin"
        trips.write.append(await asyncio.to_thread(write_file, path, body, mode.fsync))
        trips.read.append(await asyncio.to_thread(read_file, path))


def report_trips(mode: Mode, create: Series, counts: Counts, table: Table) -> None:
    trips, tag = mode.trips, f"`--{'' if mode.fsync else 'no-'}transfer-fsync`"
    size = mib(counts.payload)
    off = series([d for d, _ in trips.empty])
    on = series([a for _, a in trips.empty])
    both = series([d + a for d, a in trips.empty])
    n = len(both.samples)
    table.add("(b)", f"{tag}: deactivate(), empty Traveler, median / p90 of {n}", off.ms())
    table.add("(b)", f"{tag}: activate(), empty Traveler, median / p90 of {n}", on.ms())
    table.add(
        "(b)",
        f"{tag}: deactivate→activate, empty Traveler, median / p90 of {n}",
        both.ms(),
        baseline=f"{create.ms()} (create→first reply)",
        ratio=both.median / create.median,
    )
    big_off = series([d for d, _ in trips.big])
    big_on = series([a for _, a in trips.big])
    big_both = series([d + a for d, a in trips.big])
    write, read = series(trips.write), series(trips.read)
    k = len(big_both.samples)
    plain = f"write{' + fsync' if mode.fsync else ''}"
    table.add(
        "(b)",
        f"{tag}: deactivate(), {size} Traveler, median / p90 of {k}",
        f"{big_off.ms()}; {rate(counts.payload, big_off.median - off.median)} over empty",
        baseline=f"{write.ms()} (plain file {plain}, {rate(counts.payload, write.median)})",
        ratio=big_off.median / write.median,
    )
    table.add(
        "(b)",
        f"{tag}: activate(), {size} Traveler, median / p90 of {k}",
        f"{big_on.ms()}; {rate(counts.payload, big_on.median - on.median)} over empty",
        baseline=f"{read.ms()} (plain file read, {rate(counts.payload, read.median)})",
        ratio=big_on.median / read.median,
    )
    table.add(
        "(b)",
        f"{tag}: deactivate→activate, {size} Traveler, digest checked, median / p90 of {k}",
        big_both.ms(),
        baseline=f"{both.ms()} (empty Traveler)",
        ratio=big_both.median / both.median,
    )
    point = series(trips.checkpoint)
    table.add(
        "(b)",
        f"{tag}: checkpoint(), {size} Traveler (stays active), median / p90 of {k}",
        point.ms(),
        baseline=f"{write.ms()} (plain file {plain})",
        ratio=point.median / write.median,
    )


async def bench_trips(modes: Sequence[Mode], create: Series, counts: Counts, table: Table) -> None:
    for mode in modes:
        await prepare(mode, counts)
    body = bytes(range(256)) * (counts.payload // 256)
    for rep in range(max(counts.trips, counts.big_trips)):
        for mode in modes:  # alternate, so drift in the machine hits both modes alike
            await one_round(mode, rep, counts, body)
    for mode in modes:
        report_trips(mode, create, counts, table)
        for proxy in (mode.empty, mode.big):
            if proxy is not None:
                await proxy.dispose()


# -- (c) host restart with many inactive paglets ---------------------------------


@dataclass
class Start:
    ready: float  # process start → ready file
    listed: float  # process start → list() shows every paglet, all inactive
    stop: float  # SIGTERM → exit


async def start_and_list(workdir: Path, name: str, state_dir: Path, expect: int) -> Start:
    """Start a host, time it to its ready file and to a full list(), stop it."""
    async with host(workdir, name, state_dir) as server:
        ready = server.start_time
        async with AsyncHostClient(server.url) as client:
            while True:
                seen = await statuses(client)
                if len(seen) >= expect and all(s == "inactive" for s in seen.values()):
                    break
                if time.perf_counter() - server.launched > READY_TIMEOUT:
                    raise RuntimeError(f"{name} lists {len(seen)} paglets, not {expect} inactive")
                await asyncio.sleep(READY_POLL)
            listed = time.perf_counter() - server.launched
            if len(seen) != expect:
                raise RuntimeError(f"{name} lists {len(seen)} paglets, not {expect}")
    return Start(ready, listed, server.stopped)


async def fill(workdir: Path, state_dir: Path, counts: Counts, table: Table) -> list[str]:
    """Create the paglets on a fresh host, deactivate them all, stop the host."""
    n = counts.inactive
    async with (
        host(workdir, "restart", state_dir) as server,
        AsyncHostClient(server.url) as client,
    ):

        async def make(_: int) -> AsyncPagletProxy:
            proxy = await client.create(COUNTER)
            await proxy.send("increment")
            return proxy

        made, proxies = await timed(lambda: in_batches(range(n), make, BATCH))
        off, _ = await timed(lambda: in_batches(proxies, lambda p: p.deactivate(), BATCH))
        await expect_inactive(client, proxies)
    table.add(
        "(c)",
        f"create {n} Counters, {BATCH} at a time, each to its first reply",
        f"{made:.2f} s ({made / n * MS:.1f} ms each)",
    )
    table.add(
        "(c)",
        f"deactivate them, {BATCH} at a time",
        f"{off:.2f} s ({off / n * MS:.1f} ms each)",
    )
    table.add("(c)", f"SIGTERM→exit of that host, {n} inactive", f"{server.stopped * MS:.0f} ms")
    return [p.agent_id for p in proxies]


async def check_restored(workdir: Path, state_dir: Path, ids: Sequence[str], table: Table) -> None:
    """After the restarts: a message activates one of them, with its state."""
    async with (
        host(workdir, "restart", state_dir) as server,
        AsyncHostClient(server.url) as client,
    ):
        proxy = AsyncPagletProxy(client, ids[0])
        took, reply = await timed(lambda: proxy.send("increment"))
        if reply != {"count": 2}:
            raise RuntimeError(f"{ids[0]} came back with {reply!r}, not count 2")
    table.add(
        "(c)",
        f"after the restart: first message to one of the {len(ids)} (activates it)",
        f"{took * MS:.2f} ms",
    )


async def bench_restart(workdir: Path, counts: Counts, table: Table) -> None:
    n = counts.inactive
    state_dir = workdir / "restart-state"
    ids = await fill(workdir, state_dir, counts, table)
    full: list[Start] = []
    empty: list[Start] = []
    for i in range(counts.restarts):  # alternate, so drift in the machine hits both alike
        _log(f"(c) start {i + 1}/{counts.restarts}: empty state dir, then {n} inactive")
        empty.append(await start_and_list(workdir, "empty", workdir / f"empty-state-{i}", 0))
        full.append(await start_and_list(workdir, "restart", state_dir, n))
    r = len(full)

    def ms(starts: list[Start], what: str) -> str:
        s = series([getattr(x, what) for x in starts])
        return f"{s.median * MS:.0f} ms" + (
            f" ({min(s.samples) * MS:.0f}-{max(s.samples) * MS:.0f})" if r > 1 else ""
        )

    def med(starts: list[Start], what: str) -> float:
        return series([getattr(x, what) for x in starts]).median

    of = f"median (min-max) of {r}" if r > 1 else "one start"
    for what, label in (("ready", "ready file"), ("listed", f"list() shows all {n} inactive")):
        table.add(
            "(c)",
            f"host restart with {n} inactive: process start → {label}, {of}",
            ms(full, what),
            baseline=f"{ms(empty, what)} (empty state dir)",
            ratio=med(full, what) / med(empty, what),
        )
    table.add(
        "(c)",
        f"SIGTERM→exit after the restart, {n} inactive, {of}",
        ms(full, "stop"),
        baseline=f"{ms(empty, 'stop')} (empty state dir)",
        ratio=med(full, "stop") / med(empty, "stop"),
    )
    await check_restored(workdir, state_dir, ids, table)


# -- the run -------------------------------------------------------------------


async def run(counts: Counts, parent: Path | None) -> tuple[Table, str]:
    table = Table(FIGURE_HEAD)
    with tempfile.TemporaryDirectory(prefix="paglets-bench-durability-", dir=parent) as tmp:
        workdir = Path(tmp)
        fs = filesystem(workdir)
        async with contextlib.AsyncExitStack() as stack:
            modes = []
            for name, flag in MODES:
                state_dir = workdir / f"state-{name.replace(' ', '-')}"
                state_dir.mkdir()
                server = await stack.enter_async_context(
                    host(workdir, name.replace(" ", "-"), state_dir, flag)
                )
                client = await stack.enter_async_context(AsyncHostClient(server.url))
                modes.append(Mode(name, flag == "--transfer-fsync", client, state_dir))
            _log("(a) create→first reply and activation on message, default host")
            create = await bench_activation(modes[0].client, counts, table)
            _log("(b) deactivate→activate round trips, --transfer-fsync and --no-transfer-fsync")
            await bench_trips(modes, create, counts, table)
        _log(f"(c) host restart with {counts.inactive} inactive paglets")
        await bench_restart(workdir, counts, table)
    return table, fs


async def run_until_signalled(counts: Counts, parent: Path | None) -> tuple[Table, str]:
    """:func:`run`, cancelled (so its hosts get stopped) on SIGTERM as on Ctrl-C."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("not running in a task")
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(counts, parent)


def main() -> None:
    parser = argparse.ArgumentParser(description="The paglets durability benchmark.")
    parser.add_argument("--quick", action="store_true", help="reduced counts: a smoke test")
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="where the hosts' temporary state dirs go (default: the system temp dir); "
        "fsync costs depend on its disk",
    )
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    started, load = time.perf_counter(), os.getloadavg()
    try:
        table, fs = asyncio.run(run_until_signalled(counts, args.dir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _log("interrupted; every host this run started has been stopped")
        sys.exit(130)
    print(f"## paglets durability benchmark{' (--quick)' if args.quick else ''}\n")
    print(f"Machine: {machine()}; state dirs on {fs}.\n")
    print(table.markdown())
    print(
        "\nEvery host ran as its own process. Baselines come from this run: create→first "
        "reply on the same host in blocks alternating with the activations (a); the empty "
        "Traveler, and plain-file writes and reads of the same bytes in the host's state dir, "
        "alternating with the round trips and between the two hosts (b); a host start with an "
        f"empty state dir, alternating with the restarts (c). Run took "
        f"{time.perf_counter() - started:.0f} s; load average before it {load[0]:.2f}, after "
        f"it {os.getloadavg()[0]:.2f}; leftover processes: {len(LEFTOVERS.pids)}."
    )


if __name__ == "__main__":
    main()
