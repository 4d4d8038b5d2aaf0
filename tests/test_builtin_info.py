"""server-info and mesh-info: ``paglets-sysinfo`` and ``paglets-mesh-info`` on real hosts.

Three ``paglets-host`` processes meet; the commands run as a user runs them and
their ``--json`` is checked field by field against what psutil says of this
machine. A host SIGKILLed and one SIGSTOPped during ``paglets-sysinfo summary``
show as such within ``--timeout``. The resource snapshot is checked where it is
decoded, and the target selection on real records.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from paglets import HostClient
from paglets.builtins.serverinfo import SERVER_INFO, LoadRequest, PsRequest, SummaryRequest
from paglets.cli.sysinfo import gather
from paglets.core.errors import RequestError
from paglets.launch.files import bundled_text
from paglets.launch.parse import parse_launch
from paglets.wire.resources import HostResources
from pagletstest import host_env
from tests.hostproc import command, env_without_key, free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.hostproc import RunningHost

SYSINFO = command("paglets-sysinfo", "paglets.cli.sysinfo")
MESH_INFO = command("paglets-mesh-info", "paglets.cli.meshinfo")
SHM = Path("/dev/shm")


def _run(argv: list[str], url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env_without_key(PAGLETS_URL=url),
    )


def _json(argv: list[str], url: str) -> Any:
    result = _run(argv, url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _mesh(
    start_host: Callable[..., RunningHost], *extra: str, offline_after: str = "1.5"
) -> list[RunningHost]:
    """alpha, beta (tagged gpu) and gamma, met, each with resources in alpha's table."""
    env = host_env(env_without_key())
    fast = ("--gossip-interval", "0.1", "--offline-after", offline_after)
    alpha = start_host(*fast, name="alpha", env=env)
    beta = start_host(*fast, "--peer", alpha.url, "--tag", "gpu", name="beta", env=env)
    gamma = start_host(*fast, "--peer", alpha.url, *extra, name="gamma", env=env)
    with HostClient(alpha.url) as client:
        deadline = time.monotonic() + 30
        while not (
            len(hosts := client.hosts(online=True)) == 3
            and all(h.resources is not None for h in hosts)
        ):
            assert time.monotonic() < deadline, "the three hosts never met"
            time.sleep(0.05)
    return [alpha, beta, gamma]


# -- the commands on real hosts ----------------------------------------------------------------


def test_the_bundled_launch_file_serves_server_info_lazily_on_every_host() -> None:
    services = parse_launch(bundled_text(), Path("launch.toml")).services
    (entry,) = [s for s in services if s.contract == "server-info.v1"]
    assert entry.class_path == "paglets.builtins.serverinfo:ServerInfo"
    assert (entry.start, entry.scope, entry.where) == ("lazy", "host", ())


@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm, a file system of its own")
def test_sysinfo_and_mesh_info_answer_for_every_host_as_json(
    start_host: Callable[..., RunningHost],
) -> None:
    shm = Path(os.environ.get("PAGLETS_TEST_SHM", SHM)) / f"paglets-{os.getpid()}-{free_port()}"
    try:
        _check_the_commands(start_host, shm)
    finally:
        subprocess.run(["rm", "-rf", str(shm)], check=False)


NAMES = ["alpha", "beta", "gamma"]


def _check_the_commands(start_host: Callable[..., RunningHost], shm: Path) -> None:
    alpha, beta, gamma = _mesh(start_host, "--state-dir", str(shm))  # gamma's disk: tmpfs
    _check_summary(alpha)
    _check_df_load_ps(alpha, beta, gamma)
    _check_mesh_summary(alpha)
    _check_targets(alpha, beta)
    _check_a_paglet_choosing(gamma)


def _check_summary(alpha: RunningHost) -> None:
    names = NAMES

    # paglets-sysinfo summary: one answer per host, all ok, fields as psutil sees them
    summary = _json([*SYSINFO, "summary", "--json"], alpha.url)
    assert [a["host"] for a in summary] == names
    memory = psutil.virtual_memory()
    mounts = {p.mountpoint for p in psutil.disk_partitions()}
    for answer in summary:
        assert answer.keys() == {"host", "status", "error", "reply"}
        assert (answer["status"], answer["error"]) == ("ok", None)
        reply = answer["reply"]
        assert reply.keys() == {"load", "disks", "processes"}
        load = reply["load"]
        assert load["host"] == answer["host"], "each host answered for itself"
        assert load["cpu_count"] == psutil.cpu_count()
        assert 0 <= load["cpu_percent"] <= 100
        assert load["load_1"] >= 0
        assert load["memory"]["total"] == memory.total
        assert 0 < load["memory"]["available"] <= memory.total
        assert load["swap"].keys() == {"total", "used", "free", "percent"}
        assert load["uptime"] > 0
        assert {d["mount"] for d in reply["disks"]} <= mounts
        root = next(d for d in reply["disks"] if d["mount"] == "/")
        assert root["total"] == psutil.disk_usage("/").total
        assert root["used"] + root["free"] <= root["total"]
        assert reply["processes"] > 3


