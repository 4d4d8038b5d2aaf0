"""Job groups: a collector gathers every member's result or failure, a lost host's too;
``paglets-analysis-jobs`` and ``paglets-compute-groups`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from typing import TYPE_CHECKING, Any

from paglets import AsyncHostClient, HostClient
from paglets.services.compute.group import STATUS, submit_group
from pagletstest import host_env
from tests.hostproc import command, env_without_key
from tests.test_compute_host import HOLD, Jobs, launch, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

FAST = ("--gossip-interval", "0.1", "--offline-after", "1")


def two_hosts(start: Callable[..., RunningHost], tmp_path: Path) -> tuple[RunningHost, ...]:
    env = host_env(env_without_key())
    ada = start("--config", str(launch(tmp_path)), *FAST, env=env, name="ada")
    bob = start("--config", str(launch(tmp_path)), "--peer", ada.url, *FAST, env=env, name="bob")
    with HostClient(ada.url) as client:
        wait_for(lambda: [h.online for h in client.hosts()] == [True, True], "the mesh")
    return ada, bob


def run(script: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(script, module), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env_without_key(),
    )


def test_analysis_jobs_spread_over_the_mesh_and_the_group_table_shows_them(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    ada, _bob = two_hosts(start_host, tmp_path)
    args = ("--tasks", "3", "--target-runtime", "0.2", "--url", ada.url, "--json")
    result = run("paglets-analysis-jobs", "paglets.cli.analysisjobs", *args)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["total"], status["done"], status["failed"]) == (3, 3, 0)
    assert status["completed_at"] > 0
    assert sorted(m["host"] for m in status["members"]) == ["ada", "ada", "bob"]
    assert sorted(m["result"]["task"] for m in status["members"]) == [0, 1, 2]
    groups = "paglets.cli.computegroups"
    listed = run("paglets-compute-groups", groups, "list", "--url", ada.url)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert (row[0], row[2:]) == (status["group"], ["3", "3", "0", "yes"])
    shown = run("paglets-compute-groups", groups, "show", status["group"], "--url", ada.url)
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[3] for line in shown.stdout.splitlines()[1:]] == ["done"] * 3
    told = run("paglets-user-info", "paglets.cli.userinfo", "list", "--url", ada.url, "--json")
    assert told.returncode == 0, told.stderr
    notices = [n for n in json.loads(told.stdout)["notices"] if n["title"].startswith("group ")]
    assert [(n["message"], n["severity"]) for n in notices] == [("3 done, 0 failed", "info")]


def test_the_collector_is_told_of_failures_kills_and_a_lost_host(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    ada, bob = two_hosts(start_host, tmp_path)
    jobs = Jobs.__new__(Jobs)
    jobs.dir = tmp_path / "jobs"
    jobs.dir.mkdir()

    def hold(name: str, **state: object) -> dict[str, Any]:
        until = str(jobs.dir / f"{name}.go")
        return {"name": name, "until": until, "started": str(jobs.dir), "cores": 1, **state}

    async def submit() -> str:
        async with AsyncHostClient(ada.url) as a, AsyncHostClient(bob.url) as b:
            # round robin: ok and killed on ada, lost and bad on bob
            states = [hold("ok"), hold("lost"), hold("killed"), hold("bad", fail="no data")]
            return await submit_group(a, HOLD, states, name="g", hosts=[("ada", a), ("bob", b)])

    group = asyncio.run(submit())
    with HostClient(ada.url) as client:
        collector = client.proxy(group)
        for name in ("ok", "lost", "killed"):
            jobs.wait_started(name)
        jobs.release("ok")
        members = {m["name"]: m for m in collector.send(STATUS)["members"]}
        wait_for(lambda: collector.send(STATUS)["failed"] == 1, "bad's failure")
        killed = next(p for p in client.list() if p.agent_id == members["killed"]["agent_id"])
        os.kill(killed.pid or 0, signal.SIGKILL)
        bob.process.send_signal(signal.SIGKILL)
        bob.process.wait()
        status = wait_for(
            lambda: (s := collector.send(STATUS))["completed_at"] and s, "a complete group"
        )
    by_name = {m["name"]: m for m in status["members"]}
    assert by_name["ok"]["phase"] == "done"
    assert by_name["bad"]["failure"] == "RuntimeError: no data"
    assert by_name["killed"]["failure"].startswith("crashed")
    assert by_name["lost"]["failure"].startswith("HostLost")
    assert (status["done"], status["failed"]) == (1, 3)
