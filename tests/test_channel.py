"""The proxy channel: one WebSocket per client and host, the same answers as HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web

from paglets import (
    AsyncHostClient,
    AsyncPagletProxy,
    AuthenticationError,
    HandlerError,
    Host,
    MailboxFullError,
    Message,
    MessageNotHandledError,
    PagletCrashedError,
    PagletNotFoundError,
    PagletTimeoutError,
    ProtocolError,
)
from paglets.core.contract import Contract
from paglets.core.errors import ServiceLeasedError, ServiceNotFoundError
from paglets.launch.model import ServiceEntry
from paglets.runtime.records import SupervisorLimits
from paglets.transport import channel as channel_module
from paglets.wire.channel import CHANNEL_ROUTE, Answer
from pagletstest.services import ECHO, CountReply, CountRequest, EchoRequest
from tests.conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from paglets.wire.records import SendRequest

PROBE = "pagletstest.testing:Probe"
KEY = "k-" + "3" * 30


def _no_http_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test whose messages would go over HTTP instead of the channel."""
    real = AsyncHostClient.request

    async def request(self: AsyncHostClient, method: str, path: str, *a: Any, **k: Any) -> Any:
        assert "/messages" not in path, f"{method} {path} went over HTTP"
        return await real(self, method, path, *a, **k)

    monkeypatch.setattr(AsyncHostClient, "request", request)


