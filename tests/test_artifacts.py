"""artifacts: ``paglets-artifacts`` against real host processes: a round trip of a few MiB,
a host-to-host copy, corrupted and interrupted uploads that leave nothing, the quota, bad
names and the key."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from paglets import HostClient
from paglets.artifacts.contract import ARTIFACTS, ArtifactList, ArtifactRecord, ListArtifacts
from paglets.cli import artifacts as artifacts_cli
from paglets.launch.parse import parse_launch
from pagletstest import host_env
from tests.hostproc import command, env_without_key, run_script

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

CLI = command("paglets-artifacts", "paglets.cli.artifacts")
MESH = ("--gossip-interval", "0.2", "--offline-after", "30")
MiB = 1 << 20


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_script(CLI, *args, timeout=120, **env)


def _json(*args: str) -> Any:
    result = _cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _store(tmp_path: Path, host: RunningHost) -> Path:
    return tmp_path / "state" / host.name / "artifacts"


def _leftovers(tmp_path: Path, host: RunningHost) -> list[str]:
    root = _store(tmp_path, host)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _pair(start_host: Callable[..., RunningHost], *extra: str) -> tuple[RunningHost, RunningHost]:
    a = start_host(*MESH, *extra)
    b = start_host(*MESH, "--peer", a.url)
    with HostClient(a.url) as client:
        deadline = time.monotonic() + 30
        while sum(r.online for r in client.hosts()) < 2:
            assert time.monotonic() < deadline, "the hosts never met"
            time.sleep(0.05)
    return a, b


def test_put_list_get_copy_rm_round_trip(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    a, b = _pair(start_host)
    src = tmp_path / "data.bin"
    sha = _file(src, 5 * MiB + 123)
    before = time.time()
    put = _json("put", str(src), "run-7.bin", "--url", a.url)
    assert put["name"] == "run-7.bin"
    assert put["size"] == 5 * MiB + 123
    assert put["sha256"] == sha
    assert put["host"] == a.name
    assert before <= put["created"] <= time.time()
    listed = _json("list", "--url", a.url)
    assert listed["artifacts"] == [put]
    assert [(h["name"], h["status"], h["used"], h["quota"]) for h in listed["hosts"]] == [
        (a.name, "ok", 5 * MiB + 123, 1 << 30)
    ]
    back = tmp_path / "back.bin"
    got = _json("get", "run-7.bin", str(back), "--url", a.url)
    assert got == {"name": "run-7.bin", "size": 5 * MiB + 123, "sha256": sha, "path": str(back)}
    assert back.read_bytes() == src.read_bytes()
    # host to host, by name: a streams it to b
    copied = _json("copy", "run-7.bin", "--url", a.url, "--to", b.name, "--as", "copy.bin")
    assert (copied["name"], copied["host"], copied["sha256"]) == ("copy.bin", b.name, sha)
    there = tmp_path / "there.bin"
    assert _cli("get", "copy.bin", str(there), "--url", b.url).returncode == 0
    assert there.read_bytes() == src.read_bytes()
    with HostClient(a.url) as client:  # artifacts.v1, answered by b itself
        there_typed = client.service(ARTIFACTS, where=b.name).list(ListArtifacts())
    assert there_typed == ArtifactList(b.name, 1 << 30, 5 * MiB + 123, [ArtifactRecord(**copied)])
    mesh = _json("list", "--mesh", "--url", b.url)
    assert sorted((x["host"], x["name"]) for x in mesh["artifacts"]) == [
        (a.name, "run-7.bin"),
        (b.name, "copy.bin"),
    ]
    assert {h["name"]: h["status"] for h in mesh["hosts"]} == {a.name: "ok", b.name: "ok"}
    removed = _json("rm", "run-7.bin", "--url", a.url)
    assert removed == {"removed": put}
    assert _json("list", "--url", a.url)["artifacts"] == []
    assert _leftovers(tmp_path, a) == [], "its blob went with its name"
    missing = _cli("get", "run-7.bin", str(tmp_path / "gone"), "--url", a.url)
    assert missing.returncode == 2
    assert "has no artifact 'run-7.bin'" in missing.stderr
    assert not (tmp_path / "gone").exists()
    assert not list(tmp_path.glob(".gone*")), "no part file left behind"


def _raw_put(url: str, name: str, size: int, sha: str, body: bytes, *, key: str = "") -> str:
    """A PUT by hand, on a socket: the status line and the answer's body."""
    parts = urlsplit(url)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"PUT /v1/artifacts/{name}?size={size}&sha256={sha} HTTP/1.1\r\nHost: x\r\n{auth}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    return status.decode() + " " + rest.partition(b"\r\n\r\n")[2].decode()


