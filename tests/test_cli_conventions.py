"""What every console script does the same way: ``--url URL|NAME``, ``$PAGLETS_URL``,
``$PAGLETS_API_KEY``, ``--json``, plain tables when piped, a clear message when no host
answers, and a fast ``--help`` with examples; rich stays on the CLI side."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from paglets import HostClient
from paglets.cli import _output
from pagletstest import host_env
from tests.hostproc import command, env_without_key, free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.hostproc import RunningHost

SCRIPTS = {
    "paglets-host": "paglets.cli.host",
    "paglets-mesh": "paglets.cli.mesh",
    "paglets-demo": "paglets.cli.demo",
    "paglets-pi-compute": "paglets.cli.pi",
    "paglets-perf-test": "paglets.cli.perftest",
    "paglets-user-info": "paglets.cli.userinfo",
    "paglets-artifacts": "paglets.cli.artifacts",
    "paglets-sysinfo": "paglets.cli.sysinfo",
    "paglets-mesh-info": "paglets.cli.meshinfo",
    "paglets-compute-slots": "paglets.cli.computeslots",
    "paglets-compute-groups": "paglets.cli.computegroups",
    "paglets-analysis-jobs": "paglets.cli.analysisjobs",
    "paglets-file-grabber": "paglets.cli.file_grabber",
    "paglets-search": "paglets.cli.search",
    "paglets-disk-survey": "paglets.cli.disk_survey",
    "paglets-mesh-benchmark": "paglets.cli.mesh_benchmark",
}
MESH_CMD = command("paglets-mesh", "paglets.cli.mesh")
HELP_BOUND = 1.0  # seconds, loose for a loaded CI machine; the aim is well under 0.2 s
PROBE = "pagletstest.testing:Probe"


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=env_without_key(**env)
    )


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_is_fast_and_shows_examples(script: str) -> None:
    argv = [*command(script, SCRIPTS[script]), "--help"]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = _run(argv)
        times.append(time.perf_counter() - started)
        assert result.returncode == 0, result.stderr
    assert "Examples:" in result.stdout
    assert f"  {script} " in result.stdout.split("Examples:")[1]
    assert min(times) < HELP_BOUND, f"{script} --help took {min(times):.3f} s"


def test_no_host_answering_names_the_url_and_how_to_start_one() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    result = _run([*MESH_CMD, "hosts"], PAGLETS_URL=url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (
            f"error: no paglets host answers at {url} (connection refused); start one with "
            f"'paglets-host --port {port}', or point --url or $PAGLETS_URL at a running host"
        )
    ]
    by_name = _run([*MESH_CMD, "hosts", "--url", "beta"], PAGLETS_URL=url)
    assert by_name.returncode == 2
    assert by_name.stderr.startswith(
        f"error: no paglets host answers at {url}, the local host that finds host 'beta' "
    )


def test_url_takes_a_name_resolved_through_the_local_host_and_json_is_exact(
    start_host: Callable[..., RunningHost],
) -> None:
    first = start_host("--gossip-interval", "0.1", "--offline-after", "1")
    second = start_host("--peer", first.url, "--tag", "gpu", "--property", "room=b12")
    with HostClient(first.url) as client:
        deadline = time.monotonic() + 10
        while len(client.hosts()) < 2:
            assert time.monotonic() < deadline, "the two hosts never met"
            time.sleep(0.05)
    result = _run([*MESH_CMD, "hosts", "--url", second.name, "--json"], PAGLETS_URL=first.url)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records[0]["name"] == second.name, "asked of the second host: it lists itself first"
    assert records[0]["url"] == second.url
    assert records[0]["tags"] == ["gpu"]
    assert records[0]["properties"] == {"room": "b12"}
    assert {r["name"]: r["url"] for r in records} == {
        first.name: first.url,
        second.name: second.url,
    }


def test_the_api_key_comes_from_the_environment(start_host: Callable[..., RunningHost]) -> None:
    host = start_host(env=host_env(env_without_key(PAGLETS_API_KEY="s3cret")))
    refused = _run([*MESH_CMD, "hosts", "--url", host.url])
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: "), refused.stderr
    allowed = _run([*MESH_CMD, "hosts", "--url", host.url, "--json"], PAGLETS_API_KEY="s3cret")
    assert allowed.returncode == 0, allowed.stderr
    assert [r["name"] for r in json.loads(allowed.stdout)] == [host.name]


def test_a_piped_table_is_plain_aligned_text(start_host: Callable[..., RunningHost]) -> None:
    host = start_host("--tag", "a-rather-long-tag-to-make-the-row-wider-than-eighty-columns")
    result = _run([*MESH_CMD, "hosts", "--url", host.url])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, "a header and one row, never wrapped"
    assert "\x1b" not in result.stdout, "no colours or styles in a pipe"
    assert all(line == line.rstrip() for line in lines)
    header, row = lines
    for column in ("URL", "STATUS", "TAGS", "IDENTITY"):
        start = header.index(column)
        assert row[start - 2 : start] == "  ", f"{column} starts at the same place in each line"
        assert row[start] != " "


def test_progress_draws_on_a_terminal_and_stays_silent_in_a_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with _output.progress("copying", 2) as advance:
        advance()
        advance()
    assert pipe.getvalue() == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _output.progress("copying", 2) as advance:
        advance()
        advance()
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())
    assert "copying" in drawn
    assert "2/2" in drawn


def test_rich_stays_out_of_the_host_and_its_paglets(
    start_host: Callable[..., RunningHost],
) -> None:
    code = (
        "import sys, paglets.host, paglets.cli.host, paglets.cli.mesh; print('rich' in sys.modules)"
    )
    assert _run([sys.executable, "-c", code]).stdout.strip() == "False"
    host = start_host(env=host_env(env_without_key()))
    with HostClient(host.url) as client:
        modules = client.create(PROBE).send("modules")
    assert "paglets" in modules, "the probe sees its own imports"
    assert "rich" not in modules
    assert "click" not in modules


def test_table_cells_are_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    _output.print_table(("NOTE",), [("set file_roots in launch.toml [host] or [bold]",)])
    assert "launch.toml [host] or [bold]" in capsys.readouterr().out