async def test_messages_go_over_one_channel_with_the_answers_http_gives(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        _no_http_messages(monkeypatch)
        assert await probe.send("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        with pytest.raises(HandlerError, match="ValueError: boom"):
            await probe.send("raise")
        with pytest.raises(MessageNotHandledError):
            await probe.send("no such kind")
        with pytest.raises(PagletTimeoutError):
            await probe.send("sleep", {"seconds": 2}, timeout=0.2)
        future = await probe.send_future("echo", {"f": 1})
        assert await future.result(5) == {"f": 1}
        await probe.send_oneway("record", {"tag": "x"})
        with pytest.raises(PagletNotFoundError):
            await client.proxy("nobody").send("echo")
        assert client._channel is not None
        assert len(_open(host)) == 1, "one channel for all"


async def test_a_reply_strict_json_cannot_carry_is_the_same_error_as_over_http(
    host: Host,
) -> None:
    async with AsyncHostClient(host.url) as client:
        holder = await client.create("pagletstest.limits:Holder")
        with pytest.raises(HandlerError, match="JSON"):
            await holder.send("nan")
        assert client._channel is not None
        assert await holder.send("count") == 1, "the channel goes on"


async def test_many_concurrent_sends_share_the_channel_and_each_gets_its_own_reply(
    host: Host,
) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        replies = await asyncio.gather(*(probe.send("echo", {"n": n}) for n in range(300)))
        assert replies == [{"n": n} for n in range(300)]


def _taken_at_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the sends the channel delivers (or refuses) with nothing to await;
    ``"later:"`` and the kind of one that waits to be delivered."""
    taken: list[str] = []
    real = channel_module.deliver_now

    def deliver_now(ctx: Any, agent_id: str, req: SendRequest) -> Any:
        try:
            now = real(ctx, agent_id, req)
        except MailboxFullError:
            taken.append(f"refused:{req.kind}")
            raise
        taken.append(req.kind if now is not None else f"later:{req.kind}")
        return now

    monkeypatch.setattr(channel_module, "deliver_now", deliver_now)
    return taken


@dataclass(frozen=True)
class _AtOnce:
    """A probe reached over the channel only, on a host whose paglets take 3 messages
    at most, and the sends the channel took at once (`_taken_at_once`)."""

    host: Host
    probe: AsyncPagletProxy
    taken: list[str]

    def pending(self) -> int:
        return self.host.supervisor.get(self.probe.agent_id).pending

    async def fill_mailbox(self) -> list[asyncio.Task[Any]]:
        """Three one-second sends that fill the mailbox, returned once all are queued."""
        sleeping = [asyncio.create_task(self.probe.send("sleep", {"seconds": 1})) for _ in range(3)]
        await wait_for(lambda: self.pending() == 3, 5, "queued")
        return sleeping


@pytest.fixture
async def at_once(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[_AtOnce]:
    host = await make_host(limits=SupervisorLimits(max_mailbox=3, stop_grace=1.0))
    taken = _taken_at_once(monkeypatch)
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        _no_http_messages(monkeypatch)
        yield _AtOnce(host, probe, taken)


async def test_sync_sends_answered_without_a_task_keep_the_http_guarantees(
    at_once: _AtOnce,
) -> None:
    # A synchronous send its paglet takes at once is answered by a callback on its
    # reply (no task per message): retries by id, a full mailbox and a paglet that
    # dies while a send waits are answered as over HTTP.
    probe, taken = at_once.probe, at_once.taken
    once = Message("record", {"tag": "once"}, message_id=uuid.uuid4().hex)
    firsts = await asyncio.gather(*(probe.send(once) for _ in range(3)))
    assert firsts == [1, 1, 1], "a retry by id gets the first delivery's reply"
    assert await probe.send("record", {"tag": "next"}) == 2  # handled once
    sleeping = await at_once.fill_mailbox()
    with pytest.raises(MailboxFullError, match="messages waiting"):
        await probe.send("echo")
    assert await asyncio.gather(*sleeping) == ["slept"] * 3
    dying = asyncio.create_task(probe.send("sleep", {"seconds": 30}))
    await wait_for(lambda: at_once.pending() == 1, 5, "taken")
    pid = at_once.host.supervisor.get(probe.agent_id).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(PagletCrashedError):
        await dying
    assert taken.count("record") == 4
    assert "sleep" in taken
    assert "refused:echo" in taken


async def test_one_way_and_future_sends_taken_at_once_keep_the_http_guarantees(
    at_once: _AtOnce,
) -> None:
    # One-way and future sends to a running paglet are answered where the channel
    # reads them, with nothing to await: a retry by id is not handled twice, a
    # future's reply is kept under its new id, a full mailbox refuses, and an
    # inactive paglet is woken first, as over HTTP.
    probe, taken = at_once.probe, at_once.taken
    once = Message("record", {"tag": "once"}, message_id=uuid.uuid4().hex)
    for _ in range(3):
        await probe.send_oneway(once)
    assert await probe.send("record", {"tag": "next"}) == 2, "the retries were not handled"
    future = await probe.send_future("record", {"tag": "later"})
    assert await future.result(timeout=10) == 3
    sleeping = await at_once.fill_mailbox()
    with pytest.raises(MailboxFullError, match="messages waiting"):
        await probe.send_oneway("echo")
    with pytest.raises(MailboxFullError, match="messages waiting"):
        await probe.send_future("echo")
    assert await asyncio.gather(*sleeping) == ["slept"] * 3
    await probe.deactivate()
    await probe.send_oneway("record", {"tag": "woken"})  # wakes it: not at once
    assert await probe.send("record", {"tag": "after"}) == 5
    assert taken.count("record") == 6  # three one-ways by id, next, later, after
    assert taken.count("refused:echo") == 2
    assert "later:record" in taken  # the one that woke it


async def test_one_way_messages_sent_back_to_back_arrive_in_order(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        await asyncio.gather(*(probe.send_oneway("record", {"tag": n}) for n in range(500)))
        assert await probe.send("record", {"tag": "end"}) == 501
        log = (await probe.state())["log"]
        assert log == [str(n) for n in range(500)] + ["end"]


async def test_a_broken_channel_is_replaced_by_http_and_nothing_is_delivered_twice(
    host: Host,
) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        await probe.send("echo")
        # held in the paglet's hands until one more message is queued behind it
        gate = Message("gate", {"count": 1}, message_id=uuid.uuid4().hex)
        sending = asyncio.create_task(probe.send(gate, timeout=20))
        await wait_for(lambda: host.supervisor.get(probe.agent_id).pending == 0, 5, "taken")
        await asyncio.sleep(0.2)
        for ws in list(_open(host)):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"test")
        await wait_for(lambda: not _open(host), 5, "the channel closed")
        await asyncio.sleep(0.2)  # the same message again, over HTTP: not delivered twice
        async with AsyncHostClient(host.url, channel=False) as other:
            await other.proxy(probe.agent_id).send_oneway("record", {"tag": "go"})
        assert await sending is None
        assert (await probe.state())["log"] == ["gate", "go"]


def _open(host: Host) -> set[Any]:
    assert host._runner is not None
    return host._runner.app[channel_module._OPEN]


async def test_without_the_key_the_channel_is_refused_as_every_route_is(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(name="keyed", api_key=KEY)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{host.url}{CHANNEL_ROUTE}")
        assert refused.value.status == 401
    async with AsyncHostClient(host.url, KEY) as client:
        probe = await client.create(PROBE)
    async with AsyncHostClient(host.url, "wrong") as client:
        with pytest.raises(AuthenticationError):
            await client.proxy(probe.agent_id).send("echo")


async def test_bad_frames_are_answered_or_close_the_channel(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{host.url}{CHANNEL_ROUTE}") as ws:
            await ws.send_str('{"id": 7, "op": "launch", "agent_id": "a", "body": {}}')
            answer = (await ws.receive()).json()
            assert answer["id"] == 7
            assert answer["status"] == 400
            assert "unknown op 'launch'" in answer["body"]["error"]["message"]
            await ws.send_str('{"id": 6, "op": ["send"], "agent_id": "a", "body": {}}')
            answer = (await ws.receive()).json()
            assert (answer["id"], answer["status"]) == (6, 400), "an op that is not a string"
            body = {"kind": "echo", "args": {}, "mode": "sideways"}
            call = {"id": 8, "op": "send", "agent_id": probe.agent_id, "body": body}
            await ws.send_json(call)
            answer = (await ws.receive()).json()
            assert (answer["id"], answer["status"]) == (8, 400)
            body = {"kind": "echo", "args": {}, "mode": ["oneway"]}
            await ws.send_json({"id": 5, "op": "send", "agent_id": probe.agent_id, "body": body})
            answer = (await ws.receive()).json()
            assert (answer["id"], answer["status"]) == (5, 400), "a mode that is not a string"
            call = {"id": 9, "op": "send", "agent_id": "../x", "body": {"kind": "echo"}}
            await ws.send_json(call)
            assert (await ws.receive()).json()["status"] == 400
            # a frame of several calls: each answered, by its id
            echo = {"kind": "echo", "args": {"n": 1}}
            batch = [
                {"id": 10, "op": "send", "agent_id": probe.agent_id, "body": echo},
                {"id": 11, "op": "send", "agent_id": probe.agent_id, "body": {"kind": "?"}},
            ]
            await ws.send_json(batch)
            answers: dict[int, Any] = {}
            while len(answers) < 2:
                got = (await ws.receive()).json()
                for answer in got if isinstance(got, list) else [got]:
                    answers[answer["id"]] = answer
            assert answers[10]["status"] == 200
            assert answers[10]["body"] == {"reply": {"n": 1}}
            assert answers[11]["status"] == 422
            await ws.send_str("[1e999]")
            closing = await ws.receive()
            assert closing.type is WSMsgType.CLOSE
            assert closing.data == WSCloseCode.POLICY_VIOLATION
        async with session.ws_connect(f"{host.url}{CHANNEL_ROUTE}") as ws:
            await ws.send_str("[]")
            closing = await ws.receive()
            assert closing.data == WSCloseCode.POLICY_VIOLATION
        async with session.ws_connect(f"{host.url}{CHANNEL_ROUTE}") as ws:
            await ws.send_bytes(b"\x00")
            closing = await ws.receive()
            assert closing.data == WSCloseCode.UNSUPPORTED_DATA
    async with AsyncHostClient(host.url) as client:
        assert await client.proxy(probe.agent_id).send("echo", {"ok": 1}) == {"ok": 1}


async def test_a_host_stops_promptly_with_channels_open(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(name="stopping")
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        await probe.send("echo")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await host.stop()
        assert loop.time() - started < 10
        assert client._channel is not None
        await wait_for(lambda: client._channel is not None and client._channel.closed, 5, "closed")


@pytest.fixture
async def channelless() -> AsyncIterator[str]:
    """A server that answers messages over HTTP only, as a host without the channel."""

    async def message(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"reply": body["args"]})

    app = web.Application()
    app.router.add_post("/v1/paglets/{agent_id}/messages", message)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_host_that_offers_no_channel_gets_http(channelless: str) -> None:
    async with AsyncHostClient(channelless) as client:
        proxy = client.proxy("a" * 32)
        assert await proxy.send("echo", {"x": 1}) == {"x": 1}
        assert await proxy.send("echo", {"x": 2}) == {"x": 2}
        assert client._channel is None
        assert client._no_channel, "asked once, then HTTP only"


def test_an_answer_strict_json_cannot_carry_goes_as_a_422() -> None:
    text = channel_module._encoded(Answer(5, 200, {"reply": float("inf")}))
    answer = json.loads(text)
    assert (answer["id"], answer["status"]) == (5, 422)
    assert answer["body"]["error"]["type"] == "HandlerError"


async def test_service_calls_and_leases_go_over_the_channel_with_the_answers_http_gives(
    make_host: Callable[..., Awaitable[Host]], monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = ServiceEntry(name="echo", class_path="pagletstest.services:Echo", contract="echo.v1")
    host = await make_host(name="svc", services=[entry])
    real = AsyncHostClient.request

    async def request(self: AsyncHostClient, method: str, path: str, *a: Any, **k: Any) -> Any:
        assert "/services/" not in path or self._channel is None, f"{path} went over HTTP"
        return await real(self, method, path, *a, **k)

    async with AsyncHostClient(host.url) as client, AsyncHostClient(host.url) as other:
        monkeypatch.setattr(AsyncHostClient, "request", request)
        echo = client.service(ECHO)
        assert (await echo.echo(EchoRequest("hi"))).calls == 1
        assert client._channel is not None, "the first service call opened the channel"
        lease = await echo.take_lease(30)
        with pytest.raises(ServiceLeasedError):
            await other.service(ECHO).echo(EchoRequest("not mine"))
        assert (await echo.echo(EchoRequest("mine"))).calls == 2
        await echo.release_lease()
        assert lease.host == "svc"
        assert (await other.service(ECHO).count(CountRequest())).calls == 2
        with pytest.raises(ProtocolError, match="returned a CountReply, not its reply type"):
            await echo.echo(EchoRequest("wrong reply"))
        with pytest.raises(ServiceNotFoundError, match=r"serves echo\.v2"):
            await client.service(Contract("echo.v2", {"count": (CountRequest, CountReply)})).count(
                CountRequest()
            )
        assert len(_open(host)) == 2, "one channel per client"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{host.url}{CHANNEL_ROUTE}") as ws,
    ):
        calls = [
            {"id": 1, "op": "calls", "service": "../x", "body": {}},
            {"id": 2, "op": "calls", "agent_id": "echo.v1", "body": {}},
            {
                "id": 3,
                "op": "calls",
                "service": "echo.v1",
                "body": {"op": "shout", "request": {}},
            },
            {"id": 4, "op": "lease", "service": "echo.v1", "body": {"action": "steal"}},
            {
                "id": 5,
                "op": "calls",
                "service": "echo.v1",
                "body": {"op": "count", "request": {}},
            },
        ]
        await ws.send_json(calls)
        answers: dict[int, Any] = {}
        while len(answers) < len(calls):
            got = (await ws.receive()).json()
            for answer in got if isinstance(got, list) else [got]:
                answers[answer["id"]] = answer
        assert "is not a contract name" in answers[1]["body"]["error"]["message"]
        assert '"service"' in answers[2]["body"]["error"]["message"]
        assert "has no operation 'shout'" in answers[3]["body"]["error"]["message"]
        assert "'action' must be one of" in answers[4]["body"]["error"]["message"]
        assert [answers[i]["status"] for i in range(1, 5)] == [400] * 4
        assert answers[5] == {"id": 5, "status": 200, "body": {"reply": {"calls": 3}}}


async def test_one_way_and_future_messages_that_fail_are_logged_once_each(host: Host) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        await probe.send_oneway("raise", {"text": "one way"})
        future = await probe.send_future("raise", {"text": "a future"})
        with pytest.raises(HandlerError, match="a future"):
            await future.result(10)
        await probe.send("echo")  # behind both: they were handled

        async def failed() -> list[str]:
            events, _ = await client.events(agent_id=probe.agent_id, limit=1000)
            return [e.detail for e in events if e.kind.value == "message.failed"]

        await wait_for(lambda: _two(failed), 10, "two message.failed events")
        details = await failed()
        assert len(details) == 2
        assert any("one way" in d for d in details)
        assert any("a future" in d for d in details)


async def _two(failed: Callable[[], Awaitable[list[str]]]) -> bool:
    return len(await failed()) >= 2


async def test_create_opens_the_channel_beside_it_for_the_first_message(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncHostClient(host.url) as client:
        probe = await client.create(PROBE)
        # no message sent yet: the channel opened while the host started the paglet
        await wait_for(lambda: client._channel is not None, what="the channel opened")
        _no_http_messages(monkeypatch)
        assert await probe.send("echo", {"a": 1}) == {"a": 1}
        await client.create(PROBE)
        assert len(_open(host)) == 1, "still one channel for all"
    async with AsyncHostClient(host.url) as client:
        await client.create(PROBE)  # and closed at once, its channel maybe half open
    async with AsyncHostClient(host.url, channel=False) as client:
        await client.create(PROBE)
        assert client._channel_opening is None, "a client told to use HTTP opens none"