def _check_df_load_ps(alpha: RunningHost, beta: RunningHost, gamma: RunningHost) -> None:
    memory = psutil.virtual_memory()
    # df, load and ps, through another host and for some hosts only
    df = _json([*SYSINFO, "df", "--json", "--host", "beta", "--url", gamma.url], alpha.url)
    assert [a["host"] for a in df] == ["beta"]
    assert df[0]["reply"]["host"] == "beta"
    assert any(d["mount"] == "/" for d in df[0]["reply"]["disks"])
    loads = _json([*SYSINFO, "load", "--json"], beta.url)
    assert [a["reply"]["cpu_count"] for a in loads] == [psutil.cpu_count()] * 3
    host_pid = str(beta.process.pid)
    ps = _json([*SYSINFO, "ps", "--json", "--name", "paglets-host", "--limit", "2"], alpha.url)
    for answer in ps:
        reply = answer["reply"]
        assert reply["matched"] >= 3, "three hosts run on this machine"
        assert len(reply["processes"]) == 2, "--limit bounds the list"
        for proc in reply["processes"]:
            assert proc.keys() == {"pid", "name", "user", "status", "rss", "cpu_seconds"}
            assert proc["name"] == "paglets-host"
            assert proc["rss"] > 0
    mine = _json([*SYSINFO, "ps", "--json", "--name", "paglets-host", "--limit", "500"], beta.url)
    assert host_pid in {str(p["pid"]) for p in mine[0]["reply"]["processes"]}
    nobody = _json([*SYSINFO, "ps", "--json", "--user", "no-such-user-x"], alpha.url)
    assert [a["reply"]["matched"] for a in nobody] == [0, 0, 0]

    # the same service, typed, from a script
    with HostClient(alpha.url) as client:
        typed = client.service(SERVER_INFO, where="gamma").load(LoadRequest())
        assert typed.host == "gamma"
        assert typed.memory.total == memory.total
        with pytest.raises(RequestError, match="limit must be 1 to 500, not 0"):
            client.service(SERVER_INFO).ps(PsRequest(limit=0))


