"""The console scripts, run as a user runs them: real processes, real signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from paglets import AuthenticationError, HostClient, __version__
from pagletstest import host_env

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

READY_TIMEOUT = 60.0
STOP_BOUND = 20.0
DEMO_TIMEOUT = 100.0
COUNTER = "examples.counter:Counter"
PROBE = "pagletstest.testing:Probe"


def _command(script: str, module: str) -> list[str]:
    """The console script installed in the venv, else ``python -m module``."""
    found = shutil.which(script, path=str(Path(sys.executable).parent)) or shutil.which(script)
    return [found] if found else [sys.executable, "-m", module]


HOST_CMD = _command("paglets-host", "paglets.cli.host")
DEMO_CMD = _command("paglets-demo", "paglets.cli.demo")


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without any API key, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PAGLETS_API_KEY"}
    env.update(extra)
    return env


@dataclass
class RunningHost:
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    url: str
    name: str

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def _wait_gone(processes: Sequence[psutil.Process], timeout: float = 10.0) -> None:
    """Wait until every process has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    alive = list(processes)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        if alive:
            time.sleep(0.05)
    assert not alive, f"processes left behind: {alive}"


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[Callable[..., RunningHost]]:
    """Start ``paglets-host`` processes and wait for their ready files; kill leftovers."""
    started: list[subprocess.Popen[bytes]] = []
    counter = iter(range(100))

    def factory(*args: str, env: dict[str, str] | None = None) -> RunningHost:
        n = next(counter)
        name = f"cli{n}"
        ready_file = tmp_path / f"{name}.ready.json"
        log_file = tmp_path / f"{name}.log"
        argv = [*HOST_CMD, "--name", name, "--port", "0", "--ready-file", str(ready_file)]
        argv += ["--state-dir", str(tmp_path / "state"), *args]
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env or _env()
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
                tree = psutil.Process(process.pid).children(recursive=True)
                process.kill()
                process.wait()
                for child in tree:
                    if _running(child):
                        child.kill()


# -- paglets-host ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_host_serves_then_stops_cleanly_on_signal(
    start_host: Callable[..., RunningHost], sig: signal.Signals
) -> None:
    host = start_host("--mesh-version", "m7", "--peer", "http://127.0.0.1:1")
    with HostClient(host.url, api_key="") as client:
        info = client.host_info()
        assert (info.name, info.pid, info.mesh_version) == (host.name, host.process.pid, "m7")
        assert info.peers == ["http://127.0.0.1:1"]
        counter = client.create(COUNTER)
        assert counter.send("increment", {"by": 2}) == {"count": 2}
        assert counter.send("increment") == {"count": 3}
        paglet_pid = counter.info().pid

    started = psutil.Process(host.process.pid).children(recursive=True)
    assert paglet_pid in {p.pid for p in started}, "the paglet runs under the host"

    host.process.send_signal(sig)
    assert host.process.wait(STOP_BOUND) == 0, host.log()
    _wait_gone(started)
    assert not host.ready_file.exists(), "the ready file is removed at exit"
    assert "Traceback" not in host.log()


def test_version() -> None:
    result = subprocess.run(
        [*HOST_CMD, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"paglets-host, version {__version__}"


def _assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_public_bind_without_key_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [*HOST_CMD, "--host", "0.0.0.0", "--port", "0", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    _assert_one_line_error(result, "refusing to bind 0.0.0.0 without an API key")
    assert "--insecure" in result.stderr


def test_port_in_use_is_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*HOST_CMD, "--port", str(port), "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_env(),
        )
    _assert_one_line_error(result, f"port {port} is in use; pick another with --port")


def test_bad_option_value_is_one_line_error() -> None:
    result = subprocess.run(
        [*HOST_CMD, "--port", "http"], capture_output=True, text=True, timeout=60, check=False
    )
    _assert_one_line_error(result, "--port")


def test_api_key_from_environment_is_required(start_host: Callable[..., RunningHost]) -> None:
    host = start_host(env=host_env(_env(PAGLETS_API_KEY="s3cret")))
    for wrong in ("", "guess"):
        with HostClient(host.url, api_key=wrong) as client, pytest.raises(AuthenticationError):
            client.create(COUNTER)
    with HostClient(host.url, api_key="s3cret") as client:
        probe = client.create(PROBE)
        assert "PAGLETS_API_KEY" not in probe.send("env"), "paglets never see the key"


def test_api_key_env_names_another_variable(start_host: Callable[..., RunningHost]) -> None:
    host = start_host("--api-key-env", "OTHER_KEY", env=host_env(_env(OTHER_KEY="k2")))
    with HostClient(host.url, api_key="") as client, pytest.raises(AuthenticationError):
        client.host_info()
    with HostClient(host.url, api_key="k2") as client:
        probe = client.create(PROBE)
        assert "OTHER_KEY" not in probe.send("env"), "paglets never see the key"
    host.process.send_signal(signal.SIGTERM)
    assert host.process.wait(STOP_BOUND) == 0, host.log()


# -- paglets-demo -----------------------------------------------------------------------


def test_demo_runs_to_completion(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        demo = subprocess.Popen(
            [*DEMO_CMD, "--hosts", "2", "--paglets", "1"],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=_env(TMPDIR=str(temp)),
        )
    # Hosts, zygotes and paglets are the demo's descendants: note each one seen.
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + DEMO_TIMEOUT
    try:
        while demo.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not finish within {DEMO_TIMEOUT} s")
            try:
                for child in psutil.Process(demo.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
    finally:
        if demo.poll() is None:
            demo.kill()
        demo.wait()
    output, errors = out.read_text(), err.read_text()
    assert demo.returncode == 0, errors
    assert "Traceback" not in errors
    assert "== 8. Summary ==" in output
    assert re.search(r"moves\s+5\n", output), output
    assert "arrival<-" in output
    assert re.search(r"paglets created\s+5\n", output), output
    assert re.search(r"median message round trip\s+\d+\.\d ms", output), output
    assert re.search(r"median create -> first reply\s+\d+\.\d ms", output), output
    assert "PagletCrashedError" in output
    assert "counters still answering `get`: 2 of 2" in output
    assert output.count("stopped, exit code 0") == 2
    assert len(seen) >= 2, "the demo started its hosts as child processes"
    _wait_gone(list(seen.values()))
    assert list(temp.iterdir()) == [], "the demo removes its temporary directory"
