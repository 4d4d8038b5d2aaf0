"""``paglets-demo``: a guided tour of paglets on a small local mesh.

It starts a few ``paglets-host`` processes on loopback (any free ports, a
temporary state directory), then, as any script would, talks to them with
`paglets.HostClient`: it creates counter paglets, sends them messages,
collects replies with ``send_future`` and a `paglets.ReplySet`, lets one
paglet crash while the others keep answering, shows each host's context events,
and prints timings. Whatever happens (an error, Ctrl-C), it stops the hosts and
removes its temporary files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from paglets.cli._errors import run_cli
from paglets.cli._output import examples, print_table, progress
from paglets.core.errors import HostError, PagletCrashedError, PagletError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from paglets.builtins.serverinfo import SummaryReply
    from paglets.core.events import ContextEvent
    from paglets.transport.sync import HostClient, PagletProxy

PROG = "paglets-demo"
HOST_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
COUNTER = "examples.counter:Counter"
FRAGILE = "examples.fragile:Fragile"
TRAVELER = "examples.travel:Traveler"
PERF_TEST = "examples.perftest:PerfTest"
ANALYSIS = "examples.analysis:Analysis"
TRY_NEXT = (
    "paglets-host --name alpha --port 8765 &        # a host; more with --peer URL",
    "paglets-mesh hosts                             # the mesh as that host sees it",
    "paglets-sysinfo summary                        # disks, load and memory of each host",
    "paglets-pi-compute --digits 10000              # Pi, its terms as compute jobs",
    "paglets-perf-test                              # CPU, memory and disk of each host",
    "paglets-file-grabber push ./f --remote alpha --dest /tmp/f   # carry one file",
    "paglets-compute-slots status                   # jobs, slots and why one waits",
    "paglets-user-info follow                       # what paglets tell you, as it comes",
)
INCREMENTS = 5
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
REPLY_TIMEOUT = 30.0


@dataclass
class DemoHost:
    """One ``paglets-host`` process the demo started."""

    name: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    url: str = ""

    def log_tail(self) -> str:
        """The last line the host logged, to explain a failure."""
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


@dataclass
class Counters:
    """What the summary reports."""

    created: int = 0
    messages: int = 0
    moves: int = 0
    round_trips: list[float] = field(default_factory=list)
    first_replies: list[float] = field(default_factory=list)

    def send(self, proxy: PagletProxy, kind: str, args: dict[str, Any] | None = None) -> Any:
        """Send one message and wait for its reply, timing the round trip."""
        self.messages += 1
        started = time.perf_counter()
        reply = proxy.send(kind, args, timeout=REPLY_TIMEOUT)
        self.round_trips.append(time.perf_counter() - started)
        return reply


# -- output -----------------------------------------------------------------------


def _section(title: str) -> None:
    click.echo(f"\n== {title} ==")


def _say(text: str = "") -> None:
    click.echo(f"  {text}" if text else "")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print_table(headers, rows, indent=2)


def _short(agent_id: str | None) -> str:
    return agent_id[:8] if agent_id else "-"


def _reply(reply: Any) -> str:
    if isinstance(reply, dict) and set(reply) == {"count"}:
        return f"count={reply['count']}"
    return repr(reply)


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.1f} ms" if seconds else "n/a"


# -- the hosts ----------------------------------------------------------------------


def _start_host(root: Path, name: str, peers: Sequence[str]) -> DemoHost:
    ready_file = root / f"{name}.ready.json"
    log_file = root / f"{name}.log"
    argv = [sys.executable, "-m", "paglets.cli.host", "--name", name, "--port", "0"]
    argv += ["--ready-file", str(ready_file), "--state-dir", str(root / "state")]
    argv += ["--mesh-version", "demo", "--log-level", "info"]
    argv += ["--config", str(_launch_file(root))]
    for peer in peers:
        argv += ["--peer", peer]
    with log_file.open("wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return DemoHost(name, process, ready_file, log_file)


def _launch_file(root: Path) -> Path:
    """The bundled default launch file, so the demo's hosts ignore the user's own.

    Its compute slots' load gate is opened: the demo's three hosts share one
    machine, whose load would otherwise hold the demo's jobs back.
    """
    from paglets.launch.files import bundled_text  # noqa: PLC0415 - not for --help

    path = root / "launch.toml"
    if not path.exists():
        text = bundled_text().replace(
            "\n[compute]\n", "\n[compute]\nmax_load_per_cpu = 1000.0  # the demo's own\n", 1
        )
        path.write_text(text, encoding="utf-8")
    return path


def _wait_ready(hosts: Sequence[DemoHost]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = [h for h in hosts if not h.url]
    with progress("starting hosts", len(waiting)) as advance:
        _wait_each(waiting, deadline, advance)


def _wait_each(waiting: list[DemoHost], deadline: float, advance: Callable[[], None]) -> None:
    while waiting:
        for host in list(waiting):
            if host.ready_file.exists():
                host.url = json.loads(host.ready_file.read_text(encoding="utf-8"))["url"]
                waiting.remove(host)
                advance()
            elif (code := host.process.poll()) is not None:
                raise HostError(
                    f"host {host.name} exited with code {code} before it was ready: "
                    f"{host.log_tail() or 'no log output'}"
                )
        if waiting and time.monotonic() > deadline:
            names = ", ".join(h.name for h in waiting)
            raise HostError(f"hosts {names} were not ready within {READY_TIMEOUT:g} s")
        if waiting:
            time.sleep(0.05)


def _stop_hosts(hosts: Sequence[DemoHost]) -> None:
    """SIGTERM every host, wait for all within a bound, kill any that hang."""
    for host in hosts:
        if host.process.poll() is None:
            host.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for host in hosts:
        try:
            code = host.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            host.process.kill()
            code = host.process.wait()
            _say(f"{host.name}: did not stop within {STOP_TIMEOUT:g} s; killed")
            continue
        how = f"exit code {code}" if code >= 0 else f"ended by {signal.Signals(-code).name}"
        _say(f"{host.name}: stopped, {how}")


# -- the tour -------------------------------------------------------------------------


def run_demo(n_hosts: int, n_paglets: int) -> None:
    """Start ``n_hosts`` hosts, run the tour with ``n_paglets`` counters each, clean up."""
    from paglets.transport.sync import HostClient  # noqa: PLC0415 - aiohttp: not for --help

    root = Path(tempfile.mkdtemp(prefix="paglets-demo-"))
    hosts: list[DemoHost] = []
    try:
        with contextlib.ExitStack() as clients:
            _section(f"1. Starting {n_hosts} hosts")
            _say("Each host is a `paglets-host` process on loopback; each paglet will be")
            _say("a child process of its host.")
            _say()
            hosts.append(_start_host(root, HOST_NAMES[0], ()))
            _wait_ready(hosts)
            for name in HOST_NAMES[1:n_hosts]:
                hosts.append(_start_host(root, name, (hosts[0].url,)))
            _wait_ready(hosts)
            _table(
                ("HOST", "URL", "PID"),
                [(h.name, h.url, str(h.process.pid)) for h in hosts],
            )
            by_host = {h.name: clients.enter_context(HostClient(h.url)) for h in hosts}
            _tour(by_host, n_paglets, root)
        _section("Stopping hosts")
        _say("SIGTERM: each host stops its paglets, then exits.")
        _stop_hosts(hosts)
    finally:
        running = [h for h in hosts if h.process.poll() is None]
        if running:
            _section("Stopping hosts")
            _stop_hosts(running)
        shutil.rmtree(root, ignore_errors=True)


def _tour(clients: dict[str, HostClient], n_paglets: int, root: Path) -> None:
    stats = Counters()
    counters = _create_counters(clients, n_paglets, stats)
    _send_increments(counters, stats)
    _fan_in(counters, stats)
    _crash(clients, counters, stats)
    _travel(clients, stats)
    _fan_out(clients, stats)
    _grab_file(clients, root, stats)
    _call_service(clients)
    _run_job(clients, stats)
    _events(clients)
    _section("12. Summary")
    _table(
        ("WHAT", "VALUE"),
        [
            ("hosts", str(len(clients))),
            ("paglets created", str(stats.created)),
            ("moves", str(stats.moves)),
            ("messages sent", str(stats.messages)),
            ("median message round trip", _ms(stats.round_trips)),
            ("median create -> first reply", _ms(stats.first_replies)),
        ],
    )
    _section("Try next")
    _say("Start a host of your own and look around (each command has --help):")
    _say()
    for line in TRY_NEXT:
        _say(f"  {line}")


def _create_counters(
    clients: dict[str, HostClient], n_paglets: int, stats: Counters
) -> list[tuple[str, PagletProxy]]:
    _section("2. Creating paglets")
    _say(f"{n_paglets} `{COUNTER}` per host; each answers its first `increment`.")
    _say()
    counters: list[tuple[str, PagletProxy]] = []
    rows = []
    for name, client in clients.items():
        for _ in range(n_paglets):
            started = time.perf_counter()
            proxy = client.create(COUNTER)
            stats.created += 1
            reply = stats.send(proxy, "increment")
            elapsed = time.perf_counter() - started
            stats.first_replies.append(elapsed)
            counters.append((name, proxy))
            rows.append((name, _short(proxy.agent_id), f"{elapsed * 1000:.1f}", _reply(reply)))
    _table(("HOST", "PAGLET", "CREATE -> REPLY MS", "REPLY"), rows)
    return counters


def _send_increments(counters: list[tuple[str, PagletProxy]], stats: Counters) -> None:
    _section("3. Sending messages")
    _say(f"Each counter gets {INCREMENTS} `increment` messages with send (wait for the reply).")
    _say()
    rows = []
    for name, proxy in counters:
        reply: Any = None
        for by in range(1, INCREMENTS + 1):
            reply = stats.send(proxy, "increment", {"by": by})
        rows.append((name, _short(proxy.agent_id), _reply(reply)))
    _table(("HOST", "PAGLET", "LAST REPLY"), rows)


def _fan_in(counters: list[tuple[str, PagletProxy]], stats: Counters) -> None:
    _section("4. Fan-in with send_future + ReplySet")
    from paglets.transport.sync import ReplySet  # noqa: PLC0415

    _say("One `get` to every counter at once; replies listed as they complete.")
    _say()
    where = {proxy.agent_id: name for name, proxy in counters}
    replies = ReplySet()
    ids = {}
    for _, proxy in counters:
        future = proxy.send_future("get")
        stats.messages += 1
        replies.add(future)
        ids[future.message_id] = proxy.agent_id
    rows = []
    total = 0
    for future, reply in replies.as_completed(REPLY_TIMEOUT):
        agent_id = ids[future.message_id]
        total += int(reply["count"])
        rows.append((where[agent_id], _short(agent_id), _reply(reply)))
    _table(("HOST", "PAGLET", "REPLY"), rows)
    _say()
    _say(f"{len(replies)} replies; the counts add up to {total}.")


def _crash(
    clients: dict[str, HostClient], counters: list[tuple[str, PagletProxy]], stats: Counters
) -> None:
    _section("5. A paglet crashes; the others keep answering")
    _say(f"A `{FRAGILE}` on the first host is asked to end its own process.")
    _say()
    name, client = next(iter(clients.items()))
    fragile = client.create(FRAGILE)
    stats.created += 1
    label = f"{name} fragile {_short(fragile.agent_id)}"
    _say(f"{label}: echo -> {_reply(stats.send(fragile, 'echo', {'hello': 'world'}))}")
    stats.messages += 1
    try:
        fragile.send("crash", {"code": 4}, timeout=REPLY_TIMEOUT)
    except PagletCrashedError as exc:
        _say(f"{label}: crash -> {type(exc).__name__}: {exc}")
    else:
        raise PagletError(f"the fragile paglet on {name} did not crash as asked")
    info = fragile.info()
    _say(f"{label}: status {info.status} ({info.exit_detail})")
    answered = sum(1 for _, proxy in counters if stats.send(proxy, "get") is not None)
    _say(f"counters still answering `get`: {answered} of {len(counters)}")


def _travel(clients: dict[str, HostClient], stats: Counters) -> None:
    _section("6. A paglet travels")
    names = list(clients)
    _say(f"A `{TRAVELER}` follows an itinerary through {', '.join(names[1:] + names[:1])},")
    _say("then is dispatched, cloned and retracted; its state and hooks go along.")
    _say()
    home = clients[names[0]]
    traveler = home.create(TRAVELER)
    stats.created += 1
    stats.send(traveler, "increment")
    stats.send(traveler, "tour", {"hosts": names[1:] + names[:1]})
    deadline = time.monotonic() + REPLY_TIMEOUT
    while not stats.send(traveler, "tour_log")["done"]:
        if time.monotonic() > deadline:
            raise PagletError("the traveler did not finish its itinerary")
        time.sleep(0.05)
    stats.moves += len(names)
    rows = [
        ("tour", stats.send(traveler, "where"), ", ".join(stats.send(traveler, "tour_log")["seen"]))
    ]
    traveler.dispatch(names[-1])
    stats.moves += 1
    rows.append(
        ("dispatch", stats.send(traveler, "where"), f"count {stats.send(traveler, 'increment')}")
    )
    copy = traveler.clone(names[0])
    stats.created += 1
    stats.moves += 1
    rows.append(("clone", stats.send(copy, "where"), f"copy {_short(copy.agent_id)}"))
    home.retract(traveler)
    stats.moves += 1
    rows.append(
        ("retract", stats.send(traveler, "where"), f"count {stats.send(traveler, 'increment')}")
    )
    _table(("MOVE", "NOW ON", "NOTE"), rows)
    _say()
    _say("hooks it saw: " + ", ".join(stats.send(traveler, "log")))


def _fan_out(clients: dict[str, HostClient], stats: Counters) -> None:
    _section("7. A clone fan-out")
    _say(f"A `{PERF_TEST}` clones itself to every host; each copy checks its host's")
    _say("CPU, memory and disk, reports to the original and disposes of itself.")
    _say()
    home = next(iter(clients.values()))
    sizes = {"cpu_seconds": 0.05, "memory_mib": 8, "disk_mib": 4}
    parent = home.create(PERF_TEST, {"sizes": sizes})
    stats.created += 1
    hosts = stats.send(parent, "start")
    stats.created += len(hosts)
    stats.moves += len(hosts) - 1
    deadline = time.monotonic() + REPLY_TIMEOUT
    while len(reports := stats.send(parent, "results")["reports"]) < len(hosts):
        if time.monotonic() > deadline:
            raise PagletError("the clones did not all report back")
        time.sleep(0.05)
    parent.dispose()
    _table(
        ("HOST", "CPU SHA256", "MEMORY WRITE", "DISK WRITE+FSYNC"),
        [
            (
                r["host"],
                f"{r['cpu_mib_s']:,.0f} MiB/s",
                f"{r['memory_write_mib_s']:,.0f} MiB/s",
                f"{r['disk_write_mib_s']:,.0f} MiB/s",
            )
            for r in sorted(reports, key=lambda r: r["host"])
        ],
    )
    _say()
    _say("`paglets-perf-test` runs the same, with sizes you choose.")


def _grab_file(clients: dict[str, HostClient], root: Path, stats: Counters) -> None:
    _section("8. A file grabbed")
    names = list(clients)
    there = names[1] if len(names) > 1 else names[0]
    source, dest = root / "data.bin", root / f"data-on-{there}.bin"
    source.write_bytes(os.urandom(1 << 20))
    _say(f"`paglets-file-grabber push` carries a 1 MiB file from {names[0]} to {there}: a")
    _say("paglet registers it, dispatches itself there, and writes the copy atomically,")
    _say("sha256-verified, inside the destination host's file roots.")
    _say()
    argv = [sys.executable, "-m", "paglets.cli.file_grabber", "push", str(source)]
    argv += ["--remote", there, "--dest", str(dest), "--url", clients[names[0]].url, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise PagletError(f"paglets-file-grabber failed: {done.stderr.strip()}")
    grabbed = json.loads(done.stdout)
    stats.created += 1
    stats.moves += 1
    same = dest.read_bytes() == source.read_bytes()
    _table(
        ("FROM", "TO", "BYTES", "SHA256", "SECONDS"),
        [
            (
                f"{grabbed['source_host']}:{source.name}",
                f"{grabbed['dest_host']}:{dest.name}",
                str(grabbed["size"]),
                grabbed["sha256"][:16],
                f"{grabbed['seconds']:.2f}",
            )
        ],
    )
    _say()
    _say(f"the copy on {there} is {'identical' if same else 'DIFFERENT'}.")


def _call_service(clients: dict[str, HostClient]) -> None:
    from paglets.builtins.serverinfo import SERVER_INFO, SummaryRequest  # noqa: PLC0415

    _section("9. A service called")
    _say("Every host serves `server-info.v1`, a resident service started by its first")
    _say("call; a typed client asks each host for its summary.")
    _say()
    rows = []
    for name, client in clients.items():
        summary = client.service(SERVER_INFO, where=name).summary(SummaryRequest())
        rows.append((name, *_summary_cells(summary)))
    _table(("HOST", "CPUS", "LOAD 1 MIN", "MEMORY FREE", "PROCESSES"), rows)
    _say()
    _say("`paglets-sysinfo summary` gathers the same across the mesh.")


def _summary_cells(summary: SummaryReply) -> tuple[str, ...]:
    load = summary.load
    return (
        str(load.cpu_count),
        f"{load.load_1:.2f}",
        f"{load.memory.available / 2**20:,.0f} MiB",
        str(summary.processes),
    )


def _run_job(clients: dict[str, HostClient], stats: Counters) -> None:
    from paglets.services.compute.contract import COMPUTE_SLOTS, JobsRequest  # noqa: PLC0415

    _section("10. A job admitted by compute slots")
    name, client = list(clients.items())[-1]
    _say(f"An `{ANALYSIS}` job asks {name}'s compute-slot scheduler for a core, waits")
    _say("for it, works for 0.3 s, reports progress and ends; its slot is freed.")
    _say()
    job = client.create(ANALYSIS, {"task": 1, "target_runtime": 0.3, "name": "demo-job"})
    stats.created += 1
    deadline = time.monotonic() + REPLY_TIMEOUT
    while (result := stats.send(job, "compute.result"))["phase"] not in ("done", "failed"):
        if time.monotonic() > deadline:
            raise PagletError("the job did not end")
        time.sleep(0.05)
    jobs = client.service(COMPUTE_SLOTS, where=name).jobs(JobsRequest("all")).jobs
    job.dispose()
    row = next(j for j in jobs if j.name == "demo-job")
    _table(
        ("JOB", "HOST", "STATUS", "CORES", "RESULT"),
        [(row.job_id, name, row.status, str(row.cores), json.dumps(result["result"]))],
    )
    _say()
    _say("`paglets-compute-slots why JOB` says, per host, why a waiting job waits.")


def _events(clients: dict[str, HostClient]) -> None:
    _section("11. Context events")
    _say("Each host logs what happens to it and its paglets; scripts can query")
    _say("or follow the log.")
    for name, client in clients.items():
        events: list[ContextEvent] = []
        cursor = 0
        while True:
            page, cursor = client.events(cursor, limit=100)
            if not page:
                break
            events.extend(page)
        _say()
        _say(f"-- {name} --")
        _table(
            ("KIND", "PAGLET", "DETAIL"),
            [(str(e.kind), _short(e.agent_id), e.detail) for e in events],
        )


# -- command line -----------------------------------------------------------------


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples("paglets-demo", "paglets-demo --hosts 4 --paglets 3"),
)
@click.option(
    "--hosts",
    "n_hosts",
    type=click.IntRange(1, len(HOST_NAMES)),
    default=3,
    show_default=True,
    help="Number of hosts to start.",
)
@click.option(
    "--paglets",
    "n_paglets",
    type=click.IntRange(1, 50),
    default=2,
    show_default=True,
    help="Counter paglets per host.",
)
def command(n_hosts: int, n_paglets: int) -> None:
    """Start a small local mesh and show what paglets do."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    run_demo(n_hosts, n_paglets)


def main() -> None:
    """Entry point of the ``paglets-demo`` console script."""
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
