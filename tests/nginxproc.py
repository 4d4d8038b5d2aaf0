"""A real nginx (Debian's package) terminating TLS in front of a hub, from docs/relay.md's drop-in.

The drop-in the docs show (``docs/examples/relay-nginx.conf``) is what runs: its
port, certificate and hub address are replaced for the test, and, for the
long-poll tests, its two ``Upgrade``/``Connection`` lines are dropped so nginx
refuses WebSocket upgrades as some proxies do.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

DROP_IN = Path(__file__).resolve().parents[1] / "docs" / "examples" / "relay-nginx.conf"
UPGRADE_LINES = (
    "proxy_set_header Upgrade $http_upgrade;",
    "proxy_set_header Connection $connection_upgrade;",
)


def nginx_binary() -> str:
    """The nginx to run, or skip the test saying how to get one."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip(
            "nginx is not installed and could not be: './run test' installs Debian's nginx-light "
            "package when run as root with apt-get (as CI does)"
        )
    return found


class Nginx:
    """One nginx process serving the drop-in on ``port`` with the test's certificate."""

    def __init__(
        self, tmp: Path, *, port: int, hub_port: int, cert: Path, key: Path, upgrades: bool
    ) -> None:
        self.tmp = tmp
        self.port = port
        text = DROP_IN.read_text()
        text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        text = text.replace("server_name server-a.example.com;", "server_name localhost;")
        text = text.replace("/etc/ssl/certs/server-a.example.com.pem", str(cert))
        text = text.replace("/etc/ssl/private/server-a.example.com.key", str(key))
        text = text.replace("http://127.0.0.1:8765/", f"http://127.0.0.1:{hub_port}/")
        if not upgrades:
            for line in UPGRADE_LINES:
                assert line in text
                text = text.replace(line, "")
        (tmp / "paglets.conf").write_text(text)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {tmp / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (tmp / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {tmp / 'nginx.pid'};\n"
            f"error_log {tmp / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log off;\n{temp}    include {tmp / 'paglets.conf'};\n}}\n"
        )
        err = (tmp / "nginx.out").open("wb")
        self.process = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                str(tmp),
                "-e",
                str(tmp / "error.log"),
                "-c",
                str(tmp / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited: {self.log()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, f"nginx not listening: {self.log()}"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        """The hub's public URL through nginx, with its prefix."""
        return f"https://localhost:{self.port}/paglets"

    def log(self) -> str:
        parts = [self.tmp / "nginx.out", self.tmp / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
