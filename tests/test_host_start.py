"""What ``paglets-host`` does before it says it is ready: what serving needs, no more.

A host that restarts (under systemd, or on a new commit with auto-update) is
down until it is ready, and most of that time is imports. The modules of parts
that no request needs at once stay out of its start: each is imported where it
is first used, by the call, option or first start that needs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.hostproc import env_without_key

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120.0

DEFERRED = (
    "psutil",  # the compute hooks' attach (and the resource sampler's first sample)
    "paglets.services.compute.contract",  # the scheduler's records: its own process's
    "paglets.services.compute.service",
    "paglets.update.updater",  # with --git-auto-update only
    "importlib.resources",  # the bundled launch file, copied on a first start only
)

# The daemon as paglets-host runs it, which once ready (its own ready file
# written) prints the modules it had imported, and stops.
DAEMON = """
import json, sys
from paglets.cli import host as cli

def ready(path, host):
    written(path, host)
    print(json.dumps(sorted(sys.modules)), flush=True)
    host.request_stop()

written, cli._write_ready_file = cli._write_ready_file, ready
sys.argv[0] = "paglets-host"
cli.main()
"""


def test_a_ready_host_has_not_imported_what_can_wait(tmp_path: Path) -> None:
    # the bundled default launch file: it declares the compute-slot service, so the
    # host wires its compute hooks, by name only
    launch = tmp_path / "launch.toml"
    launch.write_text((ROOT / "launch.toml").read_text())
    argv = [sys.executable, "-c", DAEMON, "--name", "s", "--port", "0", "--config", str(launch)]
    argv += ["--state-dir", str(tmp_path / "state"), "--ready-file", str(tmp_path / "ready")]
    done = subprocess.run(
        argv,
        env=env_without_key(),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert {"paglets.host", "paglets.services.compute.hooks"} <= modules, "it started"
    assert sorted(modules.intersection(DEFERRED)) == []
