"""The relay benchmark: direct against relayed, in one run on loopback.

::

    uv run python bench/relay.py            # 64 MiB moves, a 256 MiB move under way
    uv run python bench/relay.py --quick    # smaller, a smoke test

Starts a hub (``--public-url``), a host that joined it directly (``--peer``) and
a connect-mode host (``--connect-to``), each its own ``paglets-host`` process,
and measures: a message round trip to a paglet on the direct host and on the
relayed one; a dispatch of 64 MiB from the hub to each; a relayed round trip
while a 256 MiB move to the relayed host is under way; and the hub's RSS growth
during that move. Prints a Markdown table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from paglets import HostClient

KEY = "bench-relay-key-0123456789"
TRAVELER = "examples.travel:Traveler"
MiB = 1 << 20


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


def _rtt(client: HostClient, host: str, count: int) -> float:
    """The median round trip (ms) of ``count`` messages to a traveler on ``host``."""
    with client.at(host) as there:
        traveler = there.create(TRAVELER)
        traveler.send("increment")
        times = []
        for _ in range(count):
            start = time.perf_counter()
            traveler.send("increment")
            times.append(time.perf_counter() - start)
        traveler.dispose()
    return statistics.median(times) * 1000


def _move(client: HostClient, target: str, size: int) -> float:
    """Seconds to dispatch a traveler carrying ``size`` bytes from the hub to ``target``."""
    traveler = client.create(TRAVELER)
    traveler.send("payload", {"size": size})
    start = time.perf_counter()
    traveler.dispatch(target)
    elapsed = time.perf_counter() - start
    traveler.dispose()
    return elapsed


def _during_big_move(
    client: HostClient, hub_url: str, hub_pid: int, big: int, idle_rtt: float
) -> list[tuple[str, str]]:
    """Relayed round trips while ``big`` bytes move to the relayed host; the hub's RSS."""
    hub_process = psutil.Process(hub_pid)
    rss_before = hub_process.memory_info().rss
    peak = [rss_before]
    done = threading.Event()

    def big_move() -> None:
        with HostClient(hub_url, KEY) as mover:
            _move(mover, "relayed", big)
        done.set()

    thread = threading.Thread(target=big_move)
    thread.start()
    busy: list[float] = []
    with client.at("relayed") as there:
        traveler = there.create(TRAVELER)
        while not done.is_set():
            start = time.perf_counter()
            traveler.send("increment")
            busy.append(time.perf_counter() - start)
            peak.append(hub_process.memory_info().rss)
            time.sleep(0.01)
        traveler.dispose()
    thread.join()
    during = statistics.median(busy) * 1000 if busy else float("nan")
    return [
        (f"relayed round trip during a {big // MiB} MiB relayed move (ms)", f"{during:.2f}"),
        ("during / idle relayed", f"{during / idle_rtt:.2f}"),
        ("hub RSS growth during that move (MiB)", f"{(max(peak) - rss_before) / MiB:.1f}"),
    ]


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and counts")
    quick = parser.parse_args().quick
    move, big, count = (8 * MiB, 32 * MiB, 50) if quick else (64 * MiB, 256 * MiB, 300)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        port = _free_port()
        hub_url = f"http://127.0.0.1:{port}"
        hub, _ = _start(tmp, "hub", "--port", str(port), "--public-url", hub_url)
        direct, _ = _start(tmp, "direct", "--port", "0", "--peer", hub_url)
        relayed, _ = _start(tmp, "relayed", "--connect-to", hub_url)
        rows: list[tuple[str, str]] = []
        try:
            with HostClient(hub_url, KEY) as client:
                while {h.name for h in client.hosts() if h.online} < {"direct", "relayed"}:
                    time.sleep(0.1)
                print("round trips", file=sys.stderr)
                direct_rtt, relayed_rtt = (
                    _rtt(client, "direct", count),
                    _rtt(client, "relayed", count),
                )
                rows += [
                    ("message round trip, direct (ms)", f"{direct_rtt:.2f}"),
                    ("message round trip, relayed (ms)", f"{relayed_rtt:.2f}"),
                    ("relayed / direct", f"{relayed_rtt / direct_rtt:.2f}"),
                ]
                print("moves", file=sys.stderr)
                direct_s, relayed_s = _move(client, "direct", move), _move(client, "relayed", move)
                mib = move // MiB
                rows += [
                    (f"{mib} MiB dispatch, direct (MiB/s)", f"{mib / direct_s:.0f}"),
                    (f"{mib} MiB dispatch, relayed (MiB/s)", f"{mib / relayed_s:.0f}"),
                    ("relayed / direct throughput", f"{direct_s / relayed_s:.2f}"),
                ]
                print("a round trip during a big relayed move", file=sys.stderr)
                rows += _during_big_move(client, hub_url, hub.pid, big, relayed_rtt)
        finally:
            for process in (relayed, direct, hub):
                process.terminate()
                process.wait(30)
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
