"""The host's ``/v1`` control API: auth, input checking, errors, queries and lifecycle.

Errors are checked twice where it matters: as the typed error the client raises,
and as the HTTP status and JSON body a raw client sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import psutil
import pytest
from conftest import wait_for

import paglets
from paglets import (
    AsyncHostClient,
    AuthenticationError,
    ClassNotAllowedError,
    ClassNotFoundError,
    ConfigurationError,
    EventKind,
    Host,
    HostClient,
    HostNotRunningError,
    HostStatus,
    HostUnavailableError,
    InvalidStateError,
    PagletDisposedError,
    PagletError,
    PagletNotFoundError,
    PayloadTooLargeError,
    RequestError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

PROBE = "pagletstest.testing:Probe"
COUNTER = "examples.counter:Counter"


async def _raw(
    method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request with a plain aiohttp session: the status and the decoded JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def _alive_descendants() -> set[int]:
    alive = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


# -- auth -----------------------------------------------------------------------------


async def test_auth_off_needs_no_key(
    client: AsyncHostClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.host_info()).name == "alpha"
    status, _ = await _raw("GET", f"{client.url}/v1/paglets")
    assert status == 200


async def test_auth_on(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAGLETS_API_KEY", raising=False)
    host = await make_host(api_key="right-key")
    async with AsyncHostClient(host.url) as anonymous:
        with pytest.raises(AuthenticationError):
            await anonymous.list()
        with pytest.raises(AuthenticationError):
            await anonymous.create(COUNTER)
        assert await anonymous.health() == "running"  # /health stays open
    async with AsyncHostClient(host.url, api_key="wrong-key") as wrong:
        with pytest.raises(AuthenticationError, match="API key"):
            await wrong.host_info()
    async with AsyncHostClient(host.url, api_key="right-key") as right:
        counter = await right.create(COUNTER)
        assert await counter.send("increment") == {"count": 1}
        assert [p.agent_id for p in await right.list()] == [counter.agent_id]

    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "right-key"}):
        status, body = await _raw("GET", f"{host.url}/v1/paglets", headers=headers)
        assert status == 401
        assert body["error"]["type"] == "AuthenticationError"
    status, _ = await _raw(
        "GET", f"{host.url}/v1/paglets", headers={"Authorization": "Bearer right-key"}
    )
    assert status == 200
    status, body = await _raw("GET", f"{host.url}/health")
    assert (status, body) == (200, {"status": "running"})


async def test_api_key_is_read_from_the_environment(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = await make_host(api_key="env-key")
    monkeypatch.setenv("PAGLETS_API_KEY", "env-key")
    async with AsyncHostClient(host.url) as client:
        assert (await client.host_info()).name == host.name


async def test_public_bind_needs_a_key_or_insecure(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="--insecure"):
        Host(name="open", host="0.0.0.0", state_dir=tmp_path)
    host = await make_host(host="0.0.0.0", insecure=True)
    port = host.url.rsplit(":", 1)[1]
    assert int(port) > 0
    async with AsyncHostClient(f"http://127.0.0.1:{port}") as client:
        assert await client.health() == "running"
    keyed = await make_host(host="0.0.0.0", api_key="k")
    assert keyed.status is HostStatus.RUNNING


# -- bad requests -----------------------------------------------------------------------


async def test_malformed_json_is_a_request_error(host: Host) -> None:
    for path in ("/v1/paglets", "/v1/paglets/nobody/messages"):
        status, body = await _raw(
            "POST",
            f"{host.url}{path}",
            data=b'{"class_path": ',
            headers={"Content-Type": "application/json"},
        )
        assert status == 400
        assert body["error"]["type"] == "RequestError"
        assert "JSON" in body["error"]["message"]
    status, body = await _raw("POST", f"{host.url}/v1/paglets", data=b"")
    assert status == 400
    assert body["error"]["type"] == "RequestError"


async def test_unknown_fields_are_refused(host: Host, client: AsyncHostClient) -> None:
    body_bytes = json.dumps({"class_path": COUNTER, "colour": "red"}).encode()
    status, body = await _raw("POST", f"{host.url}/v1/paglets", data=body_bytes)
    assert status == 400
    assert body["error"]["type"] == "RequestError"
    assert "colour" in body["error"]["message"]
    counter = await client.create(COUNTER)
    status, body = await _raw(
        "POST",
        f"{host.url}/v1/paglets/{counter.agent_id}/messages",
        data=b'{"kind": "get", "urgent": true}',
    )
    assert status == 400
    assert "urgent" in body["error"]["message"]
    assert [p.agent_id for p in await client.list()] == [counter.agent_id]


async def test_module_outside_the_allow_list_is_forbidden(
    host: Host, client: AsyncHostClient
) -> None:
    with pytest.raises(ClassNotAllowedError, match="--allow-module os"):
        await client.create("os:system")
    status, body = await _raw("POST", f"{host.url}/v1/paglets", data=b'{"class_path": "os:system"}')
    assert status == 403
    assert body["error"]["type"] == "ClassNotAllowedError"
    # lookalike prefixes are not allowed either
    with pytest.raises(ClassNotAllowedError):
        await client.create("examples_evil:Thing")
    assert await client.list() == []


async def test_missing_module_under_an_allowed_prefix(client: AsyncHostClient) -> None:
    with pytest.raises(ClassNotFoundError, match=r"examples\.nope"):
        await client.create("examples.nope:X")
    with pytest.raises(ClassNotFoundError, match="NoSuchClass"):
        await client.create("examples.counter:NoSuchClass")
    assert await client.list() == []


async def test_class_that_is_not_a_paglet(client: AsyncHostClient) -> None:
    with pytest.raises(RequestError, match="not a subclass") as caught:
        await client.create("examples.counter:CounterState")
    assert type(caught.value) is RequestError
    with pytest.raises(RequestError, match="malformed class path"):
        await client.create("not a class path")


async def test_invalid_state_is_refused(client: AsyncHostClient) -> None:
    with pytest.raises(InvalidStateError, match="count"):
        await client.create(COUNTER, {"count": "many"})
    with pytest.raises(InvalidStateError, match="colour"):
        await client.create(COUNTER, {"colour": "red"})
    assert await client.list() == []
    counter = await client.create(COUNTER, {"count": 41})
    assert await counter.send("increment") == {"count": 42}


async def test_oversized_body_is_refused(make_host: Callable[..., Awaitable[Host]]) -> None:
    host = await make_host(max_body=4096)
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        with pytest.raises(PayloadTooLargeError):
            await probe.send("echo", {"blob": "x" * 10_000})
        assert await probe.send("echo", {"blob": "x" * 1000}) == {"blob": "x" * 1000}
    status, body = await _raw(
        "POST", f"{host.url}/v1/paglets/{probe.agent_id}/messages", data=b"x" * 5000
    )
    assert status == 413
    assert body["error"]["type"] == "PayloadTooLargeError"


async def test_unknown_paglet_is_not_found(host: Host, client: AsyncHostClient) -> None:
    ghost = client.proxy("no-such-paglet")
    with pytest.raises(PagletNotFoundError):
        await ghost.info()
    with pytest.raises(PagletNotFoundError):
        await ghost.send("echo")
    with pytest.raises(PagletNotFoundError):
        await ghost.state()
    with pytest.raises(PagletNotFoundError):
        await ghost.dispose()
    status, body = await _raw("GET", f"{host.url}/v1/paglets/no-such-paglet")
    assert status == 404
    assert body["error"]["type"] == "PagletNotFoundError"
    status, body = await _raw("GET", f"{host.url}/v1/no-such-route")
    assert status == 404


async def test_disposed_paglet_refuses_messages(client: AsyncHostClient) -> None:
    probe = await client.create(PROBE)
    pid = (await probe.info()).pid
    await probe.dispose()
    await probe.dispose()  # idempotent
    info = await probe.info()
    assert info.status == "disposed"
    assert info.pid is None
    assert pid not in _alive_descendants()
    with pytest.raises(PagletDisposedError):
        await probe.send("echo")
    with pytest.raises(PagletDisposedError):
        await probe.send_oneway("echo")
    with pytest.raises(PagletDisposedError):
        await probe.state()
    assert await client.list() == []


async def test_concurrent_disposes_both_succeed(client: AsyncHostClient) -> None:
    probe = await client.create(PROBE)
    await asyncio.gather(probe.dispose(), probe.dispose(), client.proxy(probe.agent_id).dispose())
    assert (await probe.info()).status == "disposed"
    kinds = [e.kind for e in (await client.events(agent_id=probe.agent_id))[0]]
    assert kinds.count(EventKind.PAGLET_DISPOSED) == 1


async def test_dispose_runs_on_disposing(client: AsyncHostClient, tmp_path: Path) -> None:
    marker = tmp_path / "disposed.txt"
    probe = await client.create(PROBE, {"disposed_marker": str(marker)})
    assert not marker.exists()
    await probe.dispose()
    assert marker.read_text() == probe.agent_id


async def test_failed_create_leaves_no_process(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(warm_children=0)
    baseline = _alive_descendants()  # the zygote
    assert len(baseline) == 1
    async with AsyncHostClient(host.url) as client:
        with pytest.raises(ClassNotFoundError):
            await client.create("examples.nope:X")
        with pytest.raises(InvalidStateError):
            await client.create(COUNTER, {"count": []})
        with pytest.raises(RequestError):
            await client.create("examples.counter:CounterState")
        await wait_for(
            lambda: _alive_descendants() == baseline, what="failed children to be reaped"
        )
        assert await client.list() == []
        kinds = [e.kind for e in (await client.events(0, 1000))[0]]
        assert kinds.count(EventKind.PAGLET_CREATE_FAILED) == 3


# -- queries ----------------------------------------------------------------------------


async def test_list_info_and_state(host: Host, client: AsyncHostClient) -> None:
    assert await client.list() == []
    before = time.time()
    counter = await client.create(COUNTER, {"count": 2})
    probe = await client.create(PROBE)
    listed = {p.agent_id: p for p in await client.list()}
    assert set(listed) == {counter.agent_id, probe.agent_id}
    info = await counter.info()
    assert info == listed[counter.agent_id]
    assert info.class_path == COUNTER
    assert info.host == "alpha"
    assert info.host_url == host.url
    assert info.status == "active"
    assert before <= info.created_at <= time.time()
    assert info.pid is not None
    assert info.pid in _alive_descendants()
    assert info.pending == 0
    assert info.exit_reason is None
    assert info["status"] == "active"
    assert await counter.state() == {"count": 2, "visits": ["alpha"]}
    assert await probe.state() == {"log": [], "disposed_marker": None}


async def test_create_with_a_chosen_id(client: AsyncHostClient) -> None:
    counter = await client.create(COUNTER, agent_id="my-counter")
    assert counter.agent_id == "my-counter"
    assert (await client.proxy("my-counter").info()).class_path == COUNTER
    with pytest.raises(RequestError, match="exists"):
        await client.create(COUNTER, agent_id="my-counter")
    await counter.dispose()
    with pytest.raises(RequestError, match="exists"):
        await client.create(COUNTER, agent_id="my-counter")


async def test_events_since_limit_and_agent(client: AsyncHostClient) -> None:
    events, cursor = await client.events()
    assert [e.kind for e in events] == [EventKind.HOST_STARTED]
    assert cursor == events[-1].cursor
    a = await client.create(COUNTER)
    b = await client.create(COUNTER)
    await a.dispose()
    events, cursor = await client.events(since=cursor)
    assert [(e.kind, e.agent_id) for e in events] == [
        (EventKind.PAGLET_CREATED, a.agent_id),
        (EventKind.PAGLET_CREATED, b.agent_id),
        (EventKind.PAGLET_DISPOSED, a.agent_id),
    ]
    assert all(e.host == "alpha" for e in events)
    assert events[0].data["class_path"] == COUNTER
    cursors = [e.cursor for e in events]
    assert cursors == sorted(cursors)
    assert cursor == cursors[-1]
    first_two, mid = await client.events(since=0, limit=2)
    assert len(first_two) == 2
    assert mid == first_two[-1].cursor
    rest, _ = await client.events(since=mid, limit=100)
    assert [e.cursor for e in first_two + rest] == [e.cursor for e in (await client.events())[0]]
    only_a, _ = await client.events(agent_id=a.agent_id)
    assert [e.kind for e in only_a] == [EventKind.PAGLET_CREATED, EventKind.PAGLET_DISPOSED]
    nothing, same = await client.events(since=cursor)
    assert nothing == []
    assert same == cursor


async def test_events_long_poll(client: AsyncHostClient) -> None:
    _, cursor = await client.events()
    started = time.monotonic()
    events, same = await client.events(since=cursor, wait=0.3)
    assert events == []
    assert same == cursor
    assert time.monotonic() - started >= 0.29
    poll = asyncio.create_task(client.events(since=cursor, wait=30))
    assert await client.health() == "running"  # give the long poll a head start
    started = time.monotonic()
    counter = await client.create(COUNTER)
    events, _ = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - started < 10
    assert [(e.kind, e.agent_id) for e in events] == [(EventKind.PAGLET_CREATED, counter.agent_id)]


async def test_bad_event_queries(host: Host) -> None:
    for query in ("since=-1", "limit=abc", "wait=1000", "kind=nope"):
        status, body = await _raw("GET", f"{host.url}/v1/events?{query}")
        assert status == 400, query
        assert body["error"]["type"] == "RequestError"
    status, body = await _raw("GET", f"{host.url}/v1/events?kind=host.started")
    assert status == 200
    assert [e["kind"] for e in body["events"]] == ["host.started"]


async def test_host_info(host: Host, client: AsyncHostClient) -> None:
    await client.create(COUNTER)
    info = await client.host_info()
    assert info.name == "alpha"
    assert info.url == host.url
    assert info.version == paglets.__version__
    assert info.protocol_version == 1
    assert info.mesh_version == "dev"
    assert info.pid == os.getpid()
    assert info.status == "running"
    assert host.started_at == info.started_at
    assert info.started_at <= time.time()
    assert info.paglets == 1
    assert info.peers == []
    assert info == host.info()


# -- the blocking client ------------------------------------------------------------------


async def test_sync_client_from_a_thread(host: Host) -> None:
    def work() -> dict[str, Any]:
        with HostClient(host.url) as client:
            counter = client.create(COUNTER, {"count": 1})
            out: dict[str, Any] = {
                "health": client.health(),
                "name": client.host_info().name,
                "reply": counter.send("increment", {"by": 2}),
                "future": counter.send_future("get").result(timeout=10),
                "state": counter.state(),
                "status": counter.info().status,
                "listed": [p.agent_id for p in client.list()],
                "same": client.proxy(counter.agent_id) == counter,
            }
            counter.send_oneway("increment")
            out["after_oneway"] = counter.send("get")
            with pytest.raises(PagletNotFoundError):
                client.proxy("nobody").info()
            counter.dispose()
            out["disposed"] = counter.info().status
            out["events"] = [e.kind for e in client.events(agent_id=counter.agent_id)[0]]
            out["id"] = counter.agent_id
            return out

    out = await asyncio.to_thread(work)
    assert out["health"] == "running"
    assert out["name"] == "alpha"
    assert out["reply"] == {"count": 3}
    assert out["future"] == {"count": 3}
    assert out["state"] == {"count": 3, "visits": ["alpha"]}
    assert out["status"] == "active"
    assert out["listed"] == [out["id"]]
    assert out["same"] is True
    assert out["after_oneway"] == {"count": 4}
    assert out["disposed"] == "disposed"
    assert out["events"] == [EventKind.PAGLET_CREATED, EventKind.PAGLET_DISPOSED]


async def test_sync_client_inside_the_event_loop_is_refused(host: Host) -> None:
    client = HostClient(host.url)
    try:
        with pytest.raises(PagletError, match="AsyncHostClient"):
            client.health()
        with pytest.raises(PagletError, match="running event loop"):
            client.create(COUNTER)
    finally:
        await asyncio.to_thread(client.close)
    async with AsyncHostClient(host.url) as aio:
        assert await aio.health() == "running"
    assert host.supervisor.list() == []  # the refused create did nothing


# -- host lifecycle ----------------------------------------------------------------------


async def test_start_and_stop_are_idempotent(tmp_path: Path) -> None:
    host = Host(name="life", state_dir=tmp_path)
    assert host.status is HostStatus.CREATED
    with pytest.raises(HostNotRunningError):
        _ = host.url
    try:
        await asyncio.gather(host.start(), host.start())
        url = host.url
        await host.start()
        assert host.url == url
        assert host.status is HostStatus.RUNNING
        async with AsyncHostClient(url) as client:
            assert await client.health() == "running"
            await client.create(COUNTER)
    finally:
        await host.stop()
    await host.stop()
    assert host.status is HostStatus.STOPPED
    with pytest.raises(HostNotRunningError):
        await host.start()
    async with AsyncHostClient(url) as client:
        with pytest.raises(HostUnavailableError):
            await client.health()


async def test_stopping_a_host_that_never_started(tmp_path: Path) -> None:
    host = Host(name="idle", state_dir=tmp_path)
    await host.stop()
    assert host.status is HostStatus.STOPPED


async def test_async_with_host(tmp_path: Path) -> None:
    async with Host(name="ctx", state_dir=tmp_path) as host:
        assert host.status is HostStatus.RUNNING
        async with AsyncHostClient(host.url) as client:
            counter = await client.create(COUNTER)
            pid = (await counter.info()).pid
            assert pid in _alive_descendants()
    assert host.status is HostStatus.STOPPED
    assert pid not in _alive_descendants()


async def test_host_config_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        Host(name="has space")
    with pytest.raises(ConfigurationError):
        Host(name="x", port=70000)
    with pytest.raises(ConfigurationError):
        Host(name="x", api_key="")
    with pytest.raises(TypeError):
        Host(paglets.HostConfig(name="x"), name="y")


# -- many paglets ----------------------------------------------------------------------


async def test_hundred_paglets_on_one_host(client: AsyncHostClient) -> None:
    proxies = []
    for _ in range(5):
        proxies += await asyncio.gather(*(client.create(COUNTER) for _ in range(20)))
        started = time.monotonic()
        assert await client.health() == "running"
        assert time.monotonic() - started < 1.0
    assert len({p.agent_id for p in proxies}) == 100
    assert len(await client.list()) == 100
    assert (await client.host_info()).paglets == 100
    replies = await asyncio.gather(*(p.send("increment") for p in proxies))
    assert replies == [{"count": 1}] * 100
    started = time.monotonic()
    assert await client.health() == "running"
    assert time.monotonic() - started < 1.0
    for i in range(0, 100, 25):
        await asyncio.gather(*(p.dispose() for p in proxies[i : i + 25]))
    assert await client.list() == []
