"""Git auto-update (``paglets-host --git-auto-update``), with real git, uv and hosts.

The remote is a local bare repository seeded with the code under test; each
host runs from its own clone with its own venv (``uv sync --frozen`` from uv's
cache: about a second). Unit tests drive the git wrapper, the wire record and
the lease; the end-to-end tests start real ``paglets-host`` processes from the
clones and push commits to the remote.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from paglets import EventKind, HostClient
from paglets.core.errors import (
    AuthenticationError,
    ConfigurationError,
    HostUnavailableError,
    ProtocolError,
    UpdateError,
)
from paglets.update.git import Checkout, check_ref_name, find_checkout
from paglets.update.lease import Lease
from paglets.update.marker import Marker, Phase
from paglets.wire.mesh import HostRecord, UpdateState, UpdateStatus
from tests.hostproc import env_without_key, free_port, running, wait_gone

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
COUNTER = "examples.counter:Counter"
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not installed")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"git {args}: {done.stderr}"
    return done.stdout.strip()


@dataclass
class Remote:
    """A bare repository (``main``) and a work clone the test commits from."""

    bare: Path
    work: Path

    def commit(self, message: str, files: dict[str, str], *, on: str | None = None) -> str:
        """Commit ``files`` on top of ``on`` (default: the branch) and push; the new commit."""
        if on is not None:
            git(self.work, "checkout", "--quiet", "-B", "main", on)
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "-m", message)
        git(self.work, "push", "--quiet", "--force", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    def clone(self, path: Path, *, venv: bool = False) -> Path:
        git(path.parent, "clone", "--quiet", str(self.bare), path.name)
        if venv:
            assert UV is not None
            subprocess.run([UV, "sync", "--frozen", "--quiet"], cwd=path, env=uv_env(), check=True)
        return path


def uv_env() -> dict[str, str]:
    """The test's environment for uv and the hosts: offline, no dev group, no key."""
    env = env_without_key(UV_OFFLINE="1", UV_NO_DEV="1", **GIT_ENV)
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH"):
        env.pop(name, None)
    return env


def make_remote(tmp: Path) -> tuple[Remote, str, str]:
    """A remote holding the code under test; ``(remote, first commit, base commit)``."""
    bare = tmp / "origin.git"
    git(tmp, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp / "work"
    listed = git(ROOT, "ls-files", "-co", "--exclude-standard", "-z")
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "remote", "add", "origin", str(bare))
    remote = Remote(bare, work)
    first = remote.commit("the code under test", {})
    base = remote.commit("base", {"AUTOUPDATE.txt": "base\n"})
    git(work, "branch", "--quiet", "--set-upstream-to=origin/main")
    return remote, first, base


# -- git ------------------------------------------------------------------------------------


@pytest.fixture
def small_remote(tmp_path: Path) -> tuple[Remote, Path]:
    """A remote with one small commit, and a clone of it (no venv)."""
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work.mkdir()
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "remote", "add", "origin", str(bare))
    remote = Remote(bare, work)
    remote.commit("one", {"a.txt": "one\n"})
    return remote, remote.clone(tmp_path / "clone")


async def test_checkout_fetches_and_fast_forwards(small_remote: tuple[Remote, Path]) -> None:
    remote, clone = small_remote
    checkout = Checkout(clone)
    head = await checkout.head()
    assert await checkout.branch() == "main"
    assert await checkout.upstream_remote("main") == "origin"
    new = remote.commit("two", {"a.txt": "two\n"})
    assert await checkout.fetch("origin", "main") == new
    assert await checkout.is_ancestor(head, new)
    assert not await checkout.is_ancestor(new, head)
    assert not await checkout.is_dirty()
    await checkout.fast_forward(new)
    assert await checkout.head() == new
    assert (clone / "a.txt").read_text() == "two\n"
    await checkout.reset_to(head)
    assert (clone / "a.txt").read_text() == "one\n"


