"""``paglets-perf-test``: a parent paglet clones a worker to every host of a three-host
mesh; each checks CPU, memory and disk and reports back; one table per host."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from examples.perftest import Sizes, cpu_check, disk_check, memory_check
from paglets import HostClient
from tests.hostproc import command, mesh_of, run_script

SLOTS = str(Path(__file__).parent / "pagletstest" / "slots.toml")

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from tests.hostproc import RunningHost

PERF_CMD = command("paglets-perf-test", "paglets.cli.perftest")
SMALL = ("--cpu-seconds", "0.05", "--memory-mib", "8", "--disk-mib", "4")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script(PERF_CMD, *args)


def test_the_checks_measure_and_leave_nothing(tmp_path: Path) -> None:
    assert cpu_check(0.02) > 0
    write, read = memory_check(4)
    assert write > 0
    assert read > 0
    write, read = disk_check(tmp_path, 2)
    assert write > 0
    assert read > 0
    assert list(tmp_path.iterdir()) == [], "the test file is removed"
    with pytest.raises(ValueError, match="memory_mib must be from 1 to 4096"):
        Sizes(memory_mib=5000).check()


def _mesh(start_host: Callable[..., RunningHost], n: int) -> list[RunningHost]:
    return mesh_of(start_host, n, "--config", SLOTS)


def test_every_host_is_checked_and_reported(start_host: Callable[..., RunningHost]) -> None:
    hosts = _mesh(start_host, 3)
    result = _run(*SMALL, "--url", hosts[0].url, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    names = {h.name for h in hosts}
    assert set(answer["hosts"]) == names
    assert answer["missing"] == []
    assert answer["failed"] == {}
    assert {r["host"] for r in answer["reports"]} == names
    for report in answer["reports"]:
        assert report["error"] == ""
        assert report["memory_mib"] == 8
        assert report["disk_mib"] == 4
        for rate in ("cpu_mib_s", "memory_write_mib_s", "disk_write_mib_s", "disk_read_mib_s"):
            assert report[rate] > 0, rate
        assert report["peak_rss_mib"] > 8
    for host in hosts:
        with HostClient(host.url) as client:
            deadline = time.monotonic() + 10
            while [p for p in client.list() if not p.agent_id.startswith("service.")]:
                assert time.monotonic() < deadline, f"a paglet was left on {host.name}"
                time.sleep(0.05)
            (slots,) = [s for s in client.services() if s.contract == "compute-slots.v1"]
            assert slots.status != "advertised", "the checks waited for a compute slot"

    table = _run(*SMALL, "--url", hosts[1].url)
    assert table.returncode == 0, table.stderr
    for host in hosts:
        assert f"{host.name} (" in table.stdout, "one table per host"
    assert "summary" in table.stdout
    assert table.stdout.count(" ok") == 3


def test_out_of_range_sizes_are_refused_before_anything_runs(
    start_host: Callable[..., RunningHost],
) -> None:
    host = start_host()
    result = _run("--memory-mib", "99999", "--url", host.url)
    assert result.returncode == 2
    assert "--memory-mib" in result.stderr
    with HostClient(host.url) as client:
        assert client.list() == []


def test_hosts_without_compute_slots_are_checked_all_the_same(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text("[host]\n")
    first, second = mesh_of(start_host, 2, "--config", str(bare))
    result = _run(*SMALL, "--url", first.url, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert {r["host"] for r in answer["reports"]} == {first.name, second.name}
    assert answer["failed"] == {}
