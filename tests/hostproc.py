"""``paglets-host`` as a separate process, started as a user starts it, for tests.

`host_processes` starts hosts with ``--ready-file`` and waits until each is ready;
at exit it kills whatever is left of them and their children.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from paglets import HostClient
from pagletstest import host_env

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

READY_TIMEOUT = 60.0


def command(script: str, module: str) -> list[str]:
    """The console script installed in the venv, else ``python -m module``."""
    found = shutil.which(script, path=str(Path(sys.executable).parent)) or shutil.which(script)
    return [found] if found else [sys.executable, "-m", module]


HOST_CMD = command("paglets-host", "paglets.cli.host")
DEMO_CMD = command("paglets-demo", "paglets.cli.demo")


def env_without_key(**extra: str) -> dict[str, str]:
    """The test's environment without any API key, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PAGLETS_API_KEY"}
    env.update(extra)
    return env


def run_script(
    argv: Sequence[str], *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a console script (``argv`` and ``args``) to its end, as a user would, without
    the test's API key unless ``env`` gives one; its output as text."""
    return subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env_without_key(**env),
    )


@dataclass
class RunningHost:
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    url: str
    name: str

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def wait_gone(processes: Sequence[psutil.Process], timeout: float = 10.0) -> None:
    """Wait until every process has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    alive = list(processes)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if running(p)]
        if alive:
            time.sleep(0.05)
    assert not alive, f"processes left behind: {alive}"


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def host_processes(tmp_path: Path) -> Iterator[Callable[..., RunningHost]]:
    """Start ``paglets-host`` processes and wait for their ready files; kill leftovers."""
    started: list[subprocess.Popen[bytes]] = []
    counter = iter(range(100))

    def factory(
        *args: str, env: dict[str, str] | None = None, name: str | None = None
    ) -> RunningHost:
        run = f"cli{next(counter)}"  # each start its own files, a restart too
        name = name or run
        ready_file = tmp_path / f"{run}.ready.json"
        log_file = tmp_path / f"{run}.log"
        argv = [*HOST_CMD, "--name", name, "--port", "0", "--ready-file", str(ready_file)]
        argv += ["--state-dir", str(tmp_path / "state"), *args]
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env or env_without_key()
            )
        started.append(process)
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready_file.exists():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{log_file.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not ready within {READY_TIMEOUT} s:\n{log_file.read_text()}")
            time.sleep(0.02)
        ready = json.loads(ready_file.read_text())
        assert ready["pid"] == process.pid
        assert ready["name"] == name
        return RunningHost(process, ready_file, log_file, ready["url"], name)

    try:
        yield factory
    finally:
        for process in started:
            if process.poll() is None:
                tree: list[psutil.Process] = []
                with contextlib.suppress(psutil.NoSuchProcess):
                    tree = psutil.Process(process.pid).children(recursive=True)
                process.kill()
                process.wait()
                for child in tree:
                    # a child may end between the look and the kill: the others still go
                    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                        if running(child):
                            child.kill()


def mesh_of(
    start_host: Callable[..., RunningHost], n: int, *args: str, timeout: float = 15
) -> list[RunningHost]:
    """``n`` hosts (each started with ``args``), the others peered to the first, once
    the first sees them all online."""
    first = start_host(*args, "--gossip-interval", "0.1")
    hosts = [first]
    hosts += [
        start_host(*args, "--peer", first.url, "--gossip-interval", "0.1") for _ in range(n - 1)
    ]
    with HostClient(first.url) as client:
        deadline = time.monotonic() + timeout
        while len(client.hosts(online=True)) < n:
            assert time.monotonic() < deadline, f"the {n} hosts never met"
            time.sleep(0.05)
    return hosts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PortTakenError(Exception):
    """A host could not bind the port it was given: another process has it."""


class Pair:
    """Two ``paglet-host`` processes, ``src`` and ``dst``, restartable on their ports."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {"src": free_port(), "dst": free_port()}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.trees: list[psutil.Process] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, crash_at: str | None = None, *, fsync: bool = False) -> None:
        first = name not in self.processes
        for _ in range(3):
            try:
                self._start(name, crash_at, fsync=fsync)
            except PortTakenError:
                if not first:
                    raise
                # another process took the port between free_port() and the bind
                self.ports[name] = free_port()
            else:
                return
        pytest.fail(f"{name}: no free port in three tries")

    def _start(self, name: str, crash_at: str | None, *, fsync: bool) -> None:
        ready = self.tmp / f"{name}.ready"
        ready.unlink(missing_ok=True)
        log = (self.tmp / f"{name}.log").open("ab")
        other = "dst" if name == "src" else "src"
        argv = [*HOST_CMD, "--name", name, "--port", str(self.ports[name])]
        argv += ["--ready-file", str(ready), "--state-dir", str(self.tmp / name)]
        argv += ["--peer", self.url(other), "--log-level", "warning"]
        argv += ["--transfer-fsync" if fsync else "--no-transfer-fsync"]
        argv += ["--gossip-interval", "0.1", "--offline-after", "1"]
        env = host_env(
            env_without_key(PAGLETS_CRASH_AT=crash_at) if crash_at else env_without_key()
        )
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        self.processes[name] = process
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None:
                log_text = self.log(name)
                if f"port {self.ports[name]} is in use" in log_text:
                    raise PortTakenError(log_text)
                pytest.fail(log_text)
            assert time.monotonic() < deadline, f"{name} not ready"
            time.sleep(0.02)
        assert json.loads(ready.read_text())["url"] == self.url(name)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def wait_dead(self, name: str) -> None:
        self.processes[name].wait(30)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                self.trees += psutil.Process(process.pid).children(recursive=True)
                process.terminate()
                process.wait(20)
        wait_gone(self.trees)

    def copies(self, agent_id: str) -> dict[str, str]:
        """Where the paglet is listed as running (or held), by host."""
        found = {}
        for name in ("src", "dst"):
            with HostClient(self.url(name), api_key="") as client:
                for info in client.list():
                    if info.agent_id == agent_id:
                        found[name] = info.status
        return found
