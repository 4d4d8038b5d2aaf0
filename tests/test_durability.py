"""Deactivation, activation, checkpoints and host restarts, with real hosts and disks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from paglets import (
    AsyncHostClient,
    AsyncPagletProxy,
    EventKind,
    Host,
    HostClient,
    PagletCrashedError,
    PagletInactiveError,
    PagletStatus,
    RestartMode,
    RestartPolicy,
    StorageError,
)
from paglets.persistence.checkpoints import keep
from tests.conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from tests.hostproc import Pair

TRAVELER = "examples.travel:Traveler"
COUNTER = "examples.counter:Counter"
QUIET = {"warm_children": 0}


async def test_deactivate_and_activate_on_message(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.send("increment")
        await traveler.send("payload", {"size": 2 * 1024 * 1024})
        digest = await traveler.send("digest")
        await traveler.deactivate()
        info = await traveler.info()
        assert info.status == "inactive"
        assert info.pid is None
        assert host.supervisor.checkpoint_path(traveler.agent_id).exists()
        with pytest.raises(PagletInactiveError, match="inactive"):
            await traveler.send("increment", no_delay=True)
        assert (await traveler.info()).status == "inactive", "no_delay does not activate"
        assert await traveler.send("increment") == 2, "a message activates it"
        assert await traveler.send("digest") == digest
        assert (await traveler.send("log"))[-2:] == ["deactivating@alpha", "activation@alpha"]
        kinds = [e.kind for e in host.events.query(0, 1000, agent_id=traveler.agent_id)]
        assert EventKind.PAGLET_DEACTIVATED in kinds
        assert EventKind.PAGLET_ACTIVATED in kinds


async def test_messages_queued_before_a_deactivation_are_kept(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        traveler = await client.create(TRAVELER)
        sends = [asyncio.ensure_future(traveler.send("increment")) for _ in range(10)]
        await asyncio.sleep(0)
        nap = asyncio.ensure_future(traveler.deactivate())
        sends += [asyncio.ensure_future(traveler.send("increment")) for _ in range(10)]
        assert sorted(await asyncio.gather(*sends)) == list(range(1, 21))
        await nap
        assert await traveler.send("increment") == 21


async def test_a_paglet_deactivates_itself_and_wakes_up(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        traveler = await client.create(TRAVELER)
        assert await traveler.send("nap", {"seconds": 0.5}) == "napping"
        record = host.supervisor.get(traveler.agent_id)
        await wait_for(lambda: record.status is PagletStatus.INACTIVE, 5, "asleep")
        record = host.supervisor.get(traveler.agent_id)

        def awake() -> bool:
            return host.supervisor.get(traveler.agent_id).status is PagletStatus.ACTIVE

        await wait_for(awake, 5, "woken by its timer, not by a message")
        assert (await traveler.send("log"))[-1] == "activation@alpha"


async def test_a_stopped_host_brings_its_paglets_back(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    options = {"name": "keeper", "state_dir": tmp_path / "state", **QUIET}
    first = await make_host(**options)
    async with AsyncHostClient(first.url) as client:
        awake = await client.create(TRAVELER)
        asleep = await client.create(TRAVELER)
        fresh = await client.create(COUNTER, {"count": 41})
        for _ in range(3):
            await awake.send("increment")
        await asleep.send("increment")
        await asleep.deactivate()
    await first.stop()

    second = await make_host(**options)
    statuses = {r.agent_id: r.status for r in second.supervisor.list()}
    assert statuses == {
        awake.agent_id: PagletStatus.ACTIVE,
        asleep.agent_id: PagletStatus.INACTIVE,
        fresh.agent_id: PagletStatus.ACTIVE,
    }
    async with AsyncHostClient(second.url) as client:
        assert await client.proxy(awake.agent_id).send("increment") == 4, "state kept at stop"
        assert await client.proxy(asleep.agent_id).send("increment") == 2
        assert (await client.proxy(fresh.agent_id).send("get")) == {"count": 41}
        log = await client.proxy(awake.agent_id).send("log")
        assert log == ["creation@keeper", "activation@keeper"]
        # disposed paglets are gone for good
        await client.proxy(fresh.agent_id).dispose()
    await second.stop()
    third = await make_host(**options)
    assert fresh.agent_id not in {r.agent_id for r in third.supervisor.list()}


async def test_a_corrupt_checkpoint_is_quarantined_and_reported(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.deactivate()
        checkpoint = host.supervisor.checkpoint_path(traveler.agent_id)
        data = checkpoint.read_bytes()
        checkpoint.write_bytes(data[: len(data) // 2])
        with pytest.raises(Exception, match="truncated"):
            await traveler.send("increment")
        info = await traveler.info()
        assert info.status == "crashed"
        assert not checkpoint.exists()
        assert list((host.config.home / "quarantine").glob(f"*{traveler.agent_id}*"))
        # the host and other paglets are fine
        other = await client.create(TRAVELER)
        assert await other.send("increment") == 1


async def test_many_inactive_paglets_are_listed_and_wake_on_message(host: Host) -> None:
    count = 1000
    async with AsyncHostClient(host.url) as client:
        proxies = []
        for batch in range(count // 25):
            made = await asyncio.gather(*(client.create(COUNTER) for _ in range(25)))
            await asyncio.gather(*(p.deactivate() for p in made))
            proxies += made
            del batch
        listed = await client.list()
        assert len(listed) == count
        assert {i.status for i in listed} == {"inactive"}
        replies = await asyncio.gather(*(p.send("increment") for p in proxies[:10]))
        assert replies == [{"count": 1}] * 10
        assert sum(1 for r in host.supervisor.list() if r.status is PagletStatus.ACTIVE) == 10


# -- disks that fill up ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, made by the test (needs root and mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"this machine forbids mounting a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(mount)], check=True, capture_output=True)


async def test_a_full_disk_fails_the_deactivation_and_the_paglet_stays_active(
    make_host: Callable[..., Awaitable[Host]], small_disk: Path
) -> None:
    host = await make_host(name="tiny", state_dir=small_disk, **QUIET)
    async with AsyncHostClient(host.url) as client:
        traveler = await client.create(TRAVELER)
        await traveler.send("increment")
        await traveler.send("payload", {"size": 8 * 1024 * 1024})
        with pytest.raises(StorageError, match="free some disk space"):
            await traveler.deactivate()
        info = await traveler.info()
        assert info.status == "active"
        assert await traveler.send("increment") == 2
        leftovers = [p.name for p in host.supervisor.checkpoints.glob("*")]
        assert leftovers == [], f"no partial checkpoint is left: {leftovers}"


# -- SIGKILL of the host ----------------------------------------------------------------------


def test_after_a_sigkill_paglets_come_back_from_their_last_checkpoint(pair: Pair) -> None:
    pair.start("src")
    with HostClient(pair.url("src"), api_key="") as client:
        saved = client.create(TRAVELER)
        for _ in range(3):
            saved.send("increment")
        assert saved.send("save") == "saved"
        saved.send("increment")  # after the checkpoint: inside the loss window
        never = client.create(COUNTER, {"count": 7})
        never.send("increment")  # never checkpointed: back to its creation state
        asleep = client.create(COUNTER, {"count": 5})
        asleep.deactivate()
    pair.processes["src"].kill()
    pair.wait_dead("src")
    pair.start("src")
    with HostClient(pair.url("src"), api_key="") as client:
        statuses = {i.agent_id: i.status for i in client.list()}
        assert statuses == {
            saved.agent_id: "active",
            never.agent_id: "active",
            asleep.agent_id: "inactive",
        }
        assert client.proxy(saved.agent_id).send("increment") == 4
        assert client.proxy(never.agent_id).send("get") == {"count": 7}
        assert client.proxy(asleep.agent_id).send("get") == {"count": 5}
        kinds = [e.kind for e in client.events(0, 1000)[0]]
        assert kinds.count(EventKind.PAGLET_RECOVERED) == 2


# -- restart policies ------------------------------------------------------------------------

PHOENIX = "pagletstest.testing:Phoenix"
PROBE = "pagletstest.testing:Probe"


async def test_a_crashed_paglet_restarts_from_its_last_checkpoint_until_the_limit(
    host: Host,
) -> None:
    async with AsyncHostClient(host.url) as client:
        phoenix = await client.create(PHOENIX)
        await phoenix.send("record", {"tag": "kept"})
        assert await phoenix.send("save") == 1
        await phoenix.send("record", {"tag": "lost"})
        for restarts in (1, 2):
            with pytest.raises(PagletCrashedError):
                await phoenix.send("os_exit", {"code": 9})
            # the next message waits for the restart, and sees the checkpointed state
            assert await phoenix.send("record", {"tag": f"after{restarts}"}) == restarts + 1
            await phoenix.send("save")
            await phoenix.send("record", {"tag": "lost"})
        with pytest.raises(PagletCrashedError):
            await phoenix.send("os_exit", {"code": 9})

        def failed() -> bool:
            return host.supervisor.get(phoenix.agent_id).status is PagletStatus.FAILED

        await wait_for(failed, 5, "left failed after 2 restarts")
        info = await phoenix.info()
        assert info.status == "failed"
        with pytest.raises(PagletCrashedError, match="restarted 2 times within 60 s"):
            await phoenix.send("echo", {})
        kinds = [e.kind for e in host.events.query(0, 1000, agent_id=phoenix.agent_id)]
        assert kinds.count(EventKind.PAGLET_RESTARTED) == 2
        assert kinds.count(EventKind.PAGLET_FAILED) == 1


async def test_an_instance_policy_overrides_the_class_and_always_restarts(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        always = RestartPolicy(RestartMode.ALWAYS, max_restarts=5, backoff=0.01)
        probe = await client.create(PROBE, restart_policy=always)
        never = await client.create(PROBE)
        with pytest.raises(PagletCrashedError):
            await probe.send("exit", {"code": 0})  # a clean exit: "always" restarts it too
        assert await probe.send("echo", {"back": True}) == {"back": True}
        with pytest.raises(PagletCrashedError):
            await never.send("os_exit", {"code": 3})
        await wait_for(
            lambda: host.supervisor.get(never.agent_id).status is PagletStatus.CRASHED, 5
        )
        with pytest.raises(PagletCrashedError, match="exited with code 3"):
            await never.send("echo", {})


# -- monitors ----------------------------------------------------------------------------------

WATCHER = "pagletstest.testing:Watcher"


async def _downs(watcher: AsyncPagletProxy, count: int) -> list[dict[str, object]]:
    async def arrived() -> bool:
        return len(await watcher.send("downs")) >= count

    await wait_for(arrived, 10, f"{count} paglet.down messages")
    downs: list[dict[str, object]] = await watcher.send("downs")
    return downs


async def test_a_watcher_hears_of_disposal_crash_and_failure_on_its_host(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        watcher = await client.create(WATCHER)
        disposed = await client.create(PROBE)
        crashed = await client.create(PROBE)
        failing = await client.create(PHOENIX)
        for watched in (disposed, crashed, failing):
            assert await watcher.send("watch", {"agent_id": watched.agent_id}) == "watching"
        await disposed.dispose()
        with pytest.raises(PagletCrashedError):
            await crashed.send("os_exit", {"code": 5})
        for _ in range(3):  # Phoenix restarts twice, then fails
            with contextlib.suppress(PagletCrashedError):
                await failing.send("os_exit", {"code": 5})
        downs = await _downs(watcher, 3)
        reasons = {d["agent_id"]: d["reason"] for d in downs}
        assert reasons == {
            disposed.agent_id: "disposed",
            crashed.agent_id: "crashed",
            failing.agent_id: "failed",
        }, "a restart is not a down; the final failure is"


async def test_a_watcher_hears_across_hosts_and_when_the_host_goes_away(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    fast = {"gossip_interval": 0.1, "offline_after": 1.0, **QUIET}
    a = await make_host(name="a", **fast)
    b = await make_host(name="b", peers=(a.url,), **fast)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "joined")
    async with AsyncHostClient(a.url) as ca, AsyncHostClient(b.url) as cb:
        watcher = await ca.create(WATCHER)
        crashing = await cb.create(PROBE)
        staying = await cb.create(PROBE)
        await watcher.send("watch", {"agent_id": crashing.agent_id, "host": "b"})
        await watcher.send("watch", {"agent_id": staying.agent_id, "host": b.url})
        with pytest.raises(PagletCrashedError):
            await crashing.send("os_exit", {"code": 5})
        first = await _downs(watcher, 1)
        assert first[0] == {
            "agent_id": crashing.agent_id,
            "host": "b",
            "reason": "crashed",
            "detail": "exited with code 5",
        }
        await b.stop()
        downs = await _downs(watcher, 2)
        assert downs[1]["agent_id"] == staying.agent_id
        assert downs[1]["reason"] == "host_offline"


async def test_an_idle_paglet_is_deactivated_by_its_policy(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        drowsy = await client.create("pagletstest.testing:Drowsy")
        assert await drowsy.send("record", {"tag": "before"}) == 1

        def asleep() -> bool:
            return host.supervisor.get(drowsy.agent_id).status is PagletStatus.INACTIVE

        await wait_for(asleep, 10, "deactivated after 0.3 s idle")
        assert await drowsy.send("record", {"tag": "after"}) == 2, "state kept"
        assert host.supervisor.get(drowsy.agent_id).status is PagletStatus.ACTIVE


async def test_the_event_log_survives_a_restart_and_its_cursor_keeps_rising(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    options = {"name": "chronicle", "state_dir": tmp_path / "state", **QUIET}
    first = await make_host(**options)
    async with AsyncHostClient(first.url) as client:
        counter = await client.create(COUNTER)
        await counter.dispose()
        before, last = await client.events(0, 1000)
    await first.stop()
    second = await make_host(**options)
    async with AsyncHostClient(second.url) as client:
        after, newest = await client.events(0, 1000)
        assert [e.cursor for e in after[: len(before)]] == [e.cursor for e in before]
        assert newest > last, "the restarted host logs after the old cursor"
        mine = [e.kind for e in after if e.agent_id == counter.agent_id]
        assert mine == [EventKind.PAGLET_CREATED, EventKind.PAGLET_DISPOSED]
        # following: a long poll from the newest cursor wakes on the next event
        waiting = asyncio.ensure_future(client.events(newest, 10, wait=10.0))
        await asyncio.sleep(0.05)
        await client.create(COUNTER)
        followed, _ = await waiting
        assert followed[0].kind is EventKind.PAGLET_CREATED


def test_an_arrived_envelope_becomes_the_checkpoint_and_stays_for_its_owner(
    tmp_path: Path,
) -> None:
    envelope = tmp_path / "in" / "t.in"
    envelope.parent.mkdir()
    envelope.write_bytes(b"new")
    checkpoint = tmp_path / "checkpoints" / "a.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"stale")  # left by an earlier stay: replaced
    keep(envelope, checkpoint)
    assert checkpoint.read_bytes() == b"new"
    assert envelope.exists(), "the receiver drops it once it has journaled the start"
    assert envelope.samefile(checkpoint)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["a.ckpt"]


def test_without_hard_links_the_envelope_is_renamed_to_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(self: Path, target: Path) -> None:
        raise OSError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(type(tmp_path), "hardlink_to", no_links)
    envelope = tmp_path / "t.in"
    envelope.write_bytes(b"new")
    checkpoint = tmp_path / "checkpoints" / "a.ckpt"
    keep(envelope, checkpoint)
    assert checkpoint.read_bytes() == b"new"
    assert not envelope.exists()