async def test_checkout_never_merges_nor_overwrites(small_remote: tuple[Remote, Path]) -> None:
    remote, clone = small_remote
    checkout = Checkout(clone)
    head = await checkout.head()
    (clone / "a.txt").write_text("local change\n")
    assert await checkout.is_dirty()
    new = remote.commit("two", {"a.txt": "two\n"})
    await checkout.fetch("origin", "main")
    with pytest.raises(UpdateError, match="git merge failed"):
        await checkout.fast_forward(new)
    assert await checkout.head() == head
    assert (clone / "a.txt").read_text() == "local change\n"
    git(clone, "checkout", "--", "a.txt")
    # a force-push that drops what we run: never merged into it
    git(clone, "commit", "--quiet", "--allow-empty", "-m", "local")
    local = await checkout.head()
    forced = remote.commit("forced", {"a.txt": "forced\n"}, on=head)
    assert await checkout.fetch("origin", "main") == forced
    assert not await checkout.is_ancestor(local, forced)
    with pytest.raises(UpdateError, match="git merge failed"):
        await checkout.fast_forward(forced)
    assert await checkout.head() == local
    assert (clone / "a.txt").read_text() == "one\n"


async def test_checkout_reports_git_errors(small_remote: tuple[Remote, Path]) -> None:
    _, clone = small_remote
    checkout = Checkout(clone)
    with pytest.raises(UpdateError, match="git fetch failed"):
        await checkout.fetch("nowhere", "main")
    with pytest.raises(UpdateError, match="git fetch failed"):
        await checkout.fetch("origin", "no-such-branch")
    assert find_checkout(clone / "a.txt") == clone
    assert find_checkout(Path("/")) is None


def test_ref_names_are_plain() -> None:
    assert check_ref_name("release/1.2", "--git-branch") == "release/1.2"
    for bad in ("-x", "a..b", "a b", "", "x.lock", "a;rm"):
        with pytest.raises(ConfigurationError, match="not a plain git name"):
            check_ref_name(bad, "--git-branch")


# -- the wire record, the marker and the lease ----------------------------------------------


def _record(name: str, update: UpdateStatus | None = None, **fields: Any) -> HostRecord:
    return HostRecord(
        name=name,
        url=f"http://127.0.0.1:{8000 + len(name)}",
        mesh_version="dev",
        protocol_version=1,
        version="0",
        update=update,
        **fields,
    )


def test_update_status_travels_strictly() -> None:
    failed = UpdateStatus(UpdateState.FAILED, "a" * 40, "check: it broke")
    record = _record("a", failed)
    assert HostRecord.from_dict(record.to_dict()) == record
    idle = _record("b")
    assert "update" not in idle.to_dict()  # older code reads idle hosts' records
    assert b'"update"' not in idle.signed_bytes()
    assert record.signed_bytes() != record.replace(update=None).signed_bytes()
    bad = [
        {"state": "exploding", "commit": None, "reason": ""},
        {"state": "failed", "commit": 3, "reason": ""},
        {"state": "failed", "commit": None},
        {"state": "failed", "commit": None, "reason": "x" * 2000},
        {"state": "failed", "commit": None, "reason": "a\x1b[2Jb"},
        "updating",
    ]
    for update in bad:
        with pytest.raises(ProtocolError, match="update"):
            HostRecord.from_dict({**idle.to_dict(), "update": update})


def test_marker_round_trip_and_bad_marker(tmp_path: Path) -> None:
    marker = Marker(
        Phase.RESTARTING, "a" * 40, "b" * 40, moved=True, started_at=1.5, ready_timeout=30.0
    )
    marker.save(tmp_path)
    assert Marker.load(tmp_path) == marker
    (tmp_path / "update.json").write_text('{"phase": "restarting"}')
    assert Marker.load(tmp_path) is None
    assert not (tmp_path / "update.json").exists()


def test_the_lease_goes_to_one_host_at_a_time() -> None:
    now = [0.0]
    lease = Lease("b", lease_time=100.0, clock=lambda: now[0])
    pending = UpdateStatus(UpdateState.PENDING, "c1")
    updating = UpdateStatus(UpdateState.UPDATING, "c1")
    me = _record("b", pending)
    # a pending host whose name sorts first goes first; a later name waits for us
    assert lease.blocker([me, _record("a", pending), _record("c", pending)]).name == "a"
    assert lease.blocker([me, _record("c", pending)]) is None
    # an offline pending host does not block; an offline updating host does (restarting)
    assert lease.blocker([me, _record("a", pending, online=False)]) is None
    assert lease.blocker([me, _record("c", updating, online=False)]).name == "c"
    # a failed host does not block
    failed = UpdateStatus(UpdateState.FAILED, "c1", "x")
    assert lease.blocker([me, _record("a", failed)]) is None
    # a claim counts for lease_time from when it was first seen, then no longer
    held = [me, _record("c", updating, incarnation=1)]
    assert lease.blocker(held) is not None
    now[0] = 99.0
    assert lease.blocker(held) is not None
    now[0] = 100.0
    assert lease.blocker(held) is None
    # the restarted host (a new incarnation) claiming again is a new claim
    assert lease.blocker([me, _record("c", updating, incarnation=2)]) is not None


