"""The console scripts, run as a user runs them: real processes, real signals."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import psutil
import pytest

from paglets import AuthenticationError, HostClient, __version__
from pagletstest import host_env
from tests.hostproc import DEMO_CMD, HOST_CMD, env_without_key, wait_gone

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

STOP_BOUND = 20.0
DEMO_TIMEOUT = 100.0
COUNTER = "examples.counter:Counter"
PROBE = "pagletstest.testing:Probe"


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
    wait_gone(started)
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
        env=env_without_key(),
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
            env=env_without_key(),
        )
    _assert_one_line_error(result, f"port {port} is in use; pick another with --port")


def test_bad_option_value_is_one_line_error() -> None:
    result = subprocess.run(
        [*HOST_CMD, "--port", "http"], capture_output=True, text=True, timeout=60, check=False
    )
    _assert_one_line_error(result, "--port")


def test_api_key_from_environment_is_required(start_host: Callable[..., RunningHost]) -> None:
    host = start_host(env=host_env(env_without_key(PAGLETS_API_KEY="s3cret")))
    for wrong in ("", "guess"):
        with HostClient(host.url, api_key=wrong) as client, pytest.raises(AuthenticationError):
            client.create(COUNTER)
    with HostClient(host.url, api_key="s3cret") as client:
        probe = client.create(PROBE)
        assert "PAGLETS_API_KEY" not in probe.send("env"), "paglets never see the key"


def test_api_key_env_names_another_variable(start_host: Callable[..., RunningHost]) -> None:
    host = start_host("--api-key-env", "OTHER_KEY", env=host_env(env_without_key(OTHER_KEY="k2")))
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
            env=env_without_key(TMPDIR=str(temp)),
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
    assert "== 12. Summary ==" in output
    assert re.search(r"moves\s+7\n", output), output
    assert "arrival<-" in output
    assert re.search(r"paglets created\s+10\n", output), output
    assert "== 7. A clone fan-out ==" in output
    assert "the copy on beta is identical." in output
    assert re.search(r"alpha\s+\d+\s+\d+\.\d\d\s+[\d,]+ MiB\s+\d+\n", output), output
    assert re.search(r"[0-9a-f]{12}\s+beta\s+DONE\s+1\s+\{", output), output
    assert "== Try next ==" in output
    assert re.search(r"median message round trip\s+\d+\.\d ms", output), output
    assert re.search(r"median create -> first reply\s+\d+\.\d ms", output), output
    assert "PagletCrashedError" in output
    assert "counters still answering `get`: 2 of 2" in output
    assert output.count("stopped, exit code 0") == 2
    assert len(seen) >= 2, "the demo started its hosts as child processes"
    wait_gone(list(seen.values()))
    assert list(temp.iterdir()) == [], "the demo removes its temporary directory"
