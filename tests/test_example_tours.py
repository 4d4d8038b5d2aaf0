"""``paglets-search`` and ``paglets-disk-survey`` run as a user runs them, on three hosts.

Each host has its own temp directory (``TMPDIR``), and all three take the
test's ``shared`` directory as a ``--file-root``: the same tree is searched on
every host, and ``outside`` is in no host's roots.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.hostproc import command, env_without_key

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

SEARCH = command("paglets-search", "paglets.cli.search")
SURVEY = command("paglets-disk-survey", "paglets.cli.disk_survey")
NAMES = ("alpha", "beta", "gamma")


@dataclass
class Mesh:
    hosts: list[RunningHost]
    shared: Path
    outside: Path

    def run(self, argv: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        env = env_without_key(PAGLETS_URL=self.hosts[0].url)
        return subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=180, check=False, env=env
        )

    def json(self, argv: list[str], *args: str) -> list[dict[str, Any]]:
        result = self.run(argv, *args, "--json")
        assert result.returncode == 0, result.stderr
        found: list[dict[str, Any]] = json.loads(result.stdout)
        return found


@pytest.fixture
def mesh(tmp_path: Path, start_host: Callable[..., RunningHost]) -> Mesh:
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    shared.mkdir()
    outside.mkdir()
    hosts: list[RunningHost] = []
    for name in NAMES:
        tmp = tmp_path / f"{name}-tmp"
        tmp.mkdir()
        peers = ("--peer", hosts[0].url) if hosts else ()
        flags = (*peers, "--file-root", str(shared), "--gossip-interval", "0.2")
        hosts.append(start_host(*flags, name=name, env=env_without_key(TMPDIR=str(tmp))))
    return Mesh(hosts, shared, outside)


def _tree(mesh: Mesh) -> None:
    """30 logs of 5 matching lines each, a long line, and two symlinks out of the roots."""
    logs = mesh.shared / "logs"
    logs.mkdir()
    for i in range(30):
        lines = [f"{i} ERROR number {n}" for n in range(5)] + ["fine"] * 3
        (logs / f"app{i:02}.log").write_text("\n".join(lines) + "\n")
    (mesh.shared / "long.txt").write_text("LONG " + "x" * 20_000 + "\n")
    (mesh.outside / "secret.log").write_text("ERROR secret\n")
    (mesh.shared / "escape").symlink_to(mesh.outside)
    (mesh.shared / "escape.log").symlink_to(mesh.outside / "secret.log")


def test_search_visits_every_host_and_its_output_is_bounded(mesh: Mesh) -> None:
    _tree(mesh)
    found = mesh.json(SEARCH, "grep", "ERROR", str(mesh.shared), "--max-per-host", "7")
    assert [f["host"] for f in found] == list(NAMES)
    for host in found:
        assert len(host["matches"]) == 7
        assert host["truncated"] == "match limit"
        assert not any("secret" in m for m in host["matches"])  # no symlink followed
    capped = mesh.json(
        SEARCH, "grep", "ERROR", str(mesh.shared), "--max-per-host", "7", "--max-total", "10"
    )
    assert [len(f["matches"]) for f in capped] == [7, 3, 0]
    assert {f["truncated"] for f in capped} == {"match limit"}

    everything = mesh.json(SEARCH, "grep", "ERROR", str(mesh.shared), "--max-per-host", "1000")
    assert [len(f["matches"]) for f in everything] == [150] * 3
    assert not any("secret" in m for f in everything for m in f["matches"])
    long = mesh.json(SEARCH, "grep", "^LONG", str(mesh.shared), "--hosts", "beta")
    assert [f["host"] for f in long] == ["beta"]
    (line,) = long[0]["matches"]
    assert line.startswith(f"{mesh.shared}/long.txt:1: LONG x")
    assert len(line) < len(str(mesh.shared)) + 320

    plain = mesh.run(SEARCH, "grep", "ERROR", str(mesh.shared), "--max-per-host", "2")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].startswith(f"alpha:{mesh.shared}/logs/app00.log:1: 0 ERROR")
    assert sum(1 for line in lines if ":" in line and "ERROR" in line) == 6
    assert "HOST" in plain.stdout
    assert "cut short: match limit" in plain.stdout


def test_search_find_and_its_refusals(mesh: Mesh) -> None:
    _tree(mesh)
    found = mesh.json(SEARCH, "find", "app1*.log", str(mesh.shared), "--hosts", "gamma,alpha")
    assert [f["host"] for f in found] == ["gamma", "alpha"]
    assert found[0]["matches"] == [str(mesh.shared / f"logs/app{i}.log") for i in range(10, 20)]
    few = mesh.json(SEARCH, "find", "*", str(mesh.shared), "--max-files", "5")
    assert all(f["truncated"] == "file limit (5)" for f in few)

    outside = mesh.json(SEARCH, "grep", "ERROR", str(mesh.outside))
    for host in outside:
        assert host["matches"] == []
        assert f"outside the file roots of host {host['host']}" in host["error"]
    through_link = mesh.json(SEARCH, "grep", "ERROR", str(mesh.shared / "escape"))
    assert all("outside the file roots" in f["error"] for f in through_link)

    (mesh.shared / "runaway.txt").write_text("a" * 40 + "b\n")
    runaway = mesh.json(
        SEARCH, "grep", "(a+)+$", str(mesh.shared), "--hosts", "alpha", "--time-limit", "0.5"
    )
    assert runaway[0]["truncated"] == "time limit (0.5 s)"
    assert runaway[0]["seconds"] < 5

    for bad, message in (("(", "is not a regular expression"), ("a" * 600, "1 to 512")):
        result = mesh.run(SEARCH, "grep", bad, str(mesh.shared))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
    unknown = mesh.run(SEARCH, "find", "x", str(mesh.shared), "--hosts", "alpha,nosuch")
    assert unknown.returncode == 2
    assert "no host nosuch in the mesh of alpha" in unknown.stderr


def test_disk_survey_covers_every_host(mesh: Mesh) -> None:
    (mesh.shared / "big" / "inner").mkdir(parents=True)
    (mesh.shared / "big" / "inner" / "blob").write_bytes(b"\1" * (3 << 20))
    (mesh.shared / "small").mkdir()
    (mesh.shared / "small" / "note").write_text("hi")
    found = mesh.json(SURVEY, "--root", str(mesh.shared), "--top", "2")
    assert [u["host"] for u in found] == list(NAMES)
    for usage in found:
        assert usage["error"] == ""
        assert usage["root"] == str(mesh.shared)
        assert usage["total"] >= usage["free"] > 0
        assert usage["under_root"] >= 3 << 20
        assert [d["path"] for d in usage["largest"]] == ["big", "big/inner"]
        assert usage["largest"][0]["bytes"] >= 3 << 20

    defaults = mesh.json(SURVEY, "--hosts", "beta,gamma")
    assert [u["root"] for u in defaults] == [
        str(mesh.shared.parent / "beta-tmp"),
        str(mesh.shared.parent / "gamma-tmp"),
    ]  # each host's own temp directory
    bounded = mesh.json(SURVEY, "--root", str(mesh.shared), "--max-entries", "1")
    assert all(u["truncated"] == "entry limit (1)" for u in bounded)
    refused = mesh.json(SURVEY, "--root", str(mesh.outside))
    assert all(f"outside the file roots of host {u['host']}" in u["error"] for u in refused)

    table = mesh.run(SURVEY, "--root", str(mesh.shared))
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split()[:4] == ["HOST", "ROOT", "DISK", "USED"]
    assert [row.split()[0] for row in rows[1:]] == list(NAMES)
    assert "big 3.0 MiB" in rows[1]