def test_a_corrupted_upload_is_refused_and_leaves_nothing(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    host = start_host()
    body = os.urandom(2 * MiB)
    wrong = hashlib.sha256(b"something else").hexdigest()
    answer = _raw_put(host.url, "bad.bin", len(body), wrong, body)
    assert answer.startswith("HTTP/1.1 422 "), answer
    assert "ChecksumMismatchError" in answer
    assert f"not the {wrong} declared; nothing was kept" in answer
    assert _json("list", "--url", host.url)["artifacts"] == []
    assert _leftovers(tmp_path, host) == []
    short = _raw_put(host.url, "short.bin", len(body) + 1, wrong, body)
    assert short.startswith("HTTP/1.1 400 "), short
    assert _leftovers(tmp_path, host) == []


SLOW_CLIENT = """
import socket, sys, time
from urllib.parse import urlsplit
parts = urlsplit(sys.argv[1])
size = 8 << 20
sock = socket.create_connection((parts.hostname, parts.port))
sock.sendall(
    f"PUT /v1/artifacts/half.bin?size={size}&sha256={'0' * 64} HTTP/1.1\\r\\nHost: x\\r\\n"
    f"Content-Length: {size}\\r\\n\\r\\n".encode() + b"x" * (size // 2)
)
print("sent", flush=True)
time.sleep(600)
"""


def test_an_upload_whose_client_is_killed_midway_leaves_nothing(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    host = start_host()
    client = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLIENT, host.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "sent"
        tmp = _store(tmp_path, host) / "tmp"
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in tmp.iterdir()):
            assert time.monotonic() < deadline, "the upload never reached the disk"
            time.sleep(0.02)
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
        if client.stdout is not None:
            client.stdout.close()
    deadline = time.monotonic() + 30
    while _leftovers(tmp_path, host):
        assert time.monotonic() < deadline, f"left behind: {_leftovers(tmp_path, host)}"
        time.sleep(0.05)
    assert _json("list", "--url", host.url)["artifacts"] == []


def test_the_quota_is_enforced(start_host: Callable[..., RunningHost], tmp_path: Path) -> None:
    host = start_host("--artifact-quota", "4MiB")
    three = tmp_path / "three"
    _file(three, 3 * MiB)
    assert _cli("put", str(three), "--url", host.url).returncode == 0
    again = _cli("put", str(three), "second", "--url", host.url)
    assert again.returncode == 2
    assert again.stderr.startswith(
        f"error: an artifact of 3.0 MiB does not fit: host {host.name} keeps 3.0 MiB of its "
        "4.0 MiB quota"
    ), again.stderr
    assert "paglets-artifacts rm NAME" in again.stderr
    big = tmp_path / "big"
    _file(big, 40 * MiB)
    started = time.monotonic()
    too_big = _cli("put", str(big), "--url", host.url)
    assert too_big.returncode == 2
    assert "larger than host" in too_big.stderr
    assert "--artifact-quota" in too_big.stderr
    assert time.monotonic() - started < 30
    assert [x["name"] for x in _json("list", "--url", host.url)["artifacts"]] == ["three"]
    assert _leftovers(tmp_path, host) == [
        f"blobs/{hashlib.sha256(three.read_bytes()).hexdigest()}",
        "names/three.json",
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (".hidden", "artifact name '.hidden' is not valid"),
        ("a" * 201, "is 201 characters long; the limit is 200"),
        ("-rf", "artifact name '-rf' is not valid"),
        ("a%2Fb", "artifact name 'a/b' is not valid"),
    ],
)
def test_bad_names_are_refused_with_a_4xx(
    start_host: Callable[..., RunningHost], tmp_path: Path, name: str, why: str
) -> None:
    host = start_host()
    answer = _raw_put(host.url, name, 1, hashlib.sha256(b"x").hexdigest(), b"x")
    assert answer.startswith("HTTP/1.1 400 "), answer
    assert why in answer
    assert _leftovers(tmp_path, host) == []


def test_the_cli_refuses_a_bad_name_before_sending(tmp_path: Path) -> None:
    src = tmp_path / "f"
    _file(src, 10)
    result = _cli("put", str(src), "../etc", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.startswith("error: artifact name '../etc' is not valid")


def test_without_the_key_nothing(start_host: Callable[..., RunningHost], tmp_path: Path) -> None:
    host = start_host(env=host_env(env_without_key(PAGLETS_API_KEY="k3y")))
    body = b"secret"
    sha = hashlib.sha256(body).hexdigest()
    assert _raw_put(host.url, "s", len(body), sha, body).startswith("HTTP/1.1 401 ")
    assert _raw_put(host.url, "s", len(body), sha, body, key="k3y").startswith("HTTP/1.1 201 ")
    refused = _cli("get", "s", str(tmp_path / "s"), "--url", host.url)
    assert refused.returncode == 2
    assert "API key" in refused.stderr
    allowed = _cli("get", "s", str(tmp_path / "s"), "--url", host.url, PAGLETS_API_KEY="k3y")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "s").read_bytes() == body


def test_the_quota_comes_from_launch_toml(tmp_path: Path) -> None:
    path = tmp_path / "launch.toml"
    text = '[limits]\nartifact_quota = "2MiB"\n'
    assert parse_launch(text, path).options()["artifact_quota"] == 2 * MiB


def test_get_to_stdout_and_a_progress_bar_only_on_a_terminal(
    start_host: Callable[..., RunningHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = start_host()
    src = tmp_path / "f"
    _file(src, MiB + 1)
    assert _cli("put", str(src), "--url", host.url).returncode == 0
    result = subprocess.run(
        [*CLI, "get", "f", "-", "--url", host.url],
        capture_output=True,
        timeout=60,
        check=False,
        env=env_without_key(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == src.read_bytes()
    assert result.stderr == b"", "nothing drawn to a pipe"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with artifacts_cli._Bytes("put f", 2 * MiB) as advance:
        advance(MiB)
        advance(MiB)
    assert "put f" in terminal.getvalue()
    assert "2.0/2.0 MiB" in terminal.getvalue()


@pytest.mark.parametrize(
    ("script", "module", "args"),
    [
        ("paglets-artifacts", "paglets.cli.artifacts", ["list"]),
        ("paglets-user-info", "paglets.cli.userinfo", ["list"]),
        ("paglets-user-info", "paglets.cli.userinfo", ["follow", "--for", "1"]),
    ],
)
def test_no_host_answering_names_the_url(script: str, module: str, args: list[str]) -> None:
    url = "http://127.0.0.1:9"
    result = subprocess.run(
        [*command(script, module), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env_without_key(PAGLETS_URL=url),
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no paglets host answers at {url} "), result.stderr