def _check_mesh_summary(alpha: RunningHost) -> None:
    names = NAMES
    memory = psutil.virtual_memory()
    # a table by default: one row per host
    table = _run([*SYSINFO, "summary"], alpha.url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOST", "STATUS", "CPUS"]
    assert [line.split()[:2] for line in lines[1:]] == [[n, "ok"] for n in names]

    # paglets-mesh-info summary: alpha's snapshot of every host, no host asked
    snapshot = _json([*MESH_INFO, "summary", "--json"], alpha.url)
    assert [s["name"] for s in snapshot] == names
    by_name = {s["name"]: s for s in snapshot}
    assert by_name["beta"]["tags"] == ["gpu"]
    assert by_name["alpha"]["url"] == alpha.url
    for row in snapshot:
        assert row["online"] is True
        assert "server-info.v1" in row["services"]
        res = row["resources"]
        assert res.keys() == set(HostResources.__slots__)
        assert res["cpu_count"] == len(os.sched_getaffinity(0))
        assert res["memory_total"] == memory.total
        assert row["load_per_cpu"] == pytest.approx(res["load_1"] / res["cpu_count"], abs=1e-3)
        assert res["paglets_active"] >= 1, "its server-info service runs"
    assert by_name["gamma"]["resources"]["disk_total"] == psutil.disk_usage(str(SHM)).total
    root_usage = psutil.disk_usage(str(alpha.ready_file.parent))
    assert by_name["beta"]["resources"]["disk_total"] == root_usage.total


def _check_targets(alpha: RunningHost, beta: RunningHost) -> None:
    names = NAMES
    memory = psutil.virtual_memory()
    shm_usage = psutil.disk_usage(str(SHM))
    root_usage = psutil.disk_usage(str(alpha.ready_file.parent))

    # paglets-mesh-info targets: each constraint filters
    def targets(*args: str) -> list[str]:
        found = _json([*MESH_INFO, "targets", "--json", *args], beta.url)
        assert [t["rank"] for t in found] == list(range(1, len(found) + 1))
        return [t["name"] for t in found]

    assert sorted(targets()) == names
    assert targets("--tag", "gpu") == ["beta"]
    assert targets("--tag", "gpu", "--tag", "lab") == []
    assert targets("--min-free-memory", f"{memory.total + 1}") == []
    assert sorted(targets("--max-load-per-cpu", "100000")) == names
    assert targets("--limit", "1") in (["alpha"], ["beta"], ["gamma"])
    if shm_usage.free * 2 < root_usage.free:  # the two file systems tell the hosts apart
        between = (shm_usage.free + root_usage.free) // 2
        assert sorted(targets("--min-free-disk", str(between))) == ["alpha", "beta"]
        assert targets("--min-free-disk", str(between), "--tag", "gpu") == ["beta"]
    bad = _run([*MESH_INFO, "targets", "--min-free-disk", "lots"], alpha.url)
    assert bad.returncode == 2
    assert "'lots' is not a size" in bad.stderr


def _check_a_paglet_choosing(gamma: RunningHost) -> None:
    names = NAMES
    # a paglet chooses by the same selection: self.context.targets(...)
    with HostClient(gamma.url) as client:
        chooser = client.create("pagletstest.placement:Chooser")
        chosen = chooser.send("choose", {"tags": ["gpu"], "min_free_memory": 1 << 20})
        assert chosen == [{"rank": 1, "name": "beta", "cpu_count": len(os.sched_getaffinity(0))}]
        everyone = chooser.send("choose", {"max_load_per_cpu": 1e5, "limit": 3})
        assert sorted(c["name"] for c in everyone) == names
        with pytest.raises(RequestError, match=r"limit must be an integer 1\.\.1000"):
            chooser.send("choose", {"limit": 0})
        with pytest.raises(RequestError, match="tags must be a list of tags, not the string"):
            chooser.send("choose", {"tags": "gpu"})


def test_a_host_killed_or_stopped_shows_within_the_timeout(
    start_host: Callable[..., RunningHost],
) -> None:
    alpha, beta, gamma = _mesh(start_host, offline_after="6")
    warm = _json([*SYSINFO, "summary", "--json"], alpha.url)  # every service started
    assert [a["status"] for a in warm] == ["ok", "ok", "ok"]
    os.kill(beta.process.pid, signal.SIGSTOP)
    os.kill(gamma.process.pid, signal.SIGSTOP)
    try:
        # two silent hosts are waited for at once, each within the timeout
        started = time.monotonic()
        both = asyncio.run(gather(alpha.url, "summary", SummaryRequest(), timeout=1.5))
        took = time.monotonic() - started
        assert sorted((a.name, a.status) for a in both) == [
            ("alpha", "ok"),
            ("beta", "timeout"),
            ("gamma", "timeout"),
        ]
        assert both[1].error == "no answer within 1.5 s"
        assert took < 2.6, f"one after the other, not at once: {took:.1f} s"
        os.kill(beta.process.pid, signal.SIGCONT)
        beta.process.kill()
        beta.process.wait()
        started = time.monotonic()
        result = _run([*SYSINFO, "summary", "--json", "--timeout", "2"], alpha.url)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        answers = {a["host"]: a for a in json.loads(result.stdout)}
        assert answers["alpha"]["status"] == "ok"
        assert answers["beta"]["status"] in ("unavailable", "offline"), answers["beta"]
        assert answers["beta"]["reply"] is None
        assert answers["gamma"]["status"] in ("timeout", "offline"), answers["gamma"]
        assert answers["gamma"]["reply"] is None
        assert took < 2 + 8, f"the stopped host held the table up: {took:.1f} s"
        # once the mesh sees them silent, both are offline at once, with how long
        deadline = time.monotonic() + 30
        while True:
            later = _json([*SYSINFO, "summary", "--json", "--timeout", "2"], alpha.url)
            if [a["status"] for a in later] == ["ok", "offline", "offline"]:
                break
            assert time.monotonic() < deadline, later
        assert later[1]["error"].startswith("offline for ")
        table = _run([*SYSINFO, "summary"], alpha.url)
        assert [line.split()[:2] for line in table.stdout.splitlines()[1:]] == [
            ["alpha", "ok"],
            ["beta", "OFFLINE"],
            ["gamma", "OFFLINE"],
        ]
        assert "beta: offline: offline for " in table.stderr
        snapshot = _json([*MESH_INFO, "summary", "--json"], alpha.url)
        assert [s["online"] for s in snapshot] == [True, False, False]
        assert _json([*MESH_INFO, "targets", "--json"], alpha.url)[0]["name"] == "alpha"
        assert len(_json([*MESH_INFO, "targets", "--json"], alpha.url)) == 1
    finally:
        os.kill(gamma.process.pid, signal.SIGCONT)


def test_no_host_answering_names_the_url_and_how_to_start_one() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for argv in ([*SYSINFO, "summary"], [*MESH_INFO, "targets"]):
        result = _run(argv, url)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: no paglets host answers at {url} ")
        assert f"start one with 'paglets-host --port {port}'" in result.stderr
