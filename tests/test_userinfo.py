"""user-info: notices from paglets, kept by their host and collected across the mesh
by ``paglets-user-info`` (real host processes, the real CLI, ``--json`` field by field)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest

from paglets import AsyncHostClient, HostClient
from paglets.core.errors import ProtocolError, RequestError
from paglets.userinfo.contract import USER_INFO, NoticeList, NoticeQuery, NoticeRecord
from paglets.userinfo.journal import NoticeLog
from paglets.userinfo.model import MAX_TITLE, Notice, NoticeKind, Severity, parse_fields
from pagletstest import host_env
from tests.hostproc import command, env_without_key, run_script

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

CLI = command("paglets-user-info", "paglets.cli.userinfo")
REPORTER = "examples.reporter:Reporter"
MESH = ("--gossip-interval", "0.2", "--offline-after", "2")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_script(CLI, *args, timeout=60, **env)


def _json(*args: str) -> Any:
    result = _cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _mesh(
    start_host: Callable[..., RunningHost], n: int, mesh: tuple[str, ...] = MESH
) -> list[RunningHost]:
    first = start_host(*mesh, env=host_env(env_without_key()))
    env = host_env(env_without_key())
    hosts = [first, *(start_host(*mesh, "--peer", first.url, env=env) for _ in range(n - 1))]
    with HostClient(first.url) as client:
        deadline = time.monotonic() + 30
        while sum(r.online for r in client.hosts()) < n:
            assert time.monotonic() < deadline, "the hosts never met"
            time.sleep(0.05)
    return hosts


def _work(host: RunningHost, job: str, steps: int) -> int:
    with HostClient(host.url) as client:
        reporter = client.create(REPORTER)
        seq = reporter.send("work", {"job": job, "steps": steps})
    assert isinstance(seq, int)
    return seq


def test_a_notice_from_a_paglet_on_b_is_listed_from_a_field_by_field(
    start_host: Callable[..., RunningHost],
) -> None:
    a, b = _mesh(start_host, 2)
    before = time.time()
    seq = _work(b, "job-7", 2)
    answer = _json("list", "--url", a.url, "--job", "job-7")
    assert [(h["name"], h["status"], h["error"]) for h in answer["hosts"]] == [
        (a.name, "ok", None),
        (b.name, "ok", None),
    ]
    notices = answer["notices"]
    assert [n["kind"] for n in notices] == ["line", "line", "notice"]
    lines, done = notices[:2], notices[2]
    assert [n["message"] for n in lines] == ["step 1 of 2 done", "step 2 of 2 done"]
    assert {n["stream"] for n in lines} == {"job-7-log"}
    assert done["seq"] == seq == lines[1]["seq"] + 1
    assert done["host"] == b.name
    assert done["severity"] == "info"
    assert done["title"] == "job-7 finished"
    assert done["message"] == f"all 2 steps done on {b.name}"
    assert done["job"] == "job-7"
    assert done["stream"] is None
    assert len(done["agent_id"]) == 32
    assert before <= done["at"] <= time.time()
    assert set(done) == set(Notice.__slots__)  # type: ignore[attr-defined]
    with HostClient(a.url) as client:  # user-info.v1, answered by b itself
        typed = client.service(USER_INFO, where=b.name).list(NoticeQuery(job="job-7"))
    assert typed == NoticeList(b.name, seq, [NoticeRecord(**n) for n in notices])
    # filters: severity, and the table
    assert _json("list", "--url", a.url, "--severity", "warning")["notices"] == []
    table = _cli("list", "--url", a.url, "--job", "job-7")
    assert table.returncode == 0, table.stderr
    assert "job-7 finished" in table.stdout
    assert "[job-7-log]" in table.stdout


def test_follow_prints_a_new_notice_as_it_comes(start_host: Callable[..., RunningHost]) -> None:
    a, b = _mesh(start_host, 2)
    _work(b, "old-job", 1)  # already there: follow shows only what comes after it starts
    follower = subprocess.Popen(
        [*CLI, "follow", "--url", a.url, "--json", "--count", "1", "--for", "60", "--job", "new"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_without_key(),
    )
    try:
        assert follower.stderr is not None
        assert "following 2 host(s)" in follower.stderr.readline()
        started = time.monotonic()
        _work(b, "new", 0)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert time.monotonic() - started < 15, "seen by the long poll, not a late retry"
    notices = [json.loads(line) for line in out.splitlines()]
    assert [(n["host"], n["title"], n["job"]) for n in notices] == [(b.name, "new finished", "new")]


def test_a_stopped_or_dead_host_is_shown_as_such_within_the_timeout(
    start_host: Callable[..., RunningHost],
) -> None:
    # the mesh would call it offline after 60 s: until then, it is asked
    a, b, c = _mesh(start_host, 3, ("--gossip-interval", "0.2", "--offline-after", "60"))
    _work(a, "here", 0)
    os.kill(c.process.pid, signal.SIGSTOP)  # alive to the kernel, answers nothing
    try:
        started = time.monotonic()
        answer = _json("list", "--url", a.url, "--timeout", "1")
        took = time.monotonic() - started
    finally:
        os.kill(c.process.pid, signal.SIGCONT)
    by_name = {h["name"]: h for h in answer["hosts"]}
    assert by_name[c.name]["status"] == "timeout"
    assert by_name[c.name]["error"] == "no answer within 1 s"
    assert by_name[b.name]["status"] == by_name[a.name]["status"] == "ok"
    assert [n["title"] for n in answer["notices"]] == ["here finished"]
    assert took < 1 + 10, f"the slow host stalled the answer: {took:.1f} s"
    c.process.kill()
    c.process.wait()
    answer = _json("list", "--url", a.url, "--timeout", "1")
    gone = {h["name"]: h for h in answer["hosts"]}[c.name]
    assert gone["status"] == "offline"
    assert gone["error"]


def test_no_key_no_notices(start_host: Callable[..., RunningHost]) -> None:
    host = start_host(env=host_env(env_without_key(PAGLETS_API_KEY="k3y")))
    refused = _cli("list", "--url", host.url)
    assert refused.returncode == 2
    assert "API key" in refused.stderr
    assert _cli("list", "--url", host.url, PAGLETS_API_KEY="k3y").returncode == 0


# -- the journal ----------------------------------------------------------------------


def _fields(title: str = "t", message: str = "m", severity: str = "info") -> dict[str, Any]:
    return parse_fields(title, message, severity, None, None)


def test_the_journal_keeps_its_bounds_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "notices.jsonl"
    log = NoticeLog(path, "alpha", max_count=5, max_bytes=10_000)
    log.open()
    for i in range(8):
        log.append("agent1", NoticeKind.NOTICE, _fields(f"n{i}"))
    assert [n.title for n in log.query()] == ["n3", "n4", "n5", "n6", "n7"]
    log.close()
    with path.open("ab") as file:
        file.write(b'{"seq": 9, "torn')  # a crash mid-line
    again = NoticeLog(path, "alpha", max_count=5, max_bytes=10_000)
    again.open()
    assert [n.title for n in again.query()] == ["n3", "n4", "n5", "n6", "n7"]
    assert again.append("agent1", NoticeKind.NOTICE, _fields("n8")).seq == 9
    again.close()
    small = NoticeLog(tmp_path / "small.jsonl", "alpha", max_count=1000, max_bytes=2000)
    small.open()
    for _ in range(100):
        small.append("agent1", NoticeKind.NOTICE, _fields(message="x" * 100))
    assert 0 < len(small) < 20
    assert (tmp_path / "small.jsonl").stat().st_size <= 2 * 2000 + 400
    small.close()


def test_filters_and_bad_fields(tmp_path: Path) -> None:
    log = NoticeLog(tmp_path / "n.jsonl", "alpha")
    log.open()
    log.append("a1", NoticeKind.NOTICE, _fields("low", severity="debug"))
    log.append("a1", NoticeKind.NOTICE, _fields("high", severity="error"))
    assert [n.title for n in log.query(severity=Severity.WARNING)] == ["high"]
    assert [n.title for n in log.query(after=1)] == ["high"]
    log.close()
    with pytest.raises(RequestError, match="the limit is 200"):
        _fields("x" * (MAX_TITLE + 1))
    with pytest.raises(RequestError, match="severity 'loud' is not one of debug, info"):
        _fields(severity="loud")
    with pytest.raises(RequestError, match="job id"):
        parse_fields("t", "m", "info", "../etc", None)
    with pytest.raises(ProtocolError, match="malformed notice"):
        Notice.from_dict({"seq": 1})


async def test_a_paglet_gets_a_clear_error_for_a_bad_notice_and_nothing_is_kept(
    make_host: Callable[..., Any],
) -> None:
    host = await make_host(name="alpha")
    async with AsyncHostClient(host.url) as client:
        reporter = await client.create(REPORTER)
        with pytest.raises(RequestError, match="the limit is 200"):
            await reporter.send("alarm", {"title": "x" * 201})
        assert await reporter.send("alarm", {"title": "disk full"}) == 1
        answer = await client.request("GET", "/v1/user-info")
    assert [(n["severity"], n["title"]) for n in answer["notices"]] == [("error", "disk full")]
