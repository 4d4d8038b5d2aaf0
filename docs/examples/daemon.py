"""Run ``paglets-host`` as a daemon with an API key, talk to it, stop it with SIGTERM.

This is what a supervisor (systemd, a test, a script) does: start the host,
wait for its ready file, use it, send SIGTERM, and expect exit code 0.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paglets import AuthenticationError, HostClient


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"paglets-host exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no ready file after {timeout} s")
        time.sleep(0.05)
    return json.loads(path.read_text())


def main() -> int:
    api_key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        ready_file = Path(tmp) / "ready.json"
        argv = ["paglets-host", "--name", "daemon", "--port", "0"]  # 0: any free port
        argv += ["--state-dir", str(Path(tmp) / "state"), "--ready-file", str(ready_file)]
        argv += ["--log-level", "warning"]
        env = {**os.environ, "PAGLETS_API_KEY": api_key}
        process = subprocess.Popen(argv, env=env)
        try:
            ready = wait_for_file(ready_file, process)
            print("ready:", ready["name"], "pid", ready["pid"])

            # Without the key, every endpoint but /health answers 401.
            with HostClient(ready["url"], api_key="wrong") as stranger:
                print("health without a key:", stranger.health())
                try:
                    stranger.list()
                except AuthenticationError as exc:
                    print("AuthenticationError:", exc)

            with HostClient(ready["url"], api_key=api_key) as host:
                counter = host.create("examples.counter:Counter")
                print("reply:", counter.send("increment", {"by": 3}))
                print("paglets:", [p.class_path for p in host.list()])
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
        print("exit code after SIGTERM:", code)
        print("ready file removed:", not ready_file.exists())
        return code


if __name__ == "__main__":
    sys.exit(main())
