"""``paglets-mesh-benchmark`` run as a user runs it, on three real host processes."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from examples.mesh_benchmark import route
from paglets.cli.mesh_benchmark import clocks, pairs
from tests.hostproc import command, env_without_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.hostproc import RunningHost

BENCHMARK = command("paglets-mesh-benchmark", "paglets.cli.mesh_benchmark")
NAMES = ("alpha", "beta", "gamma")


def _run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCHMARK, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env_without_key(PAGLETS_URL=url),
    )


@pytest.fixture
def hosts(start_host: Callable[..., RunningHost]) -> list[RunningHost]:
    started: list[RunningHost] = []
    for name in NAMES:
        peers = ("--peer", started[0].url) if started else ()
        started.append(start_host(*peers, "--gossip-interval", "0.2", name=name))
    return started


def test_the_json_has_every_directed_pair(hosts: list[RunningHost]) -> None:
    result = _run(hosts[0].url, "--payload-size", "64K", "--repeats", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["entry"], data["hosts"]) == ("alpha", list(NAMES))
    assert data["payload_size"] == 64 << 10
    assert data["hops"] == 12  # every pair of 3 hosts, twice
    found = {(p["source"], p["target"]): p for p in data["pairs"]}
    assert set(found) == set(itertools.permutations(NAMES, 2))
    for pair in found.values():
        assert pair["samples"] == 2
        assert 0 < pair["latency_ms_min"] <= pair["latency_ms"] < 60_000
        assert pair["throughput_mib_s"] > 0
    assert [c["host"] for c in data["clocks"]] == list(NAMES)
    for clock in data["clocks"]:
        assert clock["samples"] >= 2
        assert clock["rtt_ms_min"] > 0
        assert abs(clock["offset_ms"]) < 1000  # one machine, one clock
    assert data["total_seconds"] >= data["tour_seconds"] > 0


def test_the_matrix_and_the_refusals(hosts: list[RunningHost]) -> None:
    result = _run(hosts[0].url, "--hosts", "gamma,beta")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| from \\ to | gamma | beta |" in out
    assert "| **gamma** | - | " in out
    assert " MiB/s | - |" in out  # beta's row: gamma, then itself
    assert "Clocks and messages (from each host to the entry host alpha)" in out
    assert "hops in" in out

    alone = _run(hosts[0].url, "--hosts", "alpha")
    assert alone.returncode == 2
    assert "two or more online hosts" in alone.stderr
    big = _run(hosts[0].url, "--payload-size", "65MiB")
    assert big.returncode == 2
    assert "at most 64MiB" in big.stderr


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_the_route_takes_every_directed_pair_once_per_repeat(count: int) -> None:
    names = [f"h{i}" for i in range(count)]
    for repeats in (1, 3):
        walk = route(names, repeats)
        assert walk[0] == walk[-1] == "h0"
        hops = list(itertools.pairwise(walk))
        assert len(hops) == count * (count - 1) * repeats
        assert Counter(hops) == dict.fromkeys(itertools.permutations(names, 2), repeats)


def test_latencies_are_on_the_entry_hosts_clock() -> None:
    # beta's clock is 10 s behind the entry host's, known within 1 ms
    samples = [
        {"host": "alpha", "rtt": 0.002, "offset": 0.0001},
        {"host": "beta", "rtt": 0.002, "offset": 10.0},
        {"host": "beta", "rtt": 0.5, "offset": 9.0},
    ]
    offsets = clocks(samples)
    assert offsets["beta"].offset == 10.0  # from the fastest round trip
    assert offsets["alpha"].correction == 0.0  # within its uncertainty
    hops = [
        {"source": "alpha", "target": "beta", "departed": 100.0, "arrived": 90.05},
        {"source": "beta", "target": "alpha", "departed": 90.1, "arrived": 100.2},
    ]
    found = {(p.source, p.target): p.latencies[0] for p in pairs(hops, offsets)}
    assert found == pytest.approx({("alpha", "beta"): 0.05, ("beta", "alpha"): 0.1})
