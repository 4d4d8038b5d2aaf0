"""The ways children start: warm zygote, pool, plain spawn, and a lost zygote."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import psutil
import pytest

from paglets import AsyncHostClient, AsyncPagletProxy, HostError, PagletCrashedError
from paglets.runtime.spawner import WarmPool, ZygoteSpawner


@pytest.mark.parametrize(
    ("spawner", "warm"), [("zygote", 0), ("zygote", 2), ("spawn", 0), ("spawn", 1)]
)
async def test_each_spawner_runs_paglets(make_host, spawner, warm):
    host = await make_host(spawner=spawner, warm_children=warm)
    async with AsyncHostClient(host.url) as client:
        proxies = [await client.create("examples.counter:Counter") for _ in range(3)]
        for proxy in proxies:
            assert await proxy.send("increment", {"by": 2}) == {"count": 2}
        pids = {(await p.info()).pid for p in proxies}
        assert len(pids) == 3
        assert os.getpid() not in pids
        for proxy in proxies:
            await proxy.dispose()


async def _counter_and_zygote(
    client: AsyncHostClient,
) -> tuple[AsyncPagletProxy, int, psutil.Process]:
    """A new Counter, its process id, and the zygote that forked it."""
    proxy = await client.create("examples.counter:Counter")
    pid = (await proxy.info()).pid
    assert pid is not None
    zygote = psutil.Process(pid).parent()
    assert zygote is not None
    return proxy, pid, zygote


async def test_zygote_children_are_forked_from_the_zygote(make_host):
    host = await make_host(spawner="zygote", warm_children=0)
    async with AsyncHostClient(host.url) as client:
        _proxy, _pid, zygote = await _counter_and_zygote(client)
        assert "paglets.runtime.zygote" in " ".join(zygote.cmdline())
        assert zygote.ppid() == os.getpid()


async def test_a_lost_zygote_fails_its_children_and_is_restarted(make_host):
    host = await make_host(spawner="zygote", warm_children=0)
    async with AsyncHostClient(host.url) as client:
        proxy, _pid, zygote = await _counter_and_zygote(client)
        zygote.send_signal(signal.SIGKILL)
        zygote.wait(10)
        with pytest.raises(PagletCrashedError):
            await proxy.send("get", timeout=10)
        # the next create starts a fresh zygote
        again = await client.create("examples.counter:Counter")
        assert await again.send("increment") == {"count": 1}
        await again.dispose()
        await proxy.dispose()


async def test_the_pool_keeps_children_ready_and_closes_them():
    pool = WarmPool(ZygoteSpawner(), size=2)
    await pool.start()
    try:
        child = await pool.spawn()
        assert child.pid > 0
        child.close()
        child.kill()
        await child.exited
    finally:
        await pool.close()


async def test_the_pool_refills_after_a_delay_but_at_once_when_empty():
    pool = WarmPool(ZygoteSpawner(), size=2, refill_delay=1.0)
    await pool.start()
    taken = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while pool.ready < 2:
            assert asyncio.get_running_loop().time() < deadline, "the pool never filled"
            await asyncio.sleep(0.01)
        taken.append(await pool.spawn())
        await asyncio.sleep(0.1)
        assert pool.ready == 1, "refilled during the start it serves"
        taken.append(await pool.spawn())  # the pool is empty now: it refills at once
        while pool.ready < 2:
            assert asyncio.get_running_loop().time() < deadline, "the pool never refilled"
            await asyncio.sleep(0.01)
    finally:
        for child in taken:
            child.close()
            child.kill()
            await child.exited
        await pool.close()


async def test_spawning_after_close_is_refused_cleanly():
    spawner = ZygoteSpawner()
    await spawner.start()
    await spawner.close()
    # a closed spawner starts a new zygote on demand, and can be closed again
    child = await spawner.spawn()
    child.close()
    await child.exited
    await spawner.close()
    assert isinstance(HostError("x"), HostError)


def _sample_fds(pid: int) -> list[str]:
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            links.append(str(fd.readlink()))
    return [link for link in links if "paglets-sample-envelope" in link]


@pytest.mark.parametrize("warm", [0, 2])
async def test_the_zygote_keeps_a_sample_envelope_its_paglets_never_see(make_host, warm):
    host = await make_host(spawner="zygote", warm_children=warm)
    async with AsyncHostClient(host.url) as client:
        proxy, pid, zygote = await _counter_and_zygote(client)
        assert len(_sample_fds(zygote.pid)) == 1, "the zygote's, for every child to prime with"
        assert _sample_fds(pid) == [], "a paglet's process closed it before becoming the paglet"
        assert await proxy.send("increment", {"by": 1}) == {"count": 1}


async def test_a_zygote_launched_ahead_is_the_one_the_host_uses(make_host):
    zygote = ZygoteSpawner()
    zygote.launch()  # as paglets-host does, before it imports the host
    assert zygote._proc is not None
    launched = zygote._proc.pid
    host = await make_host(spawner="zygote", warm_children=1, zygote=zygote)
    async with AsyncHostClient(host.url) as client:
        _proxy, _pid, parent = await _counter_and_zygote(client)
        assert parent.pid == launched, "the host started a zygote of its own"


async def test_a_zygote_launched_but_never_started_is_stopped_by_close():
    zygote = ZygoteSpawner()
    zygote.launch()
    assert zygote._proc is not None
    proc = psutil.Process(zygote._proc.pid)
    await zygote.close()
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
