"""``paglets-pi-compute``: the Chudnovsky terms computed by worker paglets on three
host processes, merged in order, and the digits checked against Machin's formula."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from examples import pi
from paglets import HostClient
from tests.hostproc import command, mesh_of, run_script

SLOTS = str(Path(__file__).parent / "pagletstest" / "slots.toml")

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from tests.hostproc import RunningHost

PI_CMD = command("paglets-pi-compute", "paglets.cli.pi")
# sha256 of "3." and the first 1,000 decimals of Pi, which end in ...2164201989
PI_1000_SHA256 = "823a2e34f63c5d5f30a27733976df5a1ab57feaab505f40d95d3dd3fefa425cc"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script(PI_CMD, *args)


def test_ranges_computed_apart_and_combined_in_order_give_the_known_digits() -> None:
    total = pi.terms_for(1000)
    whole = pi.split(0, total)
    cuts = [0, 3, 4, 40, total]
    parts = [pi.from_hex(pi.to_hex(pi.split(a, b))) for a, b in itertools.pairwise(cuts)]
    merged = parts[0]
    for part in parts[1:]:
        merged = pi.combine(merged, part)
    assert merged == whole
    digits = pi.pi_digits(merged, 1000)
    assert digits.endswith("2164201989")
    assert hashlib.sha256(digits.encode()).hexdigest() == PI_1000_SHA256
    assert pi.machin_digits(1000) == digits
    assert pi.pi_digits(pi.split(0, pi.terms_for(5)), 5) == "3.14159"
    with pytest.raises(ValueError, match="hexadecimal"):
        pi.from_hex({"p": "0x1"})


def test_pi_is_computed_across_three_hosts_and_verified(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    first, *others = mesh_of(start_host, 3, "--config", SLOTS)
    output = tmp_path / "pi.txt"
    result = _run("--digits", "1000", "--url", first.url, "--json", "--output", str(output))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["verified"] is True
    assert answer["digits"] == 1000
    assert hashlib.sha256(answer["pi"].encode()).hexdigest() == PI_1000_SHA256
    assert output.read_text() == answer["pi"] + "\n"
    names = {first.name, *(h.name for h in others)}
    assert {w["host"] for w in answer["workers"]} == names, "a worker on every host"
    assert sum(w["terms"] for w in answer["workers"]) == answer["terms"] == pi.terms_for(1000)
    assert all(w["ranges"] >= 1 for w in answer["workers"])
    for host in (first, *others):
        with HostClient(host.url) as client:
            left = [p.agent_id for p in client.list() if not p.agent_id.startswith("service.")]
            assert left == [], f"the jobs on {host.name} were disposed of"
            (slots,) = [s for s in client.services() if s.contract == "compute-slots.v1"]
            assert slots.status != "advertised", "the ranges went through compute slots"
    assert len(answer["workers"]) == 3

    big = _run("--digits", "10000", "--url", first.url)
    assert big.returncode == 0, big.stderr
    assert "10000 digits" in big.stdout
    assert "verified by Machin's formula" in big.stdout
    assert "…" in big.stdout.splitlines()[-2]


def test_a_host_that_is_not_in_the_mesh_is_refused_and_nothing_is_left(
    start_host: Callable[..., RunningHost],
) -> None:
    host = start_host()
    result = _run("--digits", "100", "--url", host.url, "--host", host.name, "--host", "nowhere")
    assert result.returncode == 2
    assert "nowhere" in result.stderr
    with HostClient(host.url) as client:
        assert client.list() == [], "the worker already created was disposed of"


def test_hosts_without_compute_slots_get_one_worker_each(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text("[host]\n")
    first, second = mesh_of(start_host, 2, "--config", str(bare))
    result = _run("--digits", "1000", "--url", first.url, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert hashlib.sha256(answer["pi"].encode()).hexdigest() == PI_1000_SHA256
    assert {w["host"] for w in answer["workers"]} == {first.name, second.name}
    assert all(w["seconds"] > 0 for w in answer["workers"]), "answered as messages"
    for host in (first, second):
        with HostClient(host.url) as client:
            assert client.list() == []
