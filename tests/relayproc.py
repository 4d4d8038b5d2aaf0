"""A relay hub and connect-mode hosts as ``paglets-host`` processes, for the relay tests."""

from __future__ import annotations

import json
import subprocess
import time
from typing import TYPE_CHECKING

import psutil
import pytest

from pagletstest import host_env
from tests.hostproc import HOST_CMD, env_without_key, free_port, running

if TYPE_CHECKING:
    from pathlib import Path

KEY = "relay-test-key-0123456789"
FAST = ("--gossip-interval", "0.2", "--offline-after", "3", "--log-level", "info")


class Relay:
    """A hub on a fixed port (restartable in place) and connect-mode hosts of it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.public = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = 0

    def _launch(self, name: str, argv: list[str], env: dict[str, str] | None) -> str:
        self.starts += 1
        ready = self.tmp / f"{name}.{self.starts}.ready"
        log = (self.tmp / f"{name}.log").open("ab")
        argv = [*HOST_CMD, "--name", name, "--ready-file", str(ready), *FAST, *argv]
        argv += ["--state-dir", str(self.tmp / "state")]
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=host_env(env or env_without_key(PAGLETS_API_KEY=KEY)),
        )
        log.close()
        self.processes[name] = process
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not ready:\n{self.log(name)}")
            time.sleep(0.02)
        url: str = json.loads(ready.read_text())["url"]
        return url

    def hub(self, *extra: str, public: str | None = None) -> str:
        """Start (or restart) the hub, publishing ``public`` (its own URL by default)."""
        argv = ["--port", str(self.port), "--public-url", public or self.public, *extra]
        return self._launch("hub", argv, None)

    def connect(
        self, name: str, *extra: str, to: str | None = None, env: dict[str, str] | None = None
    ) -> str:
        """Start a connect-mode host of the hub; its URL (under the hub's)."""
        return self._launch(name, ["--connect-to", to or self.public, *extra], env)

    def run(self, name: str, *extra: str, env: dict[str, str] | None = None) -> str:
        """Run a connect-mode host expected to refuse to start: its output."""
        argv = [*HOST_CMD, "--name", name, "--connect-to", self.public, *extra]
        argv += ["--state-dir", str(self.tmp / "state")]
        done = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            timeout=60,
            env=env or env_without_key(),
        )
        assert done.returncode != 0
        return (done.stdout + done.stderr).decode(errors="replace")

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, name: str) -> None:
        """SIGKILL a host (its children too)."""
        process = self.processes[name]
        tree = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        process.wait(30)
        for child in tree:
            if running(child):
                child.kill()

    def close(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                tree = psutil.Process(process.pid).children(recursive=True)
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill(name)
                for child in tree:
                    if running(child):
                        child.kill()