# -- real hosts from clones -----------------------------------------------------------------


@dataclass
class CloneHost:
    """A ``paglets-host --git-auto-update`` process running from its own clone."""

    name: str
    clone: Path
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    url: str = ""
    key: str = ""

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def client(self) -> HostClient:
        return HostClient(self.url, api_key=self.key)


@pytest.fixture
def clone_hosts(tmp_path: Path) -> Iterator[Callable[..., CloneHost]]:
    started: list[CloneHost] = []

    def key_file(key: str) -> str:
        path = tmp_path / "key"
        path.write_text(key)
        path.chmod(0o600)
        return str(path)

    def start(
        name: str, clone: Path, *args: str, port: int = 0, script: bool = False, key: str = ""
    ) -> CloneHost:
        """Start ``python -m paglets.cli.host``, or the console script with ``script``.

        With ``key``, the host reads its API key from a file named by
        ``$PAGLETS_API_KEY_FILE``, a variable it removes from its environment.
        """
        ready, log = tmp_path / f"{name}.ready", tmp_path / f"{name}.log"
        argv = [str(clone / ".venv" / "bin" / "python"), "-m", "paglets.cli.host"]
        if script:
            argv = [str(clone / ".venv" / "bin" / "paglets-host")]
        argv += ["--name", name, "--port", str(port), "--ready-file", str(ready)]
        argv += ["--state-dir", str(tmp_path / "state"), "--git-auto-update"]
        argv += ["--gossip-interval", "0.2", "--offline-after", "2", "--log-level", "info"]
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*argv, *args],
                cwd=clone,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**uv_env(), "PAGLETS_API_KEY_FILE": key_file(key)} if key else uv_env(),
            )
        host = CloneHost(name, clone, process, ready, log, key=key)
        started.append(host)
        host.url = wait_ready(host)
        return host

    try:
        yield start
    finally:
        trees = []
        for host in started:
            if host.process.poll() is None:
                trees += psutil.Process(host.process.pid).children(recursive=True)
                host.process.terminate()
                host.process.wait(30)
        wait_gone(trees)


