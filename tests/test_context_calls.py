"""Paglets call their host through ``self.context``: the mesh view and other paglets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from paglets import AsyncHostClient, PagletNotFoundError, RequestError
from tests.conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from paglets import Host

FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
PROBE = "pagletstest.testing:Probe"
CALLER = "pagletstest.testing:Caller"


async def _two_hosts(make_host: Callable[..., Awaitable[Host]]) -> tuple[Host, Host]:
    a = await make_host(name="a", tags=("gpu",), **FAST)
    b = await make_host(name="b", peers=(a.url,), mesh_version="other", **FAST)
    await wait_for(lambda: len(a.mesh.hosts(online=True)) == 2, 10, "a sees b")
    return a, b


async def test_mesh_view_from_async_handler_with_filters(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a, _b = await _two_hosts(make_host)
    async with AsyncHostClient(a.url) as client:
        probe = await client.create(PROBE)
        assert await probe.send("hosts", {}) == ["a", "b"]
        assert await probe.send("hosts", {"tags": ["gpu"]}) == ["a"]
        # b runs another mesh version: visible, never a movement target
        assert await probe.send("hosts", {"movable": True}) == ["a"]


async def test_mesh_view_from_sync_handler_and_run_thread(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        caller = await client.create(CALLER)
        assert await caller.send("hosts", {}) == [host.name]

        async def run_saw_it() -> bool:
            return await caller.send("seen_by_run", {}) == [host.name]

        await wait_for(run_saw_it, 10, "run() thread called its host")


async def test_paglet_sends_to_paglet_on_same_and_other_host(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a, b = await _two_hosts(make_host)
    async with AsyncHostClient(a.url) as ca, AsyncHostClient(b.url) as cb:
        here = await ca.create(PROBE)
        caller = await ca.create(CALLER)
        there = await cb.create(PROBE)
        echo = {"kind": "echo", "args": {"x": 1}}
        assert await here.send("forward", {"to": caller.agent_id, "kind": "hosts", "args": {}}) == [
            "a",
            "b",
        ]
        assert await caller.send("forward", {"to": here.agent_id, **echo}) == {"x": 1}
        reply = await here.send("forward", {"to": there.agent_id, "host": "b", **echo})
        assert reply == {"x": 1}
        reply = await here.send(
            "forward", {"to": there.agent_id, "host": b.url, "async": True, **echo}
        )
        assert reply == {"x": 1}


async def test_call_errors_reach_the_paglet_by_name(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        # a PagletError raised in a handler crosses back by name
        with pytest.raises(PagletNotFoundError, match="no paglet nobody"):
            await probe.send("forward", {"to": "nobody", "kind": "echo"})
        with pytest.raises(RequestError, match="must be a non-empty string"):
            await probe.send("forward", {"to": "", "kind": "echo"})
        # the paglet is fine afterwards
        assert await probe.send("echo", {"ok": True}) == {"ok": True}
