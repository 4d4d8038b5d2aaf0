"""The mesh with real hosts: in-process on loopback, and as ``paglets-host`` processes."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import uuid
from typing import TYPE_CHECKING

import psutil
import pytest

from paglets import (
    AsyncHostClient,
    ConfigurationError,
    EventKind,
    HostClient,
    HostNotFoundError,
    TransferError,
)
from tests.conftest import wait_for
from tests.hostproc import command as _command
from tests.hostproc import env_without_key as _env
from tests.hostproc import wait_gone as _wait_gone

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from paglets import Host

FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
HOST_CMD = _command("paglets-host", "paglets.cli.host")
MESH_CMD = _command("paglets-mesh", "paglets.cli.mesh")


def _names(host: Host, *, online: bool = True) -> set[str]:
    return {h.name for h in host.mesh.hosts() if h.online == online}


async def test_three_hosts_join_through_one_seed_and_converge(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    seed = await make_host(name="seed", tags=("core",), **FAST)
    b = await make_host(name="b", peers=(seed.url,), properties={"zone": "x"}, **FAST)
    c = await make_host(name="c", peers=(seed.url,), **FAST)
    everyone = {"seed", "b", "c"}
    await wait_for(
        lambda: all(_names(h) == everyone for h in (seed, b, c)), 10, "three hosts converged"
    )
    async with AsyncHostClient(c.url) as client:
        records = await client.hosts()
        assert records[0].name == "c", "the host asked comes first"
        by_name = {r.name: r for r in records}
        assert by_name["seed"].url == seed.url
        assert by_name["seed"].tags == ["core"]
        assert by_name["b"].properties == {"zone": "x"}
        assert all(r.online and r.mesh_version == "dev" for r in records)
        assert all(r.protocol_version == 1 and r.version for r in records)
        assert await client.resolve("b") == b.url
        assert await client.resolve(b.url + "/") == b.url
        assert [r.name for r in await client.hosts(tag="core")] == ["seed"]
        with pytest.raises(HostNotFoundError, match="no host 'nobody'"):
            await client.resolve("nobody")
        async with await client.at("seed") as at_seed:
            counter = await at_seed.create("examples.counter:Counter")
            assert await counter.send("increment") == {"count": 1}
            assert (await counter.info()).host == "seed"
    joined = seed.events.query(kinds=[EventKind.MESH_HOST_JOINED])
    assert {e.data["name"] for e in joined} == {"b", "c"}


async def test_a_taken_name_fails_the_join(make_host: Callable[..., Awaitable[Host]]) -> None:
    seed = await make_host(name="seed", **FAST)
    first = await make_host(name="twin", peers=(seed.url,), **FAST)
    await wait_for(lambda: "twin" in _names(seed), 5, "twin joined")
    with pytest.raises(ConfigurationError) as info:
        await make_host(name="twin", peers=(seed.url,), **FAST)
    assert str(info.value) == (
        f"host name 'twin' is already used by {first.url} in this mesh; pick another --name"
    )
    assert seed.mesh.lookup("twin").url == first.url, "the first host keeps its name"
    dup = seed.events.query(kinds=[EventKind.MESH_DUPLICATE_NAME])
    assert dup
    assert dup[0].data["kept_url"] == first.url


async def test_another_mesh_version_is_visible_but_never_a_target(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", mesh_version="m1", **FAST)
    b = await make_host(name="b", mesh_version="m1", peers=(a.url,), **FAST)
    old = await make_host(name="old", mesh_version="m0", peers=(a.url,), **FAST)
    await wait_for(lambda: _names(a) == {"a", "b", "old"}, 5, "all visible")
    assert a.mesh.movement_target("b").url == b.url
    assert a.mesh.movement_target(b.url).name == "b"
    with pytest.raises(TransferError) as info:
        a.mesh.movement_target("old")
    message = str(info.value)
    assert "'m0'" in message
    assert "'m1'" in message
    assert "--mesh-version" in message
    assert [h.name for h in a.mesh.hosts(mesh_version="m1")] == ["a", "b"]
    with pytest.raises(HostNotFoundError):
        a.mesh.movement_target("nobody")
    await old.stop()
    await b.stop()
    await wait_for(lambda: _names(a, online=False) == {"b", "old"}, 5, "b offline")
    with pytest.raises(TransferError, match="is offline: last seen"):
        a.mesh.movement_target("b")


async def test_a_stopping_host_says_goodbye(make_host: Callable[..., Awaitable[Host]]) -> None:
    # offline-after is long: only the goodbye can explain b going offline quickly
    slow = {**FAST, "offline_after": 60.0}
    a = await make_host(name="a", **slow)
    b = await make_host(name="b", peers=(a.url,), **slow)
    await wait_for(lambda: _names(a) == {"a", "b"} == _names(b), 5, "joined")
    since = a.events.last_cursor
    await b.stop()
    assert _names(a, online=False) == {"b"}, "the goodbye arrives before stop() returns"
    kinds = [e.kind for e in a.events.query(since)]
    assert EventKind.MESH_HOST_OFFLINE in kinds
    # a restarted b is welcome back under its name
    b2 = await make_host(name="b", peers=(a.url,), state_dir=b.config.state_dir, **slow)
    await wait_for(lambda: _names(a) == {"a", "b"}, 5, "b back online")
    assert a.mesh.movement_target("b").url == b2.url


async def test_zeroconf_discovers_hosts_on_loopback(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    tag = uuid.uuid4().hex[:8]  # other meshes on this machine may announce too
    zc = {"discovery": True, "discovery_interfaces": ("127.0.0.1",), **FAST}
    a = await make_host(name=f"zc-a-{tag}", **zc)
    b = await make_host(name=f"zc-b-{tag}", **zc)
    assert not a.config.peers
    assert not b.config.peers
    await wait_for(lambda: {a.name, b.name} <= _names(a), 15, "a discovered b")
    await wait_for(lambda: {a.name, b.name} <= _names(b), 15, "b discovered a")
    # At least one learned the other from zeroconf (the other may hear of it by gossip first).
    da, db = a.mesh.discovery, b.mesh.discovery
    assert da is not None
    assert db is not None
    await wait_for(lambda: a.name in db.found or b.name in da.found, 10, "a zeroconf find")


def test_discovery_defaults_follow_the_bind() -> None:
    from paglets import HostConfig  # noqa: PLC0415

    assert not HostConfig(name="x").discovery_enabled
    assert HostConfig(name="x", discovery=True).discovery_enabled
    assert HostConfig(name="x", host="0.0.0.0", insecure=True).discovery_enabled
    assert HostConfig(name="x", bind_public=True, insecure=True).discovery_enabled
    assert not HostConfig(
        name="x", bind_public=True, insecure=True, discovery=False
    ).discovery_enabled
    with pytest.raises(ConfigurationError, match="without an API key"):
        HostConfig(name="x", bind_public=("192.0.2.1",))
    with pytest.raises(ConfigurationError, match="offline_after"):
        HostConfig(name="x", gossip_interval=2, offline_after=1)


# -- as processes -------------------------------------------------------------------


class Daemons:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        ready = self.tmp / f"{name}-{len(self.processes)}.ready"
        log = (self.tmp / f"{name}.log").open("ab")
        argv = [*HOST_CMD, "--name", name, "--port", "0", "--ready-file", str(ready)]
        argv += ["--state-dir", str(self.tmp / "state"), "--log-level", "warning"]
        argv += ["--gossip-interval", "0.1", "--offline-after", "1", *args]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_env()
        )
        log.close()
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, (self.tmp / f"{name}.log").read_text()
            assert time.monotonic() < deadline, f"{name} not ready"
            time.sleep(0.02)
        return process, json.loads(ready.read_text())["url"]

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                tree = psutil.Process(process.pid).children(recursive=True)
                process.send_signal(signal.SIGTERM)
                process.wait(20)
                _wait_gone(tree)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    with contextlib.closing(Daemons(tmp_path)) as d:
        yield d


def _online(url: str) -> dict[str, bool]:
    with HostClient(url, api_key="") as client:
        return {h.name: h.online for h in client.hosts()}


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_a_killed_host_goes_offline_then_back_online(daemons: Daemons) -> None:
    _, seed = daemons.start("p-seed")
    _, b = daemons.start("p-b", "--peer", seed)
    victim, c = daemons.start("p-c", "--peer", seed, "--tag", "spare")
    all_online = {"p-seed": True, "p-b": True, "p-c": True}
    _wait(lambda: _online(seed) == _online(b) == all_online, 10, "three hosts online")

    tree = psutil.Process(victim.pid).children(recursive=True)
    victim.kill()
    victim.wait()
    _wait_gone(tree)
    c_offline = {"p-seed": True, "p-b": True, "p-c": False}
    _wait(lambda: _online(seed) == _online(b) == c_offline, 10, "p-c offline everywhere")

    _, c2 = daemons.start("p-c", "--peer", b)
    _wait(lambda: _online(seed) == _online(b) == _online(c2) == all_online, 10, "p-c back")

    table = subprocess.run(
        [*MESH_CMD, "hosts", "--url", seed],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_env(),
    ).stdout
    lines = table.splitlines()
    assert lines[0].split() == [
        "NAME",
        "URL",
        "STATUS",
        "MESH",
        "VERSION",
        "COMMIT",
        "UPDATE",
        "LAST",
        "SEEN",
        "PAGLETS",
        "TAGS",
        "CODE",
        "BY",
        "VALUE",
        "IDENTITY",
    ]
    assert lines[1].startswith("p-seed")
    assert all(" refused " in line for line in lines[1:]), "no host trusts code by value"
    assert all(" SHA256:" in line for line in lines[1:]), "each host's identity fingerprint"
    row = next(line for line in lines if line.startswith("p-c "))
    assert c2 in row
    assert "online" in row
    assert c not in table, "the old address of p-c is forgotten"
    resolved = subprocess.run(
        [*MESH_CMD, "resolve", "p-c"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_env(PAGLETS_URL=seed),
    ).stdout.strip()
    assert resolved == c2


def test_a_duplicate_name_refuses_to_start(daemons: Daemons, tmp_path: Path) -> None:
    _, seed = daemons.start("d-seed")
    result = subprocess.run(
        [
            *HOST_CMD,
            "--name",
            "d-seed",
            "--port",
            "0",
            "--peer",
            seed,
            "--state-dir",
            str(tmp_path / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: host name 'd-seed' is already used by {seed} in this mesh; pick another --name"
    )


async def test_a_mesh_with_an_api_key_gossips_with_it(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="ka", api_key="k3y", **FAST)
    b = await make_host(name="kb", api_key="k3y", peers=(a.url,), **FAST)
    stranger = await make_host(name="kx", api_key="other", peers=(a.url,), **FAST)
    await wait_for(lambda: _names(a) == _names(b) == {"ka", "kb"}, 5, "the keyed mesh")
    assert _names(stranger) == {"kx"}, "a host with another key is refused"
    async with AsyncHostClient(a.url, api_key="k3y") as client:
        assert {h.name for h in await client.hosts()} == {"ka", "kb"}


def test_bind_public_to_a_foreign_address_is_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *HOST_CMD,
            "--bind-public",
            "192.0.2.77",
            "--insecure",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: cannot bind 192.0.2.77: not an address of this machine; check --bind-public"
    ]


def test_bind_public_and_host_together_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [*HOST_CMD, "--bind-public", "--host", "127.0.0.1", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert result.returncode == 2
    assert "--bind-public replaces --host" in result.stderr
