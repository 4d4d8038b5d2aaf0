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
from typing import Any

import pytest

from paglets.cli.host import CODE_SAVE_DELAY
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

# Counts, in a test's process, the dataclass methods the standard library's compile
# makes (those the cache did not serve), as ``outside``.
COUNT_COMPILES = """
import dataclasses, functools

# dataclass methods made by the standard library's compile, not served by the cache
outside = 0
made = dataclasses._create_fn

@functools.wraps(made)
def counted(*args, **kwargs):
    global outside
    outside += 1
    return made(*args, **kwargs)

dataclasses._create_fn = counted
"""

# The daemon as paglets-host runs it, which once ready (its own ready file
# written) prints the modules it had imported and how many dataclass methods it
# compiled, and stops (after argv[1] seconds).
DAEMON = (
    COUNT_COMPILES
    + """
import asyncio, gc, json, sys

from paglets.cli import host as cli
from paglets.runtime import dataclasscode
from paglets.transport import cacerts

stay = float(sys.argv[1])

def collections():
    return [generation["collections"] for generation in gc.get_stats()]

def ready(path, host):
    written(path, host)
    seen = {
        "modules": sorted(sys.modules),
        "compiled": dataclasscode.compiled(),
        "outside_cache": outside,
        "collections": [n - m for n, m in zip(collections(), before)],
        "collecting": gc.isenabled(),
        "ca_loading": cacerts._loading is not None,
    }
    print(json.dumps(seen), flush=True)
    asyncio.get_running_loop().call_later(stay, host.request_stop)

written, cli._write_ready_file = cli._write_ready_file, ready
sys.argv[0:2] = ["paglets-host"]
before = collections()
cli.main()
"""
)


def _daemon(
    tmp_path: Path, *, stay: float = 0.0, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run the daemon with the bundled default launch file until ready (and ``stay`` s)."""
    # it declares the compute-slot service, so the host wires its compute hooks
    launch = tmp_path / "launch.toml"
    launch.write_text((ROOT / "launch.toml").read_text())
    argv = [sys.executable, "-c", DAEMON, str(stay), "--name", "s", "--port", "0"]
    argv += ["--config", str(launch), "--state-dir", str(tmp_path / "state")]
    argv += ["--ready-file", str(tmp_path / "ready")]
    done = subprocess.run(
        argv,
        env=env or env_without_key(),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return seen


def test_a_ready_host_has_not_imported_what_can_wait(tmp_path: Path) -> None:
    seen = _daemon(tmp_path)
    modules = set(seen["modules"])
    assert {"paglets.host", "paglets.services.compute.hooks"} <= modules, "it started"
    assert sorted(modules.intersection(DEFERRED)) == []
    assert seen["ca_loading"] is False, "no TLS connection: no CA certificates loaded"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="dataclasscode: Python 3.11 only")
def test_a_restarted_host_compiles_no_dataclass_method(tmp_path: Path) -> None:
    # a host that may write bytecode, with a cache directory of its own
    env = {k: v for k, v in env_without_key().items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPYCACHEPREFIX": str(tmp_path)}
    first = _daemon(tmp_path, stay=CODE_SAVE_DELAY + 1.0, env=env)
    assert first["compiled"] > 0
    second = _daemon(tmp_path, env=env)
    assert second["compiled"] == 0, "the first wrote what it compiled"
    # from its first import: the options', the config's and paglets.core's classes too
    assert second["outside_cache"] == 0


def test_a_starting_host_does_not_collect_until_ready(tmp_path: Path) -> None:
    # from paglets-host's main() to ready: what it makes then lives as long as it does
    seen = _daemon(tmp_path)
    young, middle, full = seen["collections"]
    assert (young, middle) == (0, 0)
    assert full == 1, "one full collection once ready (warmup.freeze_heap)"
    assert seen["collecting"], "and the collector on again"


# The zygote's boot (its imports and warm-up), as `paglets.runtime.zygote.main` runs it.
ZYGOTE_BOOT = (
    COUNT_COMPILES
    + """
import gc, json

gc.callbacks.append(lambda phase, info: phase == "start" and walks.append(info["generation"]))
walks = []

from paglets.runtime import zygote

outside = 0  # what its boot does, not its own module's import
walks.clear()
zygote._preload([])
seen = {"outside_cache": outside, "walks": walks, "collecting": gc.isenabled()}
seen["standard"] = dataclasses._create_fn is counted
print(json.dumps(seen))
"""
)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="dataclasscode: Python 3.11 only")
def test_the_zygote_boots_on_the_hosts_cache_without_collections(tmp_path: Path) -> None:
    env = env_without_key() | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    fill = [sys.executable, "-m", "paglets.runtime.dataclasscode"]  # as ./run does
    subprocess.run(fill, env=env, check=True, timeout=START_TIMEOUT)
    done = subprocess.run(
        [sys.executable, "-c", ZYGOTE_BOOT],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=True,
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["outside_cache"] == 0, "the runtime's dataclasses came from the cache"
    assert seen["walks"] == [2], "one full collection, before the freeze"
    # and as usual for the zygote and its children after
    assert seen["standard"]
    assert seen["collecting"]


# paglets-host as it runs, which says what threads it has once its Host is made (just
# before its event loop runs) and, once ready, whether its journal is there; then stops.
THREADS_AT_HOST = """
import asyncio, json, sys, threading

from paglets.cli import host as cli

seen = {}
run = asyncio.run

def counted(main):
    seen["threads"] = sorted(thread.name for thread in threading.enumerate())
    return run(main)

def ready(path, host):
    written(path, host)
    seen["journal"] = host.config.store_path.exists()
    print(json.dumps(seen), flush=True)
    host.request_stop()

asyncio.run = counted
written, cli._write_ready_file = cli._write_ready_file, ready
sys.argv[0] = "paglets-host"
cli.main()
"""


def test_a_starting_host_opens_its_journal_while_it_imports(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", THREADS_AT_HOST, "--name", "j", "--port", "0"]
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
    seen = json.loads(done.stdout.splitlines()[-1])
    # made before its event loop runs, so that a new database is made beside the imports
    assert any(name.startswith("paglets-store") for name in seen["threads"]), seen
    assert seen["journal"]
