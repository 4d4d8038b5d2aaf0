"""Callers' proxy channels carried on a relayed host's session, with real processes.

A client of ``<hub>/v1/relay/hosts/b`` opens its channel at the hub; the hub
carries its calls on b's WebSocket session and b answers them with its channel
handler. A session that ends under waiting calls closes the caller's channel, and
the calls go again over HTTP, through the hub's queue, each delivered once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

from paglets import AsyncHostClient, HostClient, PagletError
from tests.relayproc import KEY, Relay
from tests.test_relay import COUNTER, diagnostics, wait_online

HEADERS = {"Authorization": f"Bearer {KEY}"}


def test_messages_to_a_relayed_host_ride_its_session_on_a_channel(relay: Relay) -> None:
    hub = relay.hub()
    relay.connect("b")
    with HostClient(hub, KEY) as client, client.at("b") as at_b:
        wait_online(client, {"b"})
        counter = at_b.create(COUNTER)
        assert [counter.send("increment")["count"] for _ in range(3)] == [1, 2, 3]
        assert diagnostics(hub)["b"]["channels"] == 1  # the messages went on a channel
        for _ in range(20):  # one-way messages are taken in their order
            counter.send_oneway("increment", {"by": 2})
        future = counter.send_future("get")
        assert future.result(30) == {"count": 43}
        with pytest.raises(PagletError, match="not_a_kind"):  # an error, as over HTTP
            counter.send("not_a_kind")
    seen = diagnostics(hub)["b"]
    assert seen["channel_calls"] == 0
    assert seen["queue_items"] == 0 or seen["oldest_age"] < 5  # only gossip, if anything


async def test_bad_channel_frames_are_answered_or_close_the_channel(relay: Relay) -> None:
    hub = relay.hub()
    relay.connect("b")
    url = f"{hub}/v1/relay/hosts/b/v1/channel"
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        deadline = time.monotonic() + 30
        while not (await asyncio.to_thread(diagnostics, hub)).get("b", {}).get("online"):
            assert time.monotonic() < deadline, "b's session is not up"
            await asyncio.sleep(0.1)
        ws = await http.ws_connect(url)
        async with ws:
            await ws.send_str(
                json.dumps(
                    [
                        {"id": 7, "op": "send", "agent_id": "../x", "body": {}},
                        {"id": 8, "op": "result", "agent_id": "a" * 32, "body": {"x": 1}},
                    ]
                )
            )
            answers: dict[int, Any] = {}
            while len(answers) < 2:  # the hub's answer, then b's, in one frame or two
                data = json.loads((await ws.receive(timeout=30)).data)
                answers.update((a["id"], a) for a in (data if isinstance(data, list) else [data]))
            assert answers[7]["status"] == 400  # refused at the hub, as b would
            assert answers[8]["status"] == 400  # checked by b's channel handler
            assert "message_id" in answers[8]["body"]["error"]["message"]
            await ws.send_str("[not json")
            closing = await ws.receive()
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Authorization": "Bearer wrong-key-000000"})
        assert refused.value.status == 401
    async with aiohttp.ClientSession() as stranger:  # no key at all
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await stranger.ws_connect(url)
        assert refused.value.status == 401


def test_a_host_on_long_polls_is_reached_over_http(relay: Relay) -> None:
    hub = relay.hub()
    relay.connect("b", "--relay-transport", "long-poll")
    with HostClient(hub, KEY) as client, client.at("b") as at_b:
        wait_online(client, {"b"})
        counter = at_b.create(COUNTER)
        assert [counter.send("increment")["count"] for _ in range(3)] == [1, 2, 3]
        assert diagnostics(hub)["b"]["channels"] == 0


async def test_calls_waiting_when_the_session_ends_go_again_over_http_once(
    relay: Relay,
) -> None:
    hub = relay.hub()
    relay.connect("b")
    async with AsyncHostClient(hub, KEY) as client:
        at_b = await client.at("b")
        async with at_b:
            deadline = time.monotonic() + 30
            while {h.name for h in await client.hosts() if h.online} < {"b"}:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            counter = await at_b.create(COUNTER)
            assert (await counter.send("increment"))["count"] == 1
            b = relay.processes["b"].pid
            os.kill(b, signal.SIGSTOP)  # b answers nothing; the hub's heartbeat ends its session
            try:
                sends = [asyncio.create_task(counter.send_oneway("increment")) for _ in range(5)]
                deadline = time.monotonic() + 10
                while (await asyncio.to_thread(diagnostics, hub))["b"]["channel_calls"] < 5:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                deadline = time.monotonic() + 60
                while (await asyncio.to_thread(diagnostics, hub))["b"]["online"]:
                    assert time.monotonic() < deadline, "the hub kept a session to a stopped host"
                    await asyncio.sleep(0.2)
                seen = await asyncio.to_thread(diagnostics, hub)
                assert seen["b"]["channel_calls"] == 0
                assert seen["b"]["channels"] == 0  # closed: its calls went again over HTTP
            finally:
                os.kill(b, signal.SIGCONT)
            await asyncio.wait_for(asyncio.gather(*sends), 90)  # each accepted, none lost
            deadline = time.monotonic() + 30
            while (await counter.send("get"))["count"] < 6:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a second delivery of any would show now
            assert (await counter.send("get"))["count"] == 6  # each once
