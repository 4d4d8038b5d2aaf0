"""``--bind-public`` and zeroconf across Linux network namespaces joined by a veth pair.

The test creates two namespaces, a veth pair between them and addresses in
10.200.N.0/24 only inside them, runs ``paglets-host`` in each with
``ip netns exec``, and deletes everything in a ``finally``. Traffic never leaves
those namespaces. It skips where the machine forbids namespaces (not root, no
iproute2, a sandbox).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests.hostproc import command as _command
from tests.hostproc import env_without_key as _env
from tests.hostproc import wait_gone as _wait_gone

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

HOST_CMD = _command("paglets-host", "paglets.cli.host")
MESH_CMD = _command("paglets-mesh", "paglets.cli.mesh")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


class Lab:
    """Two namespaces, ``a`` and ``b``, joined by veth ``va`` <-> ``vb``."""

    def __init__(self, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {"a": f"pglt-a-{tag}", "b": f"pglt-b-{tag}"}
        self.net = f"10.200.{os.getpid() % 250}"
        self.tmp = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def setup(self) -> None:
        a, b = self.ns["a"], self.ns["b"]
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        for side, dev, host in (("a", "va", 1), ("b", "vb", 2)):
            ns = self.ns[side]
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.net}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def teardown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                tree = psutil.Process(process.pid).children(recursive=True)
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                _wait_gone(tree)
        for ns in self.ns.values():
            _ip("netns", "del", ns, check=False)

    def start(self, side: str, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        ready = self.tmp / f"{name}.ready"
        log = self.tmp / f"{name}.log"
        argv = ["ip", "netns", "exec", self.ns[side], *HOST_CMD, "--name", name]
        argv += ["--port", "0", "--ready-file", str(ready), "--state-dir", str(self.tmp / name)]
        argv += ["--insecure", "--gossip-interval", "0.2", "--offline-after", "2"]
        argv += ["--address-poll-interval", "0.2", *args]
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=_env()
            )
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{name} not ready:\n{log.read_text()}"
            time.sleep(0.02)
        return process, json.loads(ready.read_text())["url"]

    def mesh(self, side: str, *args: str) -> Any:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns[side], *MESH_CMD, *args, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_env(),
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 ('ip') is not installed")
    probe = f"pglt-probe-{uuid.uuid4().hex[:6]}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        pytest.skip("this machine forbids creating network namespaces (needs root)")
    _ip("netns", "del", probe, check=False)
    lab = Lab(tmp_path)
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()


def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_bind_public_discovery_and_rebind_across_namespaces(lab: Lab) -> None:
    net = lab.net
    _, url_a = lab.start("a", "ns-alpha", "--bind-public")
    _, url_b = lab.start("b", "ns-beta", "--bind-public", f"{net}.2")
    assert url_a.startswith(f"http://{net}.1:"), "the detected LAN address is bound"
    assert url_b.startswith(f"http://{net}.2:"), "the given address is bound"
    port_a = url_a.rsplit(":", 1)[1]

    def view(side: str, url: str) -> dict[str, dict[str, Any]]:
        return {h["name"]: h for h in lab.mesh(side, "hosts", "--url", url)}

    # No --peer: they find each other by zeroconf over the veth pair.
    _until(
        lambda: view("b", url_b).get("ns-alpha", {}).get("online") is True, 20, "beta sees alpha"
    )
    _until(lambda: view("a", url_a).get("ns-beta", {}).get("online") is True, 20, "alpha sees beta")
    assert view("b", url_b)["ns-alpha"]["url"] == url_a

    # DHCP gave alpha a new address: it rebinds, gossips and announces the new URL.
    _ip("-n", lab.ns["a"], "addr", "del", f"{net}.1/24", "dev", "va")
    _ip("-n", lab.ns["a"], "addr", "add", f"{net}.11/24", "dev", "va")
    new_a = f"http://{net}.11:{port_a}"
    _until(lambda: view("b", url_b)["ns-alpha"]["url"] == new_a, 20, "beta sees the new URL")
    assert view("b", url_b)["ns-alpha"]["online"] is True
    assert view("b", new_a)["ns-alpha"]["url"] == new_a, "alpha answers on its new address"

    def announced() -> dict[str, str]:
        found = lab.mesh("b", "discover", "--timeout", "2")
        return {f["name"]: f["url"] for f in found}

    _until(lambda: announced().get("ns-alpha") == new_a, 20, "zeroconf republished alpha")
    for log in lab.tmp.glob("*.log"):
        assert "Traceback" not in log.read_text(), log.read_text()
