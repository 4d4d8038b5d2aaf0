"""A paglet's crash, exit, hang or runaway memory never takes down its host or a neighbour.

Real children are killed for real (signals, exits, memory); callers must get typed
errors at once, the host must stay healthy, and nothing may be left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from conftest import wait_for

from paglets import (
    AsyncHostClient,
    EventKind,
    HandlerError,
    PagletCrashedError,
    PagletDisposedError,
    PagletTimeoutError,
)
from paglets.runtime.records import SupervisorLimits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets import AsyncPagletProxy, Host

PROBE = "pagletstest.testing:Probe"


async def _events_of(client: AsyncHostClient, agent_id: str) -> list[EventKind]:
    events, _ = await client.events(0, 1000, agent_id=agent_id)
    return [e.kind for e in events]


def _kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _assert_neighbour_and_host_fine(
    client: AsyncHostClient, neighbour: AsyncPagletProxy
) -> None:
    assert await neighbour.send("echo", {"still": "here"}) == {"still": "here"}
    assert await client.health() == "running"


# -- deaths and exceptions ------------------------------------------------------------


async def test_handler_exception_leaves_the_paglet_alive(client: AsyncHostClient) -> None:
    victim, neighbour = await asyncio.gather(client.create(PROBE), client.create(PROBE))
    pid = (await victim.info()).pid
    with pytest.raises(HandlerError, match="ValueError"):
        await victim.send("raise")
    info = await victim.info()
    assert info.status == "active"
    assert info.pid == pid
    assert info.exit_reason is None
    assert await victim.send("echo", {"n": 1}) == {"n": 1}
    assert EventKind.PAGLET_CRASHED not in await _events_of(client, victim.agent_id)
    await _assert_neighbour_and_host_fine(client, neighbour)
    await victim.dispose()
    assert (await victim.info()).status == "disposed"


@pytest.mark.parametrize(
    ("kind", "args", "reason", "detail"),
    [
        ("exit", {"code": 3}, "exit_code", "exited with code 3"),
        ("os_exit", {"code": 4}, "exit_code", "exited with code 4"),
        ("exit", {"code": 1}, "exception", "exited with code 1"),
    ],
)
async def test_paglet_exit_is_a_crash(
    client: AsyncHostClient, kind: str, args: dict[str, Any], reason: str, detail: str
) -> None:
    victim, neighbour = await asyncio.gather(client.create(PROBE), client.create(PROBE))
    pid = (await victim.info()).pid
    assert pid is not None
    with pytest.raises(PagletCrashedError, match=detail):
        await victim.send(kind, args)
    await _assert_dead_and_reported(client, victim, pid, reason, detail)
    await _assert_neighbour_and_host_fine(client, neighbour)
    await victim.dispose()
    assert (await victim.info()).status == "disposed"


async def test_sigkill_from_outside_is_a_crash(client: AsyncHostClient) -> None:
    victim, neighbour = await asyncio.gather(client.create(PROBE), client.create(PROBE))
    pid = (await victim.info()).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def crashed() -> bool:
        return (await victim.info()).status == "crashed"

    await wait_for(crashed, what="the killed paglet to be reported crashed")
    await _assert_dead_and_reported(client, victim, pid, "signal", "killed by SIGKILL")
    with pytest.raises(PagletCrashedError, match="SIGKILL"):
        await victim.send("echo")
    await _assert_neighbour_and_host_fine(client, neighbour)
    await victim.dispose()
    assert (await victim.info()).status == "disposed"


async def _assert_dead_and_reported(
    client: AsyncHostClient, victim: AsyncPagletProxy, pid: int, reason: str, detail: str
) -> None:
    info = await victim.info()
    assert info.status == "crashed"
    assert info.exit_reason == reason
    assert info.exit_detail is not None
    assert detail in info.exit_detail
    assert info.pid is None
    assert _gone(pid)
    events, _ = await client.events(0, 1000, agent_id=victim.agent_id)
    crashes = [e for e in events if e.kind is EventKind.PAGLET_CRASHED]
    assert len(crashes) == 1
    assert crashes[0].data["reason"] == reason
    assert crashes[0].data["class_path"] == PROBE
    # later calls fail at once with the same typed error
    with pytest.raises(PagletCrashedError):
        await victim.send("echo")
    with pytest.raises(PagletCrashedError):
        await victim.state()


async def test_pending_calls_fail_at_once_when_the_paglet_dies(client: AsyncHostClient) -> None:
    victim = await client.create(PROBE)
    pid = (await victim.info()).pid
    assert pid is not None

    async def pending(count: int) -> None:
        async def reached() -> bool:
            return (await victim.info()).pending == count

        await wait_for(reached, what=f"{count} calls pending on the paglet")

    # the sleep goes first, so the other two queue behind it
    sync_call = asyncio.create_task(victim.send("sleep", {"seconds": 30}))
    await pending(1)
    queued = asyncio.create_task(victim.send("echo", {"queued": True}))
    future = await victim.send_future("echo", {"queued": "future"})
    await pending(3)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(PagletCrashedError, match="SIGKILL"):
        await sync_call
    with pytest.raises(PagletCrashedError):
        await queued
    with pytest.raises(PagletCrashedError):
        await future.result(timeout=10)
    assert time.monotonic() - started < 5  # not the 30 s the handler would sleep
    await victim.dispose()


# -- hangs ----------------------------------------------------------------------------


async def test_hanging_handler_times_out_and_dispose_still_works(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(limits=SupervisorLimits(stop_grace=1.0))
    async with AsyncHostClient(host.url) as client:
        victim, neighbour = await asyncio.gather(client.create(PROBE), client.create(PROBE))
        pid = (await victim.info()).pid
        assert pid is not None
        started = time.monotonic()
        with pytest.raises(PagletTimeoutError):
            await victim.send("hang", timeout=0.5)
        assert time.monotonic() - started < 5
        await _assert_neighbour_and_host_fine(client, neighbour)
        started = time.monotonic()
        await victim.dispose()
        assert time.monotonic() - started < 5
        assert _gone(pid)
        assert (await victim.info()).status == "disposed"
        await _assert_neighbour_and_host_fine(client, neighbour)


async def test_dispose_of_a_busy_paglet_fails_its_callers_after_one_grace(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    # SupervisorLimits.stop_grace bounds a disposal: ChildHandle.stop is documented
    # to "kill it after grace", so a paglet stuck in a handler is gone about one
    # grace after dispose is asked, and the call it was serving fails then.
    grace = 1.5
    host = await make_host(limits=SupervisorLimits(stop_grace=grace))
    async with AsyncHostClient(host.url) as client:
        victim = await client.create(PROBE)
        pid = (await victim.info()).pid
        assert pid is not None
        busy = asyncio.create_task(victim.send("sleep", {"seconds": 30}))

        async def is_pending() -> bool:
            return (await victim.info()).pending == 1

        await wait_for(is_pending, what="the call to be pending")
        started = time.monotonic()
        await victim.dispose()
        took = time.monotonic() - started
        with pytest.raises(PagletDisposedError):
            await busy
        assert _gone(pid)
        assert grace <= took < grace + 0.9, f"dispose took {took:.2f} s with a {grace} s grace"


async def test_an_idle_child_sends_no_heartbeats_and_is_judged_once_it_has_work(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(limits=SupervisorLimits(heartbeat_interval=0.1, hang_timeout=1.0))
    async with AsyncHostClient(host.url) as client:
        victim = await client.create(PROBE)
        await victim.send("sleep", {"seconds": 0.3})  # busy: it beats
        handle = host.supervisor.get(victim.agent_id).handle
        assert handle is not None
        await asyncio.sleep(0.3)
        quiet_since = handle.last_beat
        await asyncio.sleep(0.6)
        assert handle.last_beat == quiet_since, "an idle child does not wake up to beat"
        pid = (await victim.info()).pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # stopped while idle: nothing waits on it
        try:
            await asyncio.sleep(1.5)
            assert (await victim.info()).status == "active"
            started = time.monotonic()
            with pytest.raises(PagletCrashedError):
                await victim.send("echo", {"x": 1})
            assert time.monotonic() - started < 5, "found hung once a message waits on it"
            assert (await victim.info()).exit_reason == "hung"
        finally:
            _kill_quietly(pid, signal.SIGCONT)
            _kill_quietly(pid, signal.SIGKILL)


async def test_stopped_child_is_detected_as_hung(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(limits=SupervisorLimits(heartbeat_interval=0.1, hang_timeout=1.0))
    async with AsyncHostClient(host.url) as client:
        victim, neighbour = await asyncio.gather(client.create(PROBE), client.create(PROBE))
        pid = (await victim.info()).pid
        assert pid is not None
        pending = asyncio.create_task(victim.send("sleep", {"seconds": 30}))
        try:

            async def is_pending() -> bool:
                return (await victim.info()).pending == 1

            await wait_for(is_pending, what="the call to be pending")
            os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()

            async def crashed() -> bool:
                return (await victim.info()).status == "crashed"

            await wait_for(crashed, timeout=10, what="the stopped child to be found hung")
            assert time.monotonic() - started < 5
            with pytest.raises(PagletCrashedError):
                await pending
        finally:
            _kill_quietly(pid, signal.SIGCONT)
            _kill_quietly(pid, signal.SIGKILL)
            if not pending.done():
                pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        info = await victim.info()
        assert info.exit_reason == "hung"
        await wait_for(lambda: _gone(pid), what="the hung child to be killed")
        kinds = await _events_of(client, victim.agent_id)
        assert EventKind.PAGLET_HUNG in kinds
        assert EventKind.PAGLET_CRASHED not in kinds
        await _assert_neighbour_and_host_fine(client, neighbour)
        await victim.dispose()


async def test_memory_limit_kills_the_child(make_host: Callable[..., Awaitable[Host]]) -> None:
    host = await make_host(
        limits=SupervisorLimits(memory_limit=300 * 1024 * 1024, heartbeat_interval=0.1)
    )
    async with AsyncHostClient(host.url) as client:
        victim, neighbour = await asyncio.gather(client.create(PROBE), client.create(PROBE))
        # 40 chunks of 50 MB: far over the limit, but bounded if the limit failed
        with pytest.raises(PagletCrashedError, match="memory"):
            await victim.send("eat_memory", {"chunks": 40})
        info = await victim.info()
        assert info.status == "crashed"
        assert info.exit_reason == "memory_limit"
        assert EventKind.PAGLET_CRASHED in await _events_of(client, victim.agent_id)
        await _assert_neighbour_and_host_fine(client, neighbour)
        await victim.dispose()


# -- environment and host death ---------------------------------------------------------


async def test_children_get_a_scrubbed_environment(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGLETS_API_KEY", "not-for-children")
    monkeypatch.setenv("PAGLETS_TEST_VISIBLE", "yes")
    host = await make_host(api_key="not-for-children")
    async with AsyncHostClient(host.url, api_key="not-for-children") as client:
        probe = await client.create(PROBE)
        env = await probe.send("env")
    assert "PAGLETS_API_KEY" not in env
    assert "not-for-children" not in env.values()
    assert env.get("PAGLETS_TEST_VISIBLE") == "yes"  # the rest of the host's environment


_HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from paglets import AsyncHostClient, Host

    async def main():
        async with Host(
            name="doomed", state_dir=sys.argv[1], allow_modules=("pagletstest",)
        ) as host:
            async with AsyncHostClient(host.url) as client:
                probe = await client.create("pagletstest.testing:Probe")
                pid = await probe.send("pid")
            print(pid, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_children_exit_when_the_host_process_dies(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOST_SCRIPT,
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        child_pid = int(line)
        processes = psutil.Process(proc.pid).children(recursive=True)
        descendants = {p.pid for p in processes}
        assert child_pid in descendants
        # the zygote is the host's only child; paglets are the zygote's forks
        zygotes = psutil.Process(proc.pid).children()
        assert len(zygotes) == 1
        assert "paglets.runtime.zygote" in zygotes[0].cmdline()
        assert child_pid in {p.pid for p in zygotes[0].children()}
    finally:
        _kill_quietly(proc.pid, signal.SIGKILL)
        await proc.wait()
    try:
        await wait_for(
            lambda: all(_gone(p) for p in descendants),
            timeout=5,
            what="the host's children to exit after it was killed",
        )
    finally:
        for pid in descendants:
            _kill_quietly(pid, signal.SIGKILL)
