"""``paglets-file-grabber`` run as a user runs it, against two real host processes.

Each host gets its own temp directory (``TMPDIR``) and state directory, so its
file roots are known and a directory of the test lies outside all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from paglets.core.errors import RequestError
from paglets.launch.parse import parse_launch
from paglets.persistence.paths import in_roots
from tests.hostproc import command, env_without_key

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.hostproc import RunningHost

GRABBER = command("paglets-file-grabber", "paglets.cli.file_grabber")
SIZE = 20 << 20  # 20 MiB


@dataclass
class Mesh:
    alpha: RunningHost
    beta: RunningHost
    roots: dict[str, Path]  # each host's temp directory, one of its file roots
    outside: Path  # in no host's roots

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = env_without_key(PAGLETS_URL=self.alpha.url)
        return subprocess.run(
            [*GRABBER, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
            cwd=cwd,
        )


def _host_env(tmp: Path) -> dict[str, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    return env_without_key(TMPDIR=str(tmp))


@pytest.fixture
def mesh(tmp_path: Path, start_host: Callable[..., RunningHost]) -> Mesh:
    roots = {"alpha": tmp_path / "alpha-tmp", "beta": tmp_path / "beta-tmp"}
    alpha = start_host(env=_host_env(roots["alpha"]), name="alpha")
    beta = start_host(
        "--peer", alpha.url, "--gossip-interval", "0.2", env=_host_env(roots["beta"]), name="beta"
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    return Mesh(alpha, beta, roots, outside)


def _payload(path: Path, size: int = SIZE) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fails(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_push_and_pull_carry_20_mib_intact(mesh: Mesh) -> None:
    src = mesh.roots["alpha"] / "data.bin"
    digest = _payload(src)
    dest = mesh.roots["beta"] / "data.bin"
    pushed = mesh.run(
        "push", "./data.bin", "--remote", "beta", "--dest", str(dest), "--json", cwd=src.parent
    )
    assert pushed.returncode == 0, pushed.stderr
    report = json.loads(pushed.stdout)
    assert report["written"] == str(dest)
    assert (report["source_host"], report["dest_host"]) == ("alpha", "beta")
    assert report["sha256"] == digest == _sha(dest)
    assert not list(dest.parent.glob(".*.part"))  # the temporary copy is gone

    back = mesh.roots["alpha"] / "back.bin"
    pulled = mesh.run("pull", str(dest), "--remote", "beta", "--dest", str(back))
    assert pulled.returncode == 0, pulled.stderr
    assert "copied (pull)" in pulled.stdout
    assert "sha256 verified" in pulled.stdout
    assert _sha(back) == digest


def test_refuses_to_overwrite_unless_forced(mesh: Mesh) -> None:
    src = mesh.roots["alpha"] / "new.bin"
    digest = _payload(src, 1 << 16)
    dest = mesh.roots["beta"] / "old.bin"
    dest.write_bytes(b"keep me")
    refused = mesh.run("push", str(src), "--remote", "beta", "--dest", str(dest))
    _fails(refused, "exists on host beta", "--force")
    assert dest.read_bytes() == b"keep me"
    forced = mesh.run("push", str(src), "--remote", "beta", "--dest", str(dest), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "replaced" in forced.stdout
    assert _sha(dest) == digest


def test_dry_says_what_would_happen_and_changes_nothing(mesh: Mesh) -> None:
    src = mesh.roots["alpha"] / "data.bin"
    digest = _payload(src, 1 << 16)
    dest = mesh.roots["beta"] / "data.bin"
    # the seed's own line, as written (its --dest is beta's temp directory here)
    dry = mesh.run(
        "push", "./data.bin", "--remote", "beta", "--dest", str(dest), "--dry", cwd=src.parent
    )
    assert dry.returncode == 0, dry.stderr
    assert "would copy (dry run: nothing changed)" in dry.stdout
    assert digest in dry.stdout
    assert not dest.exists()
    dest.write_bytes(b"old")
    before = sorted(p.name for p in dest.parent.iterdir())
    forced = mesh.run(
        "push", str(src), "--remote", "beta", "--dest", str(dest), "--dry", "--force", "--json"
    )
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout) | {"source": ""} == {
        "direction": "push",
        "source_host": "alpha",
        "source": "",
        "dest_host": "beta",
        "dest": str(dest),
        "size": 1 << 16,
        "sha256": digest,
        "replaces": True,
        "dry": True,
    }
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in dest.parent.iterdir()) == before


def test_destination_outside_the_roots_is_refused_by_the_destination(mesh: Mesh) -> None:
    src = mesh.roots["alpha"] / "data.bin"
    _payload(src, 1 << 10)
    (mesh.roots["beta"] / "escape").symlink_to(mesh.outside)
    # alpha's temp directory is a root of alpha, not of beta
    targets = {
        "outside": mesh.outside / "x.bin",
        "symlink": mesh.roots["beta"] / "escape" / "x.bin",
        "dotdot": mesh.roots["beta"] / ".." / "outside" / "x.bin",
        "other host's root": mesh.roots["alpha"] / "x.bin",
    }
    for what, target in targets.items():
        result = mesh.run("push", str(src), "--remote", "beta", "--dest", str(target))
        _fails(result, "outside the file roots of host beta", "--file-root")
        assert not target.exists(), what
    assert list(mesh.outside.iterdir()) == []
    dry = mesh.run("push", str(src), "--remote", "beta", "--dest", str(mesh.outside / "x"), "--dry")
    _fails(dry, "outside the file roots of host beta")


def test_source_outside_the_roots_is_refused(mesh: Mesh) -> None:
    secret = mesh.outside / "secret.txt"
    secret.write_text("not for the mesh")
    (mesh.roots["beta"] / "leak").symlink_to(secret)
    pushed = mesh.run(
        "push", str(secret), "--remote", "beta", "--dest", str(mesh.roots["beta"] / "s.txt")
    )
    _fails(pushed, "outside the file roots of host alpha")
    pulled = mesh.run(
        "pull",
        str(mesh.roots["beta"] / "leak"),
        "--remote",
        "beta",
        "--dest",
        str(mesh.roots["alpha"] / "s.txt"),
    )
    _fails(pulled, "outside the file roots of host beta")
    assert not (mesh.roots["alpha"] / "s.txt").exists()


def test_a_file_root_flag_extends_the_roots(
    tmp_path: Path, start_host: Callable[..., RunningHost]
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    alpha = start_host(env=_host_env(tmp_path / "a-tmp"), name="alpha")
    start_host(
        "--peer",
        alpha.url,
        "--file-root",
        str(extra),
        name="beta",
        env=_host_env(tmp_path / "b-tmp"),
    )
    src = tmp_path / "a-tmp" / "f.bin"
    digest = _payload(src, 4096)
    result = subprocess.run(
        [*GRABBER, "push", str(src), "--remote", "beta", "--dest", str(extra / "f.bin")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env_without_key(PAGLETS_URL=alpha.url),
    )
    assert result.returncode == 0, result.stderr
    assert _sha(extra / "f.bin") == digest


def test_in_roots_resolves_before_it_checks(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "out").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "f")
    assert in_roots(str(root / "sub" / "new.bin"), [root]) == root / "sub" / "new.bin"
    assert in_roots(str(root / "sub" / ".." / "x"), [root]) == root / "x"
    assert in_roots(str(root), [root]) == root
    for bad in (root / "out" / "x", root / "file-link", root / ".." / "outside", outside):
        with pytest.raises(RequestError, match="outside the file roots of this host"):
            in_roots(str(bad), [root])
    with pytest.raises(RequestError, match="relative"):
        in_roots("sub/x", [root])
    with pytest.raises(RequestError, match="NUL"):
        in_roots(f"{root}/a\x00b", [root])
    sibling = tmp_path / "rootx"  # a name that starts like the root is not in it
    sibling.mkdir()
    with pytest.raises(RequestError):
        in_roots(str(sibling / "f"), [root])


def test_launch_file_sets_file_roots(tmp_path: Path) -> None:
    path = tmp_path / "launch.toml"
    config = parse_launch('[host]\nfile_roots = ["/srv/data", "/mnt/x"]\n', path)
    assert config.options()["file_roots"] == ("/srv/data", "/mnt/x")
    with pytest.raises(Exception, match="absolute path"):
        parse_launch('[host]\nfile_roots = ["data"]\n', path)
