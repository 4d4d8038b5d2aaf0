"""``paglets-compute-slots`` as a user runs it, against real hosts; ``why`` per reason code."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from paglets import HostClient
from paglets.services.compute.contract import HostSlots, JobInfo, WhyReply
from paglets.services.compute.whyview import explain
from pagletstest import host_env
from tests.hostproc import command, env_without_key
from tests.test_compute_host import Jobs, job_of, launch, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

CLI = command("paglets-compute-slots", "paglets.cli.computeslots")
G = 1 << 30
M = 1 << 20


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env_without_key(),
    )


def ok(url: str, *args: str) -> str:
    result = cli(url, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def why_json(url: str, job_id: str) -> dict[str, Any]:
    return json.loads(ok(url, "why", job_id, "--json"))  # type: ignore[no-any-return]


def test_why_names_each_reason_with_its_figures_and_the_tables_show_the_jobs(  # noqa: PLR0915
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    host = start_host("--config", str(launch(tmp_path)), env=host_env(env_without_key()))
    url = host.url
    with HostClient(url) as client:
        jobs = Jobs(client, tmp_path)
        jobs.submit("big", cores=2, submitter="alice")
        jobs.wait_started("big")
        jobs.submit("next", cores=2, ram=24 * M, submitter="bob")
        pending = job_of(client, "next")  # queued before "behind" is even made: each
        jobs.submit("behind", cores=0, submitter="alice")  # job submits from its own process
        behind = job_of(client, "behind")

        text = ok(url, "why", pending.job_id).splitlines()
        assert re.fullmatch(
            rf"{pending.job_id} bob PENDING \d+s reason=Resources queue=1/2", text[0]
        ), text
        assert text[1] == "request cpu=2 ram=24M tmp=0 load/cpu<=1000.00"
        assert text[2] == f"on {host.name}: Resources (cpu)"
        assert text[3] == "0/1 hosts can start it now:"
        assert text[4] == f"  {host.name}  cpu 0/2 free < 2"
        answer = why_json(url, pending.job_id)
        assert (answer["reason"], answer["detail"], answer["feasible"]) == (
            "Resources",
            "cpu",
            True,
        )
        assert answer["hosts"] == [
            {"host": host.name, "can_start": False, "blocked": ["cpu 0/2 free < 2"], "never": False}
        ]

        text = ok(url, "why", behind.job_id).splitlines()
        assert "reason=Priority queue=2/2" in text[0]
        assert text[2] == f"on {host.name}: Priority ({pending.job_id} goes first)"
        assert why_json(url, behind.job_id)["reason"] == "Priority"

        queue = ok(url, "queue").splitlines()
        assert queue[0].split()[:3] == ["#", "JOB", "NAME"]
        assert [line.split()[2] for line in queue[1:]] == ["next", "behind"]
        assert [j["name"] for j in json.loads(ok(url, "queue", "--json"))] == ["next", "behind"]
        ps = ok(url, "ps").splitlines()
        assert ps[1].split()[1:4] == ["big", "alice", "2"]
        assert "big" in ok(url, "top")
        status = json.loads(ok(url, "status", "--json"))
        assert (status["free_cores"], status["running"], status["pending"]) == (0, 1, 2)
        hosts = ok(url, "hosts").splitlines()
        assert hosts[1].split()[:2] == [host.name, "0/2"]

        assert ok(url, "rm", behind.job_id).strip() == f"job {behind.job_id} cancelled"
        jobs.release("big")
        jobs.wait_started("next")
        jobs.release("next")
        wait_for(lambda: job_of(client, "next").status == "DONE", "next done")
        history = ok(url, "history").splitlines()
        assert history[0].split()[:4] == ["JOB", "NAME", "SUBMITTER", "STATUS"]
        rows = {line.split()[1]: line.split() for line in history[1:]}
        assert rows["next"][3] == "DONE"
        assert rows["behind"][3] == "CANCELLED"
        assert rows["big"][3] == "DONE"
        done = next(j for j in json.loads(ok(url, "history", "--json")) if j["name"] == "big")
        assert done["peak_rss"] > 0, "sampled while it ran"

        bad = cli(url, "why", "not-a-job")
        assert bad.returncode == 2
        assert "is not a job id" in bad.stderr
        unknown = cli(url, "why", "0123456789ab")
        assert unknown.returncode == 2
        assert f"host {host.name} knows no job 0123456789ab" in unknown.stderr


def test_why_says_group_limit_and_load_gate(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    host = start_host("--config", str(launch(tmp_path)), env=host_env(env_without_key()))
    with HostClient(host.url) as client:
        jobs = Jobs(client, tmp_path)
        jobs.submit("g1", cores=1, group="sweep", group_limit=1)
        jobs.wait_started("g1")
        jobs.submit("g2", cores=1, group="sweep", group_limit=1)
        answer = why_json(host.url, job_of(client, "g2").job_id)
        assert (answer["reason"], answer["detail"]) == ("GroupLimit", "group sweep has 1/1 running")
        assert "reason=GroupLimit" in ok(host.url, "why", job_of(client, "g2").job_id)
    burner = subprocess.Popen(["python3", "-c", "while True: pass"])
    try:
        config = launch(tmp_path, "gated.toml", max_load_per_cpu=0.01)
        gated = start_host("--config", str(config), env=host_env(env_without_key()))
        with HostClient(gated.url) as client:
            jobs = Jobs(client, tmp_path)
            jobs.submit("held", cores=1)
            job = job_of(client, "held")
            answer = why_json(gated.url, job.job_id)
            assert answer["reason"] == "LoadGate"
            assert re.fullmatch(r"load/cpu \d+\.\d\d > 0\.01", answer["detail"])
            text = ok(gated.url, "why", job.job_id)
            assert "reason=LoadGate" in text
            assert re.search(r"load/cpu \d+\.\d\d > 0\.01 \(LoadGate\)", text)
    finally:
        burner.kill()
        burner.wait()


def _slots(name: str, cores: int, ram: int, free_ram: int) -> HostSlots:
    return HostSlots(name, cores, ram, 40 * G, cores, free_ram, 40 * G, 0.5, 1.0, 0, 0)


def test_why_says_infeasible_and_host_lost_from_the_mesh_figures() -> None:
    job = JobInfo(job_id="4f2a0c1e9b7d", host="ada", submitter="alice", status="PENDING")
    job.cores, job.ram, job.tmp, job.submitted_at = 8, 96 * G, 0, 0.0
    reply = WhyReply(job, "Resources", "ram", 2, 5)
    hosts = [_slots("ada", 16, 64 * G, 12 * G), _slots("babbage", 16, 32 * G, 32 * G)]
    answer = explain(reply, hosts, ["curie"], 192.0)
    assert answer.lines == [
        "4f2a0c1e9b7d alice PENDING 3m12s reason=Infeasible queue=2/5",
        "request cpu=8 ram=96G tmp=0 load/cpu<=1.00",
        "on ada: Infeasible (ram)",
        "it can never run: no host has that much",
        "0/3 hosts can start it now:",
        "  ada      ram 12G free < 96G  [never: ram total 64G]",
        "  babbage  ram 32G free < 96G  [never: ram total 32G]",
        "  curie    offline (HostLost)",
    ]
    assert answer.to_dict()["feasible"] is False
    job.ram = 24 * G
    lost = explain(WhyReply(job, "Resources", "ram", 1, 1), hosts, ["ada"], 5.0)
    assert lost.reason == "HostLost"
    assert lost.lines[0].endswith("reason=HostLost queue=1/1")


def test_hosts_shows_an_offline_host_as_host_lost(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    fast = ("--gossip-interval", "0.1", "--offline-after", "1")
    env = host_env(env_without_key())
    first = start_host("--config", str(launch(tmp_path)), *fast, env=env)
    second = start_host("--config", str(launch(tmp_path)), "--peer", first.url, *fast, env=env)
    wait_for(lambda: second.name in ok(first.url, "hosts"), "the second host listed")
    second.process.send_signal(signal.SIGKILL)
    second.process.wait()
    lines = wait_for(
        lambda: [ln for ln in ok(first.url, "hosts").splitlines() if "HostLost" in ln],
        "HostLost",
    )
    assert lines[0].split()[0] == second.name
    data = json.loads(ok(first.url, "hosts", "--json"))
    assert data["lost"] == [second.name]
    assert [h["host"] for h in data["hosts"]] == [first.name]


@pytest.mark.parametrize("args", [("why",), ("rm",)])
def test_a_missing_job_argument_is_a_usage_error(args: tuple[str, ...]) -> None:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 2
    assert "Missing argument 'JOB'" in result.stderr