def wait_ready(host: CloneHost, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not host.ready_file.exists():
        assert host.process.poll() is None, f"{host.name} exited:\n{host.log()}"
        assert time.monotonic() < deadline, f"{host.name} not ready:\n{host.log()}"
        time.sleep(0.05)
    ready = json.loads(host.ready_file.read_text())
    assert ready["pid"] == host.process.pid  # a re-execution keeps the process
    url: str = ready["url"]
    return url


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate``; a host that does not answer (it is restarting) is not there yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except HostUnavailableError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def events_of(host: CloneHost, kind: EventKind) -> list[Any]:
    with host.client() as client:
        events, _ = client.events(0, limit=1000)
    return [e for e in events if e.kind == kind]


def failure(host: CloneHost, stage: str) -> Any:
    found = [e for e in events_of(host, EventKind.UPDATE_FAILED) if e.data["stage"] == stage]
    return found[0] if found else None


def mesh_table(url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "paglets.cli.mesh", "hosts", "--url", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env_without_key(),
    )
    return done.stdout


@needs_uv
def test_failed_updates_keep_the_host_on_its_commit(
    tmp_path: Path, clone_hosts: Callable[..., CloneHost]
) -> None:
    remote, first, base = make_remote(tmp_path)
    clone = remote.clone(tmp_path / "solo", venv=True)
    host = clone_hosts("solo", clone, "--update-interval", "0.5", script=True)
    pid = host.process.pid
    with host.client() as client:
        counter = client.create(COUNTER, {"count": 0}, agent_id="tally")
        counter.send("increment", {"by": 7})

    def on_base() -> bool:
        return git(clone, "rev-parse", "HEAD") == base

    # the remote cannot be reached: reported, nothing else happens
    remote.bare.rename(tmp_path / "gone.git")
    wait_until(lambda: failure(host, "fetch") is not None, "the failed fetch")
    assert "git fetch failed" in failure(host, "fetch").detail
    (tmp_path / "gone.git").rename(remote.bare)

    # a commit that does not import: checked in a process of its own, rolled back
    broken = remote.commit(
        "broken", {"paglets/__init__.py": "import paglets_no_such_module\n"}, on=base
    )
    wait_until(lambda: failure(host, "check") is not None, "the failed check")
    event = failure(host, "check")
    assert event.data["new"] == broken
    assert event.data["rolled_back"] is True
    assert "paglets_no_such_module" in event.detail
    assert on_base()
    table = mesh_table(host.url)
    assert f"failed {broken[:12]}" in table
    assert "paglets_no_such_module" in table
    # a lock file uv cannot read: the sync fails, rolled back
    remote.commit("bad lock", {"uv.lock": "this is not a lock file [\n"}, on=base)
    wait_until(lambda: failure(host, "sync") is not None, "the failed sync")
    assert failure(host, "sync").data["rolled_back"] is True
    assert on_base()
    assert (clone / "uv.lock").read_text() != "this is not a lock file [\n"
    # a force-push that drops our commit: no fast-forward, no change
    remote.commit("rewritten history", {"AUTOUPDATE.txt": "other\n"}, on=first)
    wait_until(lambda: failure(host, "diverged") is not None, "the refused force-push")
    assert "force-push" in failure(host, "diverged").detail
    assert on_base()
    # local changes: not touched
    (clone / "README.md").write_text("a local edit\n")
    good = remote.commit("good", {"AUTOUPDATE.txt": "good\n"}, on=base)
    wait_until(lambda: failure(host, "dirty") is not None, "the refused dirty tree")
    assert on_base()
    assert (clone / "README.md").read_text() == "a local edit\n"
    assert host.process.pid == pid
    assert events_of(host, EventKind.UPDATE_STARTED)[-1].data["new"] != good
    with host.client() as client:
        assert client.proxy("tally").send("get") == {"count": 7}  # served all along
    # once the tree is clean, the same host takes the good commit and restarts on it
    git(clone, "checkout", "--", "README.md")
    wait_until(lambda: git(clone, "rev-parse", "HEAD") == good, "the fast-forward")
    wait_until(lambda: bool(events_of(host, EventKind.UPDATE_DONE)), "the restart", 60)
    assert host.process.pid == pid
    assert wait_ready(host) == host.url  # the same port, though it was started with --port 0
    with host.client() as client:
        me = client.hosts()[0]
        assert me.commit == good
        assert me.update is None
        assert client.proxy("tally").send("get") == {"count": 7}


@needs_uv
def test_a_pushed_commit_rolls_through_the_mesh_one_host_at_a_time(
    tmp_path: Path, clone_hosts: Callable[..., CloneHost]
) -> None:
    remote, _, base = make_remote(tmp_path)
    names = ("a", "b", "c")
    ports = {name: free_port() for name in names}
    hosts = []
    for name in names:
        clone = remote.clone(tmp_path / name, venv=True)
        peers = [f"--peer=http://127.0.0.1:{ports[n]}" for n in names if n != name]
        interval = "1" if name == "a" else "3600"  # b and c learn of the commit from a
        hosts.append(
            clone_hosts(name, clone, "--update-interval", interval, *peers, port=ports[name])
        )
    for host in hosts:
        with host.client() as client:
            client.create(COUNTER, {"count": 0}, agent_id=f"count-{host.name}")
            client.proxy(f"count-{host.name}").send("increment", {"by": 3})
    new = remote.commit("an update", {"AUTOUPDATE.txt": "new\n"}, on=base)

    def everywhere_new() -> bool:
        for host in hosts:
            with host.client() as client:
                seen = client.hosts()
            if len(seen) != 3 or any(h.commit != new or h.update for h in seen):
                return False
        return True

    wait_until(everywhere_new, "every host on the new commit, in every view", 90)
    spans = []
    for host in hosts:
        assert running(psutil.Process(host.process.pid))
        done = events_of(host, EventKind.UPDATE_DONE)
        assert [e.data["new"] for e in done] == [new], host.log()
        spans.append((done[0].data["started_at"], done[0].data["ready_at"], host.name))
        with host.client() as client:
            reply = client.proxy(f"count-{host.name}").send("get")
            assert reply == {"count": 3}
    spans.sort()
    for (_, ready_at, name), (started_at, _, other) in itertools.pairwise(spans):
        assert ready_at <= started_at, f"{name} and {other} updated at once: {spans}"
    table = mesh_table(hosts[0].url)
    assert table.count(new[:12]) == 3
    # b and c heard of the commit from a together; c, whose name sorts later, waited for b
    # (and maybe first for a, if it heard while a was still restarting)
    waited = [e.data["host"] for e in events_of(hosts[2], EventKind.UPDATE_WAITING)]
    assert "b" in waited, hosts[2].log()


@needs_uv
def test_a_host_late_on_its_new_commit_goes_back(
    tmp_path: Path, clone_hosts: Callable[..., CloneHost]
) -> None:
    """A commit that passes the check but hangs the real start: rolled back after the bound."""
    remote, _, base = make_remote(tmp_path)
    clone = remote.clone(tmp_path / "late", venv=True)
    host = clone_hosts(
        "late", clone, "--update-interval", "0.5", "--update-ready-timeout", "4", key="k-late-1"
    )
    with host.client() as client:
        client.create(COUNTER, {"count": 0}, agent_id="tally").send("increment", {"by": 2})
    code = (ROOT / "paglets" / "host.py").read_text()
    hang = '            if self.name != "selfcheck":\n                await asyncio.sleep(3600)\n'
    assert "            protect_host()\n" in code
    hanging = remote.commit(
        "hangs at start",
        {
            "paglets/host.py": code.replace(
                "            protect_host()\n", f"            protect_host()\n{hang}"
            )
        },
        on=base,
    )
    wait_until(lambda: failure(host, "ready") is not None, "the rollback", 60)
    event = failure(host, "ready")
    assert event.data["new"] == hanging
    assert "not ready within 4 s" in event.detail
    assert git(clone, "rev-parse", "HEAD") == base
    with host.client() as client:
        me = client.hosts()[0]
        assert me.commit == base
        assert me.update is not None
        assert me.update.state is UpdateState.FAILED
        assert client.proxy("tally").send("get") == {"count": 2}
    assert wait_ready(host) == host.url
    # after two re-executions the host still holds its key ($PAGLETS_API_KEY_FILE)
    with HostClient(host.url, api_key="wrong") as stranger, pytest.raises(AuthenticationError):
        stranger.list()


def test_update_options_are_checked() -> None:
    from paglets.update.updater import UpdateConfig  # noqa: PLC0415

    with pytest.raises(ConfigurationError, match="lease must outlast"):
        UpdateConfig(ready_timeout=10, lease_time=5)
    with pytest.raises(ConfigurationError, match="not a plain git name"):
        UpdateConfig(remote="--upload-pack=evil")
    done = subprocess.run(
        [sys.executable, "-m", "paglets.cli.host", "--git-branch", "main", "--port", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env_without_key(),
    )
    assert done.returncode == 2
    assert "--git-remote and --git-branch go with --git-auto-update" in done.stderr


async def test_a_marker_left_by_the_previous_process_is_read_once(
    small_remote: tuple[Remote, Path], tmp_path: Path
) -> None:
    from paglets import Host  # noqa: PLC0415
    from paglets.update.updater import UpdateConfig, Updater  # noqa: PLC0415

    _, clone = small_remote
    head = git(clone, "rev-parse", "HEAD")
    host = Host(name="m", state_dir=tmp_path / "state")
    home = host.config.home
    home.mkdir(parents=True)

    def updater() -> Updater:
        return Updater(host, UpdateConfig(), checkout=Checkout(clone), uv="uv")

    # restarting on a commit that is not checked out: stale, dropped
    Marker(Phase.RESTARTING, head, "b" * 40, moved=True, started_at=1, ready_timeout=9).save(home)
    stale = updater()
    await stale.prepare()
    assert stale.marker is None
    assert not (home / "update.json").exists()
    assert host.mesh.table.me.update is None
    # restarting on the commit checked out: the update finishes once the host is ready
    Marker(Phase.RESTARTING, "a" * 40, head, moved=True, started_at=1, ready_timeout=9).save(home)
    finishing = updater()
    await finishing.prepare()
    assert finishing.marker is not None
    assert host.mesh.table.me.update == UpdateStatus(UpdateState.UPDATING, head)
    await finishing.ready()
    assert host.mesh.table.me.update is None
    assert [e.kind for e in host.events.query(0)][-1] == EventKind.UPDATE_DONE
    # rolled back: reported as a failure of that commit, which is not tried again
    bad = "c" * 40
    Marker(
        Phase.ROLLED_BACK, head, bad, moved=False, started_at=1, ready_timeout=9, reason="late"
    ).save(home)
    back = updater()
    await back.prepare()
    assert host.mesh.table.me.update == UpdateStatus(UpdateState.FAILED, bad, "ready: late")
    assert bad in back._bad
    assert not (home / "update.json").exists()
